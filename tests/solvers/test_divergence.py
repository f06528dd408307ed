"""The basis-free Riemannian divergence against intrinsic coordinate formulas and closed forms."""

import math

import pytest
import torch

from geoflow.solvers._impl_divergence import divergence
from geoflow.solvers._impl_steppers import _jvp_dlog, _sphere_dlog, dlog
from manifolds import Euclidean, FlatTorus, Product, Sphere

F64 = torch.float64


def _field_s2(x):
    """A smooth, non-tangent ambient field (projected by `divergence`)."""
    return torch.stack([torch.sin(2 * x[..., 1]) + x[..., 2], x[..., 0] * x[..., 1] - 0.5, torch.cos(x[..., 0]) * x[..., 2]], -1)


def _sph(theta, phi):
    return torch.stack([torch.sin(theta) * torch.cos(phi), torch.sin(theta) * torch.sin(phi), torch.cos(theta)], -1)


def test_sphere_divergence_matches_spherical_coordinates():
    # div v = 1/sin th d_th(sin th v^th) + d_ph v^ph with coordinate components
    # v^th = <v, d_th x>, v^ph = <v, d_ph x> / sin^2 th, derivatives by autograd in (th, ph).
    S2 = Sphere(2)
    g = torch.Generator().manual_seed(0)
    theta = 0.2 + 2.7 * torch.rand(64, generator=g, dtype=F64)
    phi = 2 * math.pi * torch.rand(64, generator=g, dtype=F64)

    def components(theta, phi):
        x = _sph(theta, phi)
        v = S2.proju(x, _field_s2(x))
        e_th = torch.stack([torch.cos(theta) * torch.cos(phi), torch.cos(theta) * torch.sin(phi), -torch.sin(theta)], -1)
        e_ph = torch.stack([-torch.sin(theta) * torch.sin(phi), torch.sin(theta) * torch.cos(phi), torch.zeros_like(theta)], -1)
        return (v * e_th).sum(-1), (v * e_ph).sum(-1) / torch.sin(theta) ** 2

    th, ph = theta.clone().requires_grad_(True), phi.clone().requires_grad_(True)
    v_th, v_ph = components(th, ph)
    d_th = torch.autograd.grad((torch.sin(th) * v_th).sum(), th, retain_graph=True)[0]
    d_ph = torch.autograd.grad(v_ph.sum(), ph)[0]
    expected = d_th / torch.sin(theta) + d_ph
    got = divergence(_field_s2, _sph(theta, phi), S2)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    # the height gradient P_x(a): div = -2 <a, x>
    a = torch.tensor([0.3, -0.2, 0.8], dtype=F64)
    x = _sph(theta, phi)
    torch.testing.assert_close(divergence(lambda y: a.expand_as(y), x, S2), -2 * x @ a, rtol=1e-12, atol=1e-12)


def test_divergence_does_not_depend_on_the_extension_off_the_manifold():
    S2 = Sphere(3)
    x = S2.random_base(32, generator=torch.Generator().manual_seed(1), dtype=F64)
    G = torch.randn(4, 4, generator=torch.Generator().manual_seed(2), dtype=F64)

    def f1(y):
        return torch.tanh(y @ G)

    def f2(y):  # equal on the sphere, different Jacobian off it
        r2 = (y * y).sum(-1, keepdim=True)
        return torch.tanh(y @ G) + (r2 - 1) * torch.sin(3 * y) + 5 * (r2 - 1) * y

    torch.testing.assert_close(divergence(f2, x, S2), divergence(f1, x, S2), rtol=1e-12, atol=1e-12)


