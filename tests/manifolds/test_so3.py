"""SO(3): closed forms, scipy references, hard points (angle 0 and pi), Haar measure, geoopt optimisers."""

import math

import geoopt
import numpy as np
import pytest
import torch
from scipy import integrate, stats
from scipy.spatial.transform import Rotation

from manifolds.base import Manifold
from manifolds.so3 import SO3

from ..conftest import TOL

F64 = torch.float64


@pytest.fixture
def m():
    return SO3()


def _rotvecs(n, angle, *, seed=0, dtype=F64):
    """n rotation vectors with random axes and the given angle (float or tensor)."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(n, 3, generator=g, dtype=F64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    return (axis * torch.as_tensor(angle, dtype=F64).reshape(-1, 1)).to(dtype)


def _scipy_matrix(w):
    return torch.from_numpy(Rotation.from_rotvec(w.double().numpy()).as_matrix())


# Angles that matter: generic, near 0, near pi (the naive log breaks there).
HARD_ANGLES = [0.0, 1e-12, 1e-8, 1e-4, 0.3, 1.5, 3.0, math.pi - 1e-3, math.pi - 1e-6, math.pi - 1e-9]


# --------------------------------------------------------------------------- basics
def test_attributes_and_repr(m):
    assert m.dim == 3 and m.point_shape == (3, 3) and m.ndim == 2
    assert repr(m) == "SO3()"
    assert m.injectivity_radius == math.pi
    assert isinstance(m, Manifold) and isinstance(m, geoopt.Manifold)


def test_hat_vee(dtype):
    g = torch.Generator().manual_seed(0)
    w, v = torch.randn(2, 7, 3, generator=g, dtype=dtype)
    W = SO3.hat(w)
    torch.testing.assert_close(W @ v.unsqueeze(-1), torch.linalg.cross(w, v).unsqueeze(-1), atol=TOL[dtype], rtol=TOL[dtype])
    torch.testing.assert_close(W.mT, -W)
    torch.testing.assert_close(SO3.vee(W), w)
    # vee takes the skew part of a general matrix
    A = torch.randn(7, 3, 3, generator=g, dtype=dtype)
    torch.testing.assert_close(SO3.vee(A), SO3.vee(0.5 * (A - A.mT)))


# ----------------------------------------------------------------- scipy references
def test_exp_rotvec_matches_scipy(m):
    angles = torch.tensor(HARD_ANGLES + [math.pi], dtype=F64).repeat_interleave(20)
    w = _rotvecs(len(angles), angles)
    torch.testing.assert_close(SO3.exp_rotvec(w), _scipy_matrix(w), atol=1e-12, rtol=0)


def test_log_rotvec_matches_scipy_including_near_pi(m):
    angles = torch.tensor(HARD_ANGLES, dtype=F64).repeat_interleave(20)
    w = _rotvecs(len(angles), angles, seed=1)
    R = _scipy_matrix(w)
    ref = torch.from_numpy(Rotation.from_matrix(R.numpy()).as_rotvec())
    out = SO3.log_rotvec(R)
    torch.testing.assert_close(out, ref, atol=1e-9, rtol=0)
    torch.testing.assert_close(out, w, atol=1e-9, rtol=0)
    # near the identity the answer is accurate relative to its size, not only absolutely
    tiny = angles < 1e-6
    rel = (out[tiny] - w[tiny]).norm(dim=-1) / w[tiny].norm(dim=-1).clamp_min(1e-300)
    assert float(rel[w[tiny].norm(dim=-1) > 0].max()) < 1e-7


def test_log_at_exactly_pi_is_one_valid_answer(m, dtype):
    n = _rotvecs(30, 1.0, seed=2, dtype=F64)
    eye = torch.eye(3, dtype=F64)
    R = (2 * n.unsqueeze(-1) * n.unsqueeze(-2) - eye).to(dtype)  # rotation by exactly pi about n
    R = torch.cat([R, torch.diag(torch.tensor([1.0, -1, -1], dtype=dtype)).unsqueeze(0)])
    w = SO3.log_rotvec(R)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w.norm(dim=-1), torch.full((31,), math.pi, dtype=dtype), atol=TOL[dtype], rtol=0)
    torch.testing.assert_close(SO3.exp_rotvec(w), R, atol=TOL[dtype], rtol=0)


def test_dist_matches_scipy_magnitude(m):
    g = torch.Generator().manual_seed(3)
    R1 = m.random_base(len(HARD_ANGLES) * 10, generator=g, dtype=F64)
    angles = torch.tensor(HARD_ANGLES + [math.pi], dtype=F64).repeat_interleave(10)[: len(R1)]
    R2 = R1 @ SO3.exp_rotvec(_rotvecs(len(R1), angles, seed=4))
    r1, r2 = Rotation.from_matrix(R1.numpy()), Rotation.from_matrix(R2.numpy())
    ref = torch.from_numpy((r1.inv() * r2).magnitude())
    d = m.dist(R1, R2)
    torch.testing.assert_close(d, ref, atol=1e-9, rtol=0)
    torch.testing.assert_close(d, angles, atol=1e-9, rtol=0)
    # angle 1e-8: accurate to round-off (acos((tr - 1) / 2) would give 0 or ~1e-8 noise)
    small = angles == 1e-8
    assert float((d[small] - 1e-8).abs().max()) < 1e-15
    # generic random pairs too
    Q = m.random_base(200, generator=g, dtype=F64)
    P = m.random_base(200, generator=g, dtype=F64)
    ref = (Rotation.from_matrix(P.numpy()).inv() * Rotation.from_matrix(Q.numpy())).magnitude()
    torch.testing.assert_close(m.dist(P, Q), torch.from_numpy(ref), atol=1e-9, rtol=0)


def test_expmap_logmap_against_scipy_at_a_base_point(m):
    g = torch.Generator().manual_seed(5)
    R = m.random_base(100, generator=g, dtype=F64)
    angles = torch.tensor(HARD_ANGLES, dtype=F64).repeat_interleave(10)
    w = _rotvecs(100, angles, seed=6)
    U = R @ SO3.hat(w)  # tangent vector at R with body angular velocity w
    Q = m.expmap(R, U)
    torch.testing.assert_close(Q, R @ _scipy_matrix(w), atol=1e-12, rtol=0)
    ref_w = Rotation.from_matrix((R.mT @ Q).numpy()).as_rotvec()
    L = m.logmap(R, Q)
    torch.testing.assert_close(SO3.vee(R.mT @ L), torch.from_numpy(ref_w), atol=1e-9, rtol=0)
    torch.testing.assert_close(L, U, atol=1e-9, rtol=0)


def test_quaternion_conversions_match_scipy(m):
    g = torch.Generator().manual_seed(7)
    R = m.random_base(50, generator=g, dtype=F64)
    q = SO3.matrix_to_quat(R)
    ref = torch.from_numpy(Rotation.from_matrix(R.numpy()).as_quat(scalar_first=True))
    ref = torch.where(ref[:, :1] < 0, -ref, ref)
    assert (q[:, 0] >= 0).all()
    torch.testing.assert_close(q, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(SO3.quat_to_matrix(3.0 * q), R, atol=1e-12, rtol=0)


# --------------------------------------------------------------------------- metric
def test_metric_is_half_frobenius_and_norm_is_angle(m, dtype):
    g = torch.Generator().manual_seed(8)
    R = m.random_base(20, generator=g, dtype=dtype)
    a, b = torch.randn(2, 20, 3, generator=g, dtype=dtype)
    U, V = R @ SO3.hat(a), R @ SO3.hat(b)
    tol = dict(atol=TOL[dtype], rtol=TOL[dtype])
    torch.testing.assert_close(m.inner(R, U, V), (a * b).sum(-1), **tol)
    torch.testing.assert_close(m.inner(R, U, V), 0.5 * (U * V).sum((-2, -1)), **tol)
    torch.testing.assert_close(m.norm(R, U), a.norm(dim=-1), **tol)
    assert m.inner(R, U, keepdim=True).shape == (20, 1, 1)
    assert m.dist(R, R, keepdim=True).shape == (20, 1, 1)
    torch.testing.assert_close(m.component_inner(R, U, V), m.inner(R, U, V, keepdim=True))
    # dist(R, exp_R(U)) == |U|_R inside the injectivity radius; bi-invariance
    u = a / a.norm(dim=-1, keepdim=True) * torch.rand(20, 1, generator=g, dtype=dtype) * 3.1
    Q = m.expmap(R, R @ SO3.hat(u))
    torch.testing.assert_close(m.dist(R, Q), u.norm(dim=-1), **tol)
    G, H = m.random_base(2, generator=g, dtype=dtype)
    torch.testing.assert_close(m.dist(G @ R @ H, G @ Q @ H), m.dist(R, Q), **tol)


def test_projx_nearest_rotation(m, dtype):
    g = torch.Generator().manual_seed(9)
    R = m.random_base(10, generator=g, dtype=dtype)
    A = torch.randn(10, 3, 3, generator=g, dtype=dtype)
    S = A @ A.mT + 0.5 * torch.eye(3, dtype=dtype)  # SPD: the polar factor of R S is R
    torch.testing.assert_close(m.projx(R @ S), R, atol=10 * TOL[dtype], rtol=0)
    # det < 0: flip the direction of the smallest singular value
    X = torch.diag(torch.tensor([1.0, 2.0, -3.0], dtype=dtype))
    torch.testing.assert_close(m.projx(X), torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=dtype)))
    m.check_point(m.projx(torch.randn(10, 3, 3, generator=g, dtype=dtype)))


def test_proju_and_riemannian_gradient(m):
    g = torch.Generator().manual_seed(10)
    R, Q = m.random_base(2, 16, generator=g, dtype=F64)
    G = torch.randn(16, 3, 3, generator=g, dtype=F64)
    P = m.proju(R, G)
    m.check_vector(R, P)
    torch.testing.assert_close(m.proju(R, P), P)
    torch.testing.assert_close(P, R @ (0.5 * (R.mT @ G - G.mT @ R)))
    # Riemannian gradient of f(R) = d(R, Q)^2 / 2 is -log_R(Q): checks the factor 2 from the metric
    Rg = R.clone().requires_grad_()
    (0.5 * m.dist(Rg, Q) ** 2).sum().backward()
    torch.testing.assert_close(m.egrad2rgrad(R, Rg.grad), -m.logmap(R, Q), atol=1e-9, rtol=1e-9)


def test_geodesic(m, dtype):
    g = torch.Generator().manual_seed(11)
    R0, R1 = m.random_base(2, 4, 3, generator=g, dtype=dtype)
    t = torch.rand(4, 3, generator=g, dtype=dtype)
    tol = dict(atol=10 * TOL[dtype], rtol=0)
    Rt = m.geodesic(R0, R1, t)
    torch.testing.assert_close(Rt, Manifold.geodesic(m, R0, R1, t), **tol)
    torch.testing.assert_close(m.dist(R0, Rt), t * m.dist(R0, R1), **tol)
    torch.testing.assert_close(m.geodesic(R0, R1, 1.0), R1, **tol)
    torch.testing.assert_close(m.geodesic(R0, R1, 0.0), R0, **tol)
    assert m.geodesic(R0, R1[0], 0.5).shape == (4, 3, 3, 3)  # broadcasting


def test_broadcasting(m):
    g = torch.Generator().manual_seed(12)
    x = m.random_base(5, 2, generator=g, dtype=F64)
    y = m.random_base(2, generator=g, dtype=F64)
    u = m.logmap(x, y)
    assert u.shape == (5, 2, 3, 3) and m.dist(x, y).shape == (5, 2)
    torch.testing.assert_close(m.expmap(x, u), y.expand_as(x))
    assert m.inner(x, u[0, 0]).shape == (5, 2)


# ------------------------------------------------------------------------ numerics
def _hard_pairs(dtype):
    """Pairs (R, Q) with R^T Q at angle 0 (exactly equal), ~0, ~pi and exactly pi."""
    g = torch.Generator().manual_seed(13)
    R = SO3().random_base(8, generator=g, dtype=F64)
    n = _rotvecs(8, 1.0, seed=14)
    pi_exact = 2 * n.unsqueeze(-1) * n.unsqueeze(-2) - torch.eye(3, dtype=F64)
    Ms = [
        torch.eye(3, dtype=F64).expand(8, 3, 3),
        SO3.exp_rotvec(n * 1e-7),
        SO3.exp_rotvec(n * (math.pi - 1e-7)),
        pi_exact,
        torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=F64)).expand(8, 3, 3),
    ]
    R = torch.cat([R] * len(Ms))
    Q = R @ torch.cat(Ms)
    return R.to(dtype), Q.to(dtype)


def test_finite_values_and_gradients_at_hard_points(m, dtype):
    R, Q = _hard_pairs(dtype)
    R.requires_grad_()
    Q.requires_grad_()
    out = {
        "dist": m.dist(R, Q),
        "logmap": m.logmap(R, Q),
        "geodesic": m.geodesic(R, Q, 0.3),
        "expmap0": m.expmap(R, torch.zeros_like(R)),
        "expmap_log": m.expmap(R, m.logmap(R, Q)),
        "log_rotvec": SO3.log_rotvec(R.mT @ Q),
        "norm0": m.norm(R, R - R.detach()),  # the zero vector, with a graph
    }
    for name, val in out.items():
        assert torch.isfinite(val).all(), name
        gR, gQ = torch.autograd.grad(val.sum(), (R, Q), allow_unused=True)
        for grad in (gR, gQ):
            assert grad is None or torch.isfinite(grad).all(), name
    torch.testing.assert_close(out["expmap_log"].detach(), Q.detach(), atol=10 * TOL[dtype], rtol=0)
    d = out["dist"].detach().reshape(5, 8)
    expect = torch.tensor([0.0, 1e-7, math.pi - 1e-7, math.pi, math.pi], dtype=dtype)[:, None].expand(5, 8)
    torch.testing.assert_close(d, expect, atol=10 * TOL[dtype], rtol=0)


def test_float32_log_near_pi_is_accurate(m):
    angles = torch.tensor([math.pi - 1e-3, math.pi - 1e-5, math.pi], dtype=F64).repeat_interleave(50)
    R32 = SO3.exp_rotvec(_rotvecs(len(angles), angles, seed=15)).float()
    ref = SO3.log_rotvec(R32.double())
    ref_d = torch.from_numpy(Rotation.from_matrix(R32.double().numpy()).as_rotvec())
    out = SO3.log_rotvec(R32).double()
    # compare up to the sign ambiguity at exactly pi
    err = torch.minimum((out - ref).norm(dim=-1), (out + ref).norm(dim=-1))
    assert float(err.max()) < 1e-5
    # R32 is orthogonal only to ~1e-7; scipy orthogonalises it first, we do not: same answer to that level
    ok_ref = torch.minimum((ref - ref_d).norm(dim=-1), (ref + ref_d).norm(dim=-1))
    assert float(ok_ref.max()) < 1e-6


def test_gradcheck_generic_and_near_identity(m):
    g = torch.Generator().manual_seed(16)
    R = m.random_base(2, generator=g, dtype=F64)
    Q = m.random_base(2, generator=g, dtype=F64)
    Qnear = R @ SO3.exp_rotvec(_rotvecs(2, 1e-3, seed=17))
    U = R @ SO3.hat(torch.randn(2, 3, generator=g, dtype=F64))
    Unear = R @ SO3.hat(1e-4 * torch.randn(2, 3, generator=g, dtype=F64))
    kw = dict(eps=1e-6, atol=1e-5, rtol=1e-4)
    for Y in (Q, Qnear):
        x, y = R.clone().requires_grad_(), Y.clone().requires_grad_()
        assert torch.autograd.gradcheck(m.logmap, (x, y), **kw)
        assert torch.autograd.gradcheck(m.dist, (x, y), **kw)
    for V in (U, Unear, torch.zeros_like(U)):
        assert torch.autograd.gradcheck(m.expmap, (R.clone().requires_grad_(), V.clone().requires_grad_()), **kw)
    w = torch.randn(4, 3, generator=g, dtype=F64)
    for scale in (1.0, 1e-4, 0.0):
        assert torch.autograd.gradcheck(SO3.exp_rotvec, (scale * w).requires_grad_(), **kw)


def test_vmap_and_jvp(m):
    g = torch.Generator().manual_seed(18)
    R0, R1 = m.random_base(2, 6, generator=g, dtype=F64)
    torch.testing.assert_close(torch.func.vmap(m.logmap)(R0, R1), m.logmap(R0, R1))
    torch.testing.assert_close(torch.func.vmap(m.dist)(R0, R1), m.dist(R0, R1))
    # velocity of the geodesic: d/dt gamma(t) = gamma(t) hat(omega), |.| = dist(R0, R1)
    t = torch.full((6,), 0.4, dtype=F64)
    xt, dxt = torch.func.jvp(lambda s: m.geodesic(R0, R1, s), (t,), (torch.ones_like(t),))
    torch.testing.assert_close(m.norm(xt, dxt), m.dist(R0, R1))
    torch.testing.assert_close(dxt, -m.logmap(xt, R0) / 0.4, atol=1e-9, rtol=1e-9)


def test_entry_split_is_exact_with_fallback_in_reduced_precision(m):
    # the kernels transpose (..., 3, 3) <-> nine (...) tensors by a CPU matmul with I: exact
    from manifolds import so3

    g = torch.Generator().manual_seed(24)
    for dtype, scales in ((torch.float32, (1e-40, 1e-30, 1.0, 1e30)), (F64, (1e-310, 1e-200, 1.0, 1e200))):
        X = torch.cat([s * torch.randn(50, 3, 3, generator=g, dtype=dtype) for s in scales]).reshape(4, 50, 3, 3)
        parts = so3._split(X, 2)
        assert len(parts) == 9 and all(p.is_contiguous() and p.shape == (4, 50) for p in parts)
        assert torch.equal(torch.stack(parts, -1), X.flatten(-2))
        assert torch.equal(so3._stack(parts, 2), X)
        v = X[..., 0]
        assert torch.equal(so3._stack(so3._split(v, 1), 1), v)
    R, Q = m.random_base(2, 100, generator=g)
    ref = (m.logmap(R, Q), m.expmap(R, 0.3 * m.logmap(R, Q)), m.dist(R, Q))
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        assert not so3._exact_cpu_mm(R)  # reduced-precision matmul: plain copies instead
        out = (m.logmap(R, Q), m.expmap(R, 0.3 * m.logmap(R, Q)), m.dist(R, Q))
    finally:
        torch.set_float32_matmul_precision(old)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not so3._exact_cpu_mm(R)  # autocast would run the identity matmul in bf16
        torch.testing.assert_close(m.logmap(R, Q), ref[0], atol=1e-6, rtol=0)


# ------------------------------------------------------------------------- checks
def test_check_point_and_vector_messages(m):
    g = torch.Generator().manual_seed(19)
    R = m.random_base(4, generator=g, dtype=F64)
    m.check_point(R)
    with pytest.raises(ValueError, match=r"max \|R\^T R - I\| = 0\.0[0-9]+.*projx"):
        m.check_point(R * 1.01)
    with pytest.raises(ValueError, match=r"det = -1"):
        m.check_point(-R)
    U = m.proju(R, torch.randn(4, 3, 3, generator=g, dtype=F64))
    m.check_vector(R, U)
    with pytest.raises(ValueError, match=r"max \|sym\(R\^T U\)\| = 0\.1.*proju"):
        m.check_vector(R, U + 0.1 * R)


# ------------------------------------------------------------------ Haar measure
def test_haar_angle_distribution_ks(m):
    R = m.random_base(20000, generator=torch.Generator().manual_seed(20), dtype=F64)
    m.check_point(R)
    theta = m.dist(torch.eye(3, dtype=F64), R).numpy()
    # density (1 - cos t) / pi on [0, pi], CDF (t - sin t) / pi
    p = stats.kstest(theta, lambda t: (t - np.sin(t)) / np.pi).pvalue
    assert p > 1e-3
    # a wrong law (uniform angle) is rejected by the same test: the check can fail
    assert stats.kstest(theta, lambda t: t / np.pi).pvalue < 1e-6
    # Haar is invariant: E[R] = 0 and left-translated samples have the same angle law about G
    assert float(R.mean(0).abs().max()) < 0.03
    G = SO3.exp_rotvec(torch.tensor([0.3, -1.0, 2.0], dtype=F64))
    theta_g = m.dist(G, G @ R).numpy()
    np.testing.assert_allclose(theta_g, theta, atol=1e-9)


def test_volume_is_8_pi_squared(m):
    # closed form: in exponential coordinates dvol = 2 (1 - cos|w|) / |w|^2 dw on the ball |w| < pi
    vol, _ = integrate.quad(lambda r: 4 * np.pi * r**2 * 2 * (1 - np.cos(r)) / r**2, 0, np.pi)
    assert abs(vol - 8 * np.pi**2) < 1e-9
    torch.testing.assert_close(m.base_log_prob(torch.eye(3, dtype=F64).expand(2, 2, 3, 3)), torch.full((2, 2), -math.log(vol), dtype=F64))
    # the volume element of *our* expmap and inner: sqrt(det G(w)), G_ij = <d_i exp, d_j exp>
    R = m.random_base(generator=torch.Generator().manual_seed(21), dtype=F64)
    w = _rotvecs(6, torch.tensor([1e-3, 0.5, 1.0, 2.0, 3.0, 3.1]), seed=22)

    def chart(v):
        return m.expmap(R, R @ SO3.hat(v))

    for wi in w:
        J = torch.autograd.functional.jacobian(chart, wi).movedim(-1, 0)  # (3, 3, 3)
        X = chart(wi)
        Gm = m.inner(X.expand_as(J).unsqueeze(0), J.unsqueeze(1), J.unsqueeze(0))
        r = float(wi.norm())
        torch.testing.assert_close(torch.linalg.det(Gm).sqrt(), torch.tensor(2 * (1 - math.cos(r)) / r**2, dtype=F64))


def test_random_base(m, dtype):
    a = m.random_base(3, 2, generator=torch.Generator().manual_seed(4), dtype=dtype)
    b = m.random_base(3, 2, generator=torch.Generator().manual_seed(4), dtype=dtype)
    assert a.shape == (3, 2, 3, 3) and a.dtype == dtype
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    m.check_point(a)
    assert m.base_log_prob(a).shape == (3, 2)


# ---------------------------------------------------------------- geoopt optimisers
def _karcher_problem():
    m = SO3()
    g = torch.Generator().manual_seed(23)
    C = m.random_base(generator=g, dtype=F64)
    Rs = C @ SO3.exp_rotvec(0.4 * torch.randn(8, 3, generator=g, dtype=F64))
    start = C @ SO3.exp_rotvec(torch.tensor([0.8, -0.5, 0.3], dtype=F64))
    # reference Karcher mean by the fixed-point iteration R <- exp_R(mean_i log_R(R_i))
    ref = start.clone()
    for _ in range(60):
        ref = m.expmap(ref, m.logmap(ref, Rs).mean(0))
    return m, Rs, start, ref


def test_riemannian_sgd_step_is_karcher_iteration():
    m, Rs, start, _ = _karcher_problem()
    p = geoopt.ManifoldParameter(start.clone(), manifold=m)
    opt = geoopt.optim.RiemannianSGD([p], lr=1.0)
    (0.5 * m.dist(p, Rs) ** 2).mean().backward()
    opt.step()
    # rgrad of mean d^2/2 is -mean log, so one SGD step with lr 1 is one fixed-point step
    torch.testing.assert_close(p.data, m.expmap(start, m.logmap(start, Rs).mean(0)), atol=1e-12, rtol=0)


def test_riemannian_adam_karcher_mean_converges():
    m, Rs, start, ref = _karcher_problem()
    assert float(m.logmap(ref, Rs).mean(0).norm()) < 1e-12
    p = geoopt.ManifoldParameter(start.clone(), manifold=m)
    opt = geoopt.optim.RiemannianAdam([p], lr=0.06)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.98)
    for _ in range(200):
        opt.zero_grad()
        (0.5 * m.dist(p, Rs) ** 2).mean().backward()
        opt.step()
        sched.step()
    m.check_point(p.data)
    assert float(m.dist(start, ref)) > 0.9
    assert float(m.dist(p.data, ref)) < 1e-3
    assert float(m.logmap(p.data, Rs).mean(0).norm()) < 1e-3  # first-order optimality