def test_euclidean_and_matrix_shaped_points():
    g = torch.Generator().manual_seed(3)
    A = torch.randn(6, 6, generator=g, dtype=F64)
    x = torch.randn(5, 2, 3, generator=g, dtype=F64)
    field = lambda y: (y.reshape(-1, 6) @ A.T).reshape(y.shape)  # noqa: E731
    torch.testing.assert_close(divergence(field, x, None), torch.full((5,), float(A.trace()), dtype=F64))
    A3 = A[:3, :3]
    got = divergence(lambda y: y[:, :3] @ A3.T, x[:, 0], Euclidean(3))
    torch.testing.assert_close(got, torch.full((5,), float(A3.trace()), dtype=F64))
    # torus: plain trace of the Jacobian
    t = FlatTorus(2).random_base(7, generator=g, dtype=F64)
    v = lambda y: torch.stack([torch.sin(y[:, 0] + y[:, 1]), torch.cos(2 * y[:, 1])], -1)  # noqa: E731
    torch.testing.assert_close(divergence(v, t, FlatTorus(2)), torch.cos(t[:, 0] + t[:, 1]) - 2 * torch.sin(2 * t[:, 1]))


def _ball_cases():
    import manifolds.hyperbolic as hyp
    return hyp


@pytest.mark.parametrize("c", [1.0, 0.5])
def test_poincare_ball_coordinate_formula(c):
    # div_g v = lambda^-n sum_i d_i(lambda^n v^i): central differences, independent of autograd.
    hyp = _ball_cases()
    n = 3
    B = hyp.PoincareBall(n, c=c)
    g = torch.Generator().manual_seed(4)
    x = B.random_base(16, generator=g, dtype=F64) * 0.8
    W = torch.randn(n, n, generator=g, dtype=F64)
    field = lambda y: torch.sin(y @ W) + 0.3  # noqa: E731

    def flux(y):  # lambda^n v
        lam = 2 / (1 - c * (y * y).sum(-1, keepdim=True))
        return lam**n * field(y)

    h = 1e-5
    lam = 2 / (1 - c * (x * x).sum(-1))
    fd = sum((flux(x + h * e)[:, i] - flux(x - h * e)[:, i]) / (2 * h) for i, e in enumerate(torch.eye(n, dtype=F64)))
    expected = fd / lam**n
    for mode in ["forward", "reverse"]:
        got = divergence(field, x, B, mode=mode)
        torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-7)


def test_poincare_ball_killing_field_is_divergence_free():
    # v = ((1 + |x|^2) a - 2 <a, x> x) / 2 generates hyperbolic translations (c = 1): div_g v = 0,
    # although its Euclidean divergence is -n <a, x>: the log-volume term is needed.
    hyp = _ball_cases()
    B = hyp.PoincareBall(2)
    x = B.random_base(32, generator=torch.Generator().manual_seed(5), dtype=F64)
    a = torch.tensor([0.7, -0.4], dtype=F64)
    v = lambda y: 0.5 * ((1 + (y * y).sum(-1, keepdim=True)) * a - 2 * (y @ a)[:, None] * y)  # noqa: E731
    torch.testing.assert_close(divergence(v, x, B), torch.zeros(32, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(divergence(v, x, None), -2 * x @ a, rtol=1e-12, atol=1e-12)


# manifolds.hyperbolic.Lorentz.proju accumulates with in-place addcmul_, which has no vmap batching
# rule: torch warns about the slow fallback (the values are right).
@pytest.mark.filterwarnings("ignore:There is a performance drop because we have not yet implemented the batching rule")
def test_lorentz_killing_fields_are_divergence_free():
    import manifolds.hyperbolic as hyp
    L = hyp.Lorentz(3, k=2.0)
    x = L.random_base(32, generator=torch.Generator().manual_seed(6), dtype=F64)
    boost = lambda y: torch.stack([y[:, 1], y[:, 0], torch.zeros_like(y[:, 0]), torch.zeros_like(y[:, 0])], -1)  # noqa: E731
    rot = lambda y: torch.stack([torch.zeros_like(y[:, 0]), -y[:, 2], y[:, 1], torch.zeros_like(y[:, 0])], -1)  # noqa: E731
    for f in (boost, rot):
        torch.testing.assert_close(divergence(f, x, L), torch.zeros(32, dtype=F64), rtol=0, atol=1e-10)
    # and a non-Killing field is not divergence free (the test can fail)
    assert float(divergence(lambda y: y * torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=F64), x, L).abs().max()) > 1e-2


def test_so3_laplacian_of_matrix_coefficients():
    # With <U, V> = tr(U^T V) / 2 the fields X_i = R hat(e_i) are orthonormal and left invariant;
    # grad f = sum_i X_i(f) X_i and div grad f = sum_i X_i^2 f = tr(A R sum_i hat(e_i)^2) = -2 tr(A R).
    import manifolds.so3 as so3
    M = so3.SO3()
    R = M.random_base(16, generator=torch.Generator().manual_seed(7), dtype=F64)
    A = torch.randn(3, 3, generator=torch.Generator().manual_seed(8), dtype=F64)
    E = torch.stack([so3.SO3.hat(e) for e in torch.eye(3, dtype=F64)])  # (3, 3, 3)

    def grad_f(Y):
        X = Y[:, None] @ E  # (b, 3, 3, 3)
        coef = torch.einsum("ij,bkji->bk", A, X)  # tr(A X_k)
        return (coef[..., None, None] * X).sum(1)

    f = torch.einsum("ij,bji->b", A, R)
    torch.testing.assert_close(divergence(grad_f, R, M), -2 * f, rtol=1e-10, atol=1e-10)
    w = torch.tensor([0.3, -1.0, 0.5], dtype=F64)
    killing = lambda Y: so3.SO3.hat(w) @ Y + Y @ so3.SO3.hat(w.flip(0))  # noqa: E731
    torch.testing.assert_close(divergence(killing, R, M), torch.zeros(16, dtype=F64), rtol=0, atol=1e-12)


def test_product_manifold_divergence_is_the_sum():
    P = Product(Sphere(2), FlatTorus(1))
    x = P.random_base(16, generator=torch.Generator().manual_seed(9), dtype=F64)
    a = torch.tensor([0.3, -0.2, 0.8], dtype=F64)
    v = lambda y: torch.cat([a.expand(y.shape[0], 3), torch.sin(y[:, 3:])], -1)  # noqa: E731
    torch.testing.assert_close(divergence(v, x, P), -2 * x[:, :3] @ a + torch.cos(x[:, 3]), rtol=1e-12, atol=1e-12)


class _NoForwardAD(torch.autograd.Function):
    """tanh with a backward but no jvp: forward-mode AD raises, the reverse fallback must kick in."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


def test_forward_and_reverse_modes_agree_and_reverse_needs_no_forward_ad():
    S2 = Sphere(2)
    x = S2.random_base(16, generator=torch.Generator().manual_seed(10), dtype=F64)
    W = torch.randn(3, 3, generator=torch.Generator().manual_seed(11), dtype=F64)
    ref = divergence(lambda y: torch.tanh(y @ W), x, S2, mode="forward")
    got = divergence(lambda y: _NoForwardAD.apply(y @ W), x, S2)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    with pytest.raises((NotImplementedError, RuntimeError)):
        divergence(lambda y: _NoForwardAD.apply(y @ W), x, S2, mode="forward")


@pytest.mark.parametrize("kind", ["hutchinson", "hutchinson-rademacher"])
@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_hutchinson_divergence_is_unbiased(kind, mode):
    S2 = Sphere(2)
    x = S2.random_base(4, generator=torch.Generator().manual_seed(12), dtype=F64)
    W = torch.randn(3, 3, generator=torch.Generator().manual_seed(13), dtype=F64)
    field = lambda y: torch.sin(y @ W)  # noqa: E731
    exact = divergence(field, x, S2)
    K = 4000
    reps = x.repeat_interleave(K, 0)
    est = divergence(field, reps, S2, kind=kind, generator=torch.Generator().manual_seed(14), mode=mode).reshape(4, K)
    se = est.std(1) / math.sqrt(K)
    assert bool((se > 1e-3).all())  # really random
    assert bool(((est.mean(1) - exact).abs() < 4 * se).all()), (est.mean(1), exact, se)


def test_closed_form_dlog_matches_jvp_of_logmap():
    g = torch.Generator().manual_seed(15)
    S = Sphere(3)
    x = S.random_base(64, generator=g, dtype=F64)
    for r in [1e-7, 5e-3, 2e-2, 1.0, 3.0]:
        u = S.proju(x, torch.randn(64, 4, generator=g, dtype=F64))
        y = S.expmap(x, u / u.norm(dim=-1, keepdim=True) * r)
        w = S.proju(y, torch.randn(64, 4, generator=g, dtype=F64))
        torch.testing.assert_close(_sphere_dlog(x, y, w), _jvp_dlog(S, x, y, w), rtol=1e-9, atol=1e-12)
    import manifolds.so3 as so3
    M = so3.SO3()
    R = M.random_base(64, generator=g, dtype=F64)
    for r in [1e-7, 5e-3, 2e-2, 1.0, 3.0]:
        U = M.proju(R, torch.randn(64, 3, 3, generator=g, dtype=F64))
        Q = M.expmap(R, U / M.norm(R, U)[:, None, None] * r)
        W = M.proju(Q, torch.randn(64, 3, 3, generator=g, dtype=F64))
        torch.testing.assert_close(dlog(M, R, Q, W), _jvp_dlog(M, R, Q, W), rtol=1e-9, atol=1e-12)
    import manifolds.hyperbolic as hyp
    for M in [hyp.PoincareBall(3, c=0.7), hyp.Lorentz(3, k=1.5)]:  # generic paths: double backward vs forward mode
        xm = M.random_base(16, generator=g, dtype=F64)
        ym = M.expmap(xm, 0.2 * M.proju(xm, torch.randn(xm.shape, generator=g, dtype=F64)))
        wm = M.proju(ym, torch.randn(xm.shape, generator=g, dtype=F64))
        torch.testing.assert_close(dlog(M, xm, ym, wm, generic="vjp"), _jvp_dlog(M, xm, ym, wm), rtol=1e-9, atol=1e-12)
    P = Product(Sphere(2), FlatTorus(2))
    xp = P.random_base(8, generator=g, dtype=F64)
    yp = P.expmap(xp, 0.3 * P.proju(xp, torch.randn(8, 5, generator=g, dtype=F64)))
    wp = P.proju(yp, torch.randn(8, 5, generator=g, dtype=F64))
    torch.testing.assert_close(dlog(P, xp, yp, wp), _jvp_dlog(P, xp, yp, wp), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("create_graph", [False, True])
def test_loop_and_batched_vector_jacobian_products_agree(monkeypatch, create_graph):
    """Both strategies of the exact reverse trace (CPU loops; other devices batch above D = 16)
    give the trace of a known Jacobian: v(y) = tanh(y A) on R^20 has div v = sum_i A_ii (1 - v_i^2)."""
    import geoflow.solvers._impl_divergence as impl
    from geoflow.solvers._impl_common import Geometry

    D = 20
    R = Euclidean(D)
    g = torch.Generator().manual_seed(3)
    A = torch.randn(D, D, generator=g, dtype=F64)
    x = torch.randn(8, D, generator=g, dtype=F64, requires_grad=create_graph)
    closed = ((1 - torch.tanh(x @ A) ** 2) * torch.diagonal(A)).sum(-1)
    got = {}
    for loop in (True, False):
        monkeypatch.setattr(impl, "_loop_vjps", lambda D, device, loop=loop: loop)
        div = impl.Divergence(Geometry(R, x, "x"), "exact", create_graph=create_graph)
        got[loop] = div(lambda y: torch.tanh(y @ A), x)[1]
        torch.testing.assert_close(got[loop], closed, rtol=1e-12, atol=1e-12)
    if create_graph:  # the trace is differentiable either way, with the same gradient
        g_loop, g_batched = (torch.autograd.grad(got[k].sum(), x, retain_graph=True)[0] for k in (True, False))
        torch.testing.assert_close(g_loop, g_batched, rtol=1e-12, atol=1e-12)


def test_cpu_always_loops_and_other_devices_batch_above_16():
    from geoflow.solvers._impl_divergence import _loop_vjps

    assert _loop_vjps(128, torch.device("cpu"))
    assert _loop_vjps(16, torch.device("meta")) and not _loop_vjps(17, torch.device("meta"))
