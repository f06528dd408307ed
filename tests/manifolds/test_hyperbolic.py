"""PoincareBall and Lorentz against closed forms, geoopt (independent reference), each other
(the ball-hyperboloid isometry), exact base densities, and at their hard points."""

import math

import geoopt
import pytest
import torch

from manifolds.base import Manifold, geodesic_and_velocity_jvp
from manifolds.hyperbolic import Lorentz, PoincareBall

from ..conftest import TOL

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _unit(v):
    return v / v.norm(dim=-1, keepdim=True)


def _pair(m, n_pts=200, seed=0, dtype=F64):
    g = _gen(seed)
    return m.random_base(n_pts, generator=g, dtype=dtype), m.random_base(n_pts, generator=g, dtype=dtype)


def _unit_tangent(m, x, seed=1):
    u = m.proju(x, torch.randn(x.shape, generator=_gen(seed), dtype=x.dtype))
    return u / m.norm(x, u, keepdim=True)


def _geoopt_ref(m):
    """geoopt's manifold with the curvature as an exact float64 tensor."""
    if isinstance(m, PoincareBall):
        return geoopt.Stereographic(k=torch.tensor(-m.c, dtype=F64))
    return geoopt.Lorentz(k=torch.tensor(float(m._k), dtype=F64))


def _ball_to_lorentz(b, c):
    """The isometry B^n_c -> H^n_k, k = 1/c: (sqrt(k)(1 + c|b|^2), 2 b) / (1 - c|b|^2)."""
    b2 = (b * b).sum(-1, keepdim=True)
    return torch.cat([(1 + c * b2) / math.sqrt(c), 2 * b], dim=-1) / (1 - c * b2)


def _at_distance(m, r, omega):
    """Closed form exp at the origin: the point at distance r in unit direction omega (float64)."""
    r = torch.as_tensor(r, dtype=F64).unsqueeze(-1)
    if isinstance(m, PoincareBall):
        s = math.sqrt(m.c)
        return torch.tanh(s * r / 2) / s * omega
    sk = math.sqrt(float(m._k))
    return torch.cat([sk * torch.cosh(r / sk).expand(*omega.shape[:-1], 1), sk * torch.sinh(r / sk) * omega], -1)


FACTORIES = {
    "ball2": lambda: PoincareBall(2),
    "ball3_c0.3": lambda: PoincareBall(3, c=0.3),
    "lorentz2": lambda: Lorentz(2),
    "lorentz3_k2.5": lambda: Lorentz(3, k=2.5),
}
MANIFOLDS = [pytest.param(f, id=name) for name, f in FACTORIES.items()]


# ------------------------------------------------------------ construction
@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: PoincareBall(0), ValueError, "`n`"),
        (lambda: PoincareBall(2.0), TypeError, "`n`"),
        (lambda: PoincareBall("2"), TypeError, "`n`"),
        (lambda: PoincareBall(2, c=0.0), ValueError, "`c`"),
        (lambda: PoincareBall(2, c=-1.0), ValueError, "`c`"),
        (lambda: PoincareBall(2, c=float("inf")), ValueError, "`c`"),
        (lambda: PoincareBall(2, c="1"), TypeError, "`c`"),
        (lambda: PoincareBall(2, c=None), TypeError, "`c`"),
        (lambda: Lorentz(-1), ValueError, "`n`"),
        (lambda: Lorentz(True), TypeError, "`n`"),
        (lambda: Lorentz(2, k=0), ValueError, "`k`"),
        (lambda: Lorentz(2, k=-2.0), ValueError, "`k`"),
        (lambda: Lorentz(2, k=float("nan")), ValueError, "`k`"),
        (lambda: Lorentz(2, k=[1.0]), TypeError, "`k`"),
    ],
)
def test_constructor_validation(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_curvature_is_exact_and_module_moves_to_float64():
    b, lor = PoincareBall(2, c=0.1), Lorentz(2, k=0.1)
    assert isinstance(b.c, float) and b.c == 0.1 and b.curvature == -0.1
    assert float(lor.k) == pytest.approx(0.1, rel=1e-7) and lor.curvature == -1 / 0.1
    assert repr(b) == "PoincareBall(n=2, c=0.1)" and repr(lor) == "Lorentz(n=2, k=0.1)"
    assert len(b.state_dict()) == 0 and len(list(lor.parameters())) == 0
    b64, l64 = b.to(F64), lor.to(F64)
    assert b64.k.dtype == F64 and float(b64.k) == -0.1 and float(l64.k) == 0.1
    # float64 results use c = 0.1 exactly (geoopt's float32 curvature is off by ~1e-9 relative)
    x = torch.tensor([0.5, -1.2], dtype=F64)
    ref = 2 / math.sqrt(0.1) * math.atanh(math.sqrt(0.1) * math.hypot(0.5, -1.2))
    assert abs(float(b64.dist(torch.zeros(2, dtype=F64), x)) - ref) < 1e-14 * ref
    o = l64.base_origin(dtype=F64)
    assert float(o[0]) == math.sqrt(0.1)
    assert torch.equal(l64.origin(dtype=F64), o) and torch.equal(l64.origin(4, 3, dtype=F64), o.expand(4, 3))
    l64.check_point(o, atol=1e-15, rtol=1e-15)
    y = l64.projx(torch.tensor([0.0, 3.0, -2.0], dtype=F64))
    ref = math.sqrt(0.1) * math.acosh(float(y[0]) / math.sqrt(0.1))
    assert abs(float(l64.dist(o, y)) - ref) < 1e-13 * ref


# ------------------------------------------------------------ closed forms
@pytest.mark.parametrize("c", [1.0, 0.3])
def test_ball_distance_closed_forms(c):
    m = PoincareBall(4, c=c)
    x, y = _pair(m)
    x2, y2, d2 = (x * x).sum(-1), (y * y).sum(-1), ((x - y) ** 2).sum(-1)
    ref = torch.acosh(1 + 2 * c * d2 / ((1 - c * x2) * (1 - c * y2))) / math.sqrt(c)
    torch.testing.assert_close(m.dist(x, y), ref, rtol=1e-10, atol=1e-10)
    # artanh of the Moebius difference, and the conformal metric
    w = geoopt.manifolds.stereographic.math.mobius_add(-x, y, k=torch.tensor(-c, dtype=F64))
    ref2 = 2 / math.sqrt(c) * torch.atanh(math.sqrt(c) * w.norm(dim=-1))
    torch.testing.assert_close(m.dist(x, y), ref2, rtol=1e-10, atol=1e-10)
    u, v = torch.randn(2, *x.shape, generator=_gen(3), dtype=F64)
    lam = 2 / (1 - c * x2)
    torch.testing.assert_close(m.inner(x, u, v), lam**2 * (u * v).sum(-1), rtol=1e-12, atol=0)
    torch.testing.assert_close(m.norm(x, u), lam * u.norm(dim=-1), rtol=1e-12, atol=0)
    torch.testing.assert_close(m.log_volume_density(x), 4 * torch.log(lam), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [1.0, 2.5])
def test_lorentz_distance_closed_form(k):
    m = Lorentz(3, k=k)
    x, y = _pair(m)
    mink = -x[:, 0] * y[:, 0] + (x[:, 1:] * y[:, 1:]).sum(-1)
    ref = math.sqrt(k) * torch.acosh(-mink / k)
    torch.testing.assert_close(m.dist(x, y), ref, rtol=1e-9, atol=1e-9)
    u, v = m.proju(x, torch.randn(2, *x.shape, generator=_gen(2), dtype=F64))
    torch.testing.assert_close(m.inner(x, u, v), -u[:, 0] * v[:, 0] + (u[:, 1:] * v[:, 1:]).sum(-1), rtol=1e-12, atol=1e-12)
    # exp as cosh/sinh along a unit-speed geodesic
    uu = _unit_tangent(m, x) * 1.7
    th = 1.7 / math.sqrt(k)
    ref = math.cosh(th) * x + math.sinh(th) / th * uu
    torch.testing.assert_close(m.expmap(x, uu), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("make", MANIFOLDS)
def test_against_geoopt_float64(make):
    m = make()
    ref = _geoopt_ref(m)
    x, y = _pair(m)
    u = m.logmap(x, y)  # moderate tangent vectors
    w = torch.randn(x.shape, generator=_gen(5), dtype=F64)
    tol = dict(rtol=TOL[F64], atol=TOL[F64])
    torch.testing.assert_close(m.dist(x, y), ref.dist(x, y), **tol)
    torch.testing.assert_close(u, ref.logmap(x, y), **tol)
    torch.testing.assert_close(m.expmap(x, 0.7 * u), ref.expmap(x, 0.7 * u), **tol)
    torch.testing.assert_close(m.inner(x, u, m.proju(x, w)), ref.inner(x, u, ref.proju(x, w), keepdim=True).squeeze(-1), **tol)
    torch.testing.assert_close(m.proju(x, w), ref.proju(x, w), **tol)
    torch.testing.assert_close(m.transp(x, y, u), ref.transp(x, y, u), **tol)
    torch.testing.assert_close(m.egrad2rgrad(x, w), ref.egrad2rgrad(x, w.clone()), **tol)  # geoopt's Lorentz mutates
    torch.testing.assert_close(m.projx(x), ref.projx(x), **tol)
    if isinstance(m, PoincareBall):
        t = torch.rand(x.shape[0], 1, generator=_gen(6), dtype=F64)
        torch.testing.assert_close(m.geodesic(x, y, t.squeeze(-1)), ref.geodesic(t, x, y), **tol)  # geoopt: (t, x, y)


def test_ball_lorentz_isometry():
    c = 0.7
    b, lor = PoincareBall(3, c=c), Lorentz(3, k=1 / c)
    x, y = _pair(b, 300)
    X, Y = _ball_to_lorentz(x, c), _ball_to_lorentz(y, c)
    lor.check_point(X, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(lor.dist(X, Y), b.dist(x, y), rtol=1e-10, atol=1e-10)
    # both base distributions are the isotropic wrapped normal at the origin: same density
    torch.testing.assert_close(lor.base_log_prob(X), b.base_log_prob(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lor.base_origin(dtype=F64), _ball_to_lorentz(b.base_origin(dtype=F64), c), rtol=0, atol=1e-15)
    t = torch.rand(300, generator=_gen(1), dtype=F64)
    torch.testing.assert_close(lor.geodesic(X, Y, t), _ball_to_lorentz(b.geodesic(x, y, t), c), rtol=1e-9, atol=1e-9)
    # the speed of the geodesic agrees too
    xb, vb = b.geodesic_and_velocity(x, y, t)
    xl, vl = lor.geodesic_and_velocity(X, Y, t)
    torch.testing.assert_close(lor.norm(xl, vl), b.norm(xb, vb), rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- geodesics
@pytest.mark.parametrize("make", MANIFOLDS)
def test_geodesic_closed_forms_match_references(make):
    m = make()
    x, y = _pair(m, 100)
    t = torch.rand(100, generator=_gen(2), dtype=F64) * 1.4 - 0.2  # a little extrapolation too
    torch.testing.assert_close(m.geodesic(x, y, t), Manifold.geodesic(m, x, y, t), rtol=1e-9, atol=1e-9)
    xt, vt = m.geodesic_and_velocity(x, y, t)
    xr, vr = geodesic_and_velocity_jvp(m, x, y, t)
    torch.testing.assert_close(xt, xr, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(vt, vr, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(m.norm(xt, vt), m.dist(x, y), rtol=1e-9, atol=1e-9)  # constant speed
    m.check_vector(xt, vt)
    torch.testing.assert_close(m.geodesic(x, y, 0.0), x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.geodesic(x, y, 1.0), y, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("make", MANIFOLDS)
def test_parallel_transport(make):
    m = make()
    x, y = _pair(m, 100)
    u, v = (m.proju(x, w) for w in torch.randn(2, *x.shape, generator=_gen(4), dtype=F64))
    pu, pv = m.transp(x, y, u), m.transp(x, y, v)
    m.check_vector(y, pu)
    torch.testing.assert_close(m.inner(y, pu, pv), m.inner(x, u, v), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(m.transp(x, y, m.logmap(x, y)), -m.logmap(y, x), rtol=1e-9, atol=1e-9)


# ---------------------------------------------------- base distribution
def _log_sphere_area(n):  # area of S^{n-1} in R^n
    return math.log(2) + n / 2 * math.log(math.pi) - math.lgamma(n / 2)


@pytest.mark.parametrize("make", MANIFOLDS)
def test_base_log_prob_polar_quadrature(make):
    m = make()
    n = m.dim
    K = m.c if isinstance(m, PoincareBall) else 1 / float(m._k)
    sK = math.sqrt(K)
    r = torch.linspace(0, 14, 7001, dtype=F64)
    omegas = _unit(torch.randn(3, n, generator=_gen(0), dtype=F64))
    lps = torch.stack([m.base_log_prob(_at_distance(m, r, om.expand(len(r), n))) for om in omegas])
    torch.testing.assert_close(lps, lps[:1].expand_as(lps), rtol=1e-10, atol=1e-12)  # isotropic
    log_vol = torch.zeros_like(r) if n == 1 else (n - 1) * torch.log(torch.sinh(sK * r.clamp_min(1e-300)) / sK)
    f = torch.exp(lps[0] + log_vol + _log_sphere_area(n))
    integral = float(torch.trapezoid(f, r))
    assert abs(integral - 1) < 1e-6, integral
    # the radial law is chi with n degrees of freedom: the density at r is chi_n's
    chi = torch.exp((n - 1) * torch.log(r[1:]) - r[1:] ** 2 / 2 - (n / 2 - 1) * math.log(2) - math.lgamma(n / 2))
    torch.testing.assert_close(f[1:], chi, rtol=1e-9, atol=1e-12)


def test_base_log_prob_importance_sampling_in_ambient_coordinates():
    N = 200_000
    g = _gen(7)
    # ball: uniform proposal on the disk of radius rho/sqrt(c); Riemannian volume lambda_x^2 dx
    c = 0.6
    b = PoincareBall(2, c=c)
    rho = 1 - 1e-4
    x = _unit(torch.randn(N, 2, generator=g, dtype=F64)) * (rho * torch.rand(N, 1, generator=g, dtype=F64).sqrt() / math.sqrt(c))
    log_q = -math.log(math.pi * rho**2 / c)
    w = torch.exp(b.base_log_prob(x) + b.log_volume_density(x) - log_q)
    assert abs(float(w.mean()) - 1) < max(0.02, 4 * float(w.std()) / math.sqrt(N))
    # hyperboloid: bivariate Cauchy proposal on the spatial part x_s; volume sqrt(k)/x_0 dx_s
    k, s = 1.8, 2.0
    lor = Lorentz(2, k=k)
    z = s * torch.randn(N, 2, generator=g, dtype=F64) / torch.randn(N, 1, generator=g, dtype=F64).abs()
    log_q = -math.log(2 * math.pi * s**2) - 1.5 * torch.log1p((z * z).sum(-1) / s**2)
    X = lor.projx(torch.cat([torch.zeros(N, 1, dtype=F64), z], -1))
    w = torch.exp(lor.base_log_prob(X) + 0.5 * math.log(k) - torch.log(X[:, 0]) - log_q)
    assert abs(float(w.mean()) - 1) < max(0.02, 4 * float(w.std()) / math.sqrt(N))


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("kind", ["ball", "lorentz"])
def test_base_log_prob_is_the_change_of_variables_of_exp_at_origin(kind, n):
    m = PoincareBall(n, c=0.45) if kind == "ball" else Lorentz(n, k=1.6)
    o = m.base_origin(dtype=F64)
    # orthonormal basis of T_o: e_i / lambda_0 = e_i / 2 on the ball, (0, e_i) on the hyperboloid
    B = torch.eye(n, dtype=F64) / 2 if kind == "ball" else torch.cat([torch.zeros(1, n, dtype=F64), torch.eye(n, dtype=F64)])

    def chart(e):
        return m.expmap(o, B @ e)

    es = torch.randn(6, n, generator=_gen(3), dtype=F64) * torch.tensor([1e-4, 0.1, 0.7, 1.5, 3.0, 5.0], dtype=F64)[:, None]
    for e in es:
        x = chart(e)
        r = float(e.norm())
        torch.testing.assert_close(x, _at_distance(m, r, e / r), rtol=1e-12, atol=1e-12)
        J = torch.autograd.functional.jacobian(chart, e)
        if kind == "ball":
            g = (2 / (1 - m.c * (x * x).sum())) ** 2 * torch.eye(n, dtype=F64)
        else:
            g = torch.diag(torch.tensor([-1.0] + [1.0] * n, dtype=F64))
        G = J.T @ g @ J
        ref = -n / 2 * math.log(2 * math.pi) - (e * e).sum() / 2 - 0.5 * torch.logdet(G)
        torch.testing.assert_close(m.base_log_prob(x), ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("make", MANIFOLDS)
def test_random_base_is_the_wrapped_normal(make):
    m = make()
    N = 100_000
    x = m.random_base(N, generator=_gen(11), dtype=F64)
    m.check_point(x)
    r = m.dist(m.base_origin(dtype=F64), x)
    n = m.dim
    assert abs(float((r * r).mean()) - n) < 5 * math.sqrt(2 * n / N)  # r^2 ~ chi^2_n
    p_in = {2: 1 - math.exp(-0.5), 3: math.erf(1 / math.sqrt(2)) - math.sqrt(2 / math.pi) * math.exp(-0.5)}[n]
    assert abs(float((r < 1).double().mean()) - p_in) < 5 * math.sqrt(p_in * (1 - p_in) / N)
    direction = m.logmap(m.base_origin(dtype=F64), x)
    assert float(direction.mean(0).abs().max()) < 0.02  # isotropic
    a = m.random_base(4, 2, generator=_gen(1))
    assert a.shape == (4, 2, *m.point_shape) and a.dtype == torch.float32
    assert torch.equal(a, m.random_base(4, 2, generator=_gen(1)))


# ------------------------------------------------------------ hard points
def _hard_inputs(m, dtype):
    """Random points, the origin, and points at the far end: the edge of the ball (1 - 1e-6 in
    float64, the projx boundary in float32) or far out on the hyperboloid (distance 25 in
    float64, 10 in float32, where x_0 ~ 1e4 already costs float32 half its digits)."""
    g = _gen(5)
    x = m.random_base(6, generator=g, dtype=dtype)
    o = m.base_origin(dtype=dtype).expand_as(x)
    if isinstance(m, PoincareBall):
        d = _unit(torch.randn(6, m.n, generator=g, dtype=dtype))
        edge = d * ((1 - 1e-6) / math.sqrt(m.c)) if dtype == F64 else m.projx(d * 10)
    else:
        edge = m.expmap(x, _unit_tangent(m, x) * (25.0 if dtype == F64 else 10.0))
    return x, o, edge


@pytest.mark.parametrize("make", MANIFOLDS)
def test_no_nan_at_hard_points(make, dtype):
    m = make()
    x, o, edge = _hard_inputs(m, dtype)
    m.check_point(edge)
    pairs = [(x, x), (o, o), (x, o), (o, x), (edge, edge), (edge, x), (o, edge), (edge, -edge if isinstance(m, PoincareBall) else o)]
    for a, b in pairs:
        a = a.detach().clone().requires_grad_()
        b = b.detach().clone().requires_grad_()
        u = m.logmap(a, b)
        big = 50.0 * _unit_tangent(m, a.detach()) if bool((u.detach().abs().sum(-1) > 0).all()) else None
        outs = [m.dist(a, b), u, m.expmap(a, u), m.expmap(a, torch.zeros_like(a)), m.geodesic(a, b, 0.3),
                *m.geodesic_and_velocity(a, b, torch.full(a.shape[:-1], 0.7, dtype=dtype)), m.norm(a, u),
                m.inner(a, u), m.base_log_prob(a), m.transp(a, b, u), m.egrad2rgrad(a, u), m.projx(a)]
        if big is not None:
            outs.append(m.expmap(a, big))
        for v in outs:
            assert torch.isfinite(v).all()
        gx, gy = torch.autograd.grad(sum(v.sum() for v in outs), (a, b))
        assert torch.isfinite(gx).all() and torch.isfinite(gy).all()
    for p in (x, o, edge):
        assert float(m.dist(p, p).abs().max()) == 0.0
        assert float(m.logmap(p, p).abs().max()) == 0.0


def test_ball_near_the_edge_float64():
    c = 0.8
    m = PoincareBall(3, c=c)
    d = _unit(torch.randn(5, 3, generator=_gen(0), dtype=F64))
    s = 1 - 1e-6
    x = d * (s / math.sqrt(c))
    torch.testing.assert_close(m.projx(x), x, rtol=0, atol=0)  # not moved by projx
    ref = math.log((1 + s) / (1 - s)) / math.sqrt(c)  # 2 artanh(s) / sqrt(c)
    r = m.dist(torch.zeros(3, dtype=F64), x)
    torch.testing.assert_close(r, torch.full_like(r, ref), rtol=1e-9, atol=0)
    u = _unit_tangent(m, x) * 0.3
    torch.testing.assert_close(m.logmap(x, m.expmap(x, u)), u, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(m.dist(x, m.expmap(x, u)), torch.full((5,), 0.3, dtype=F64), rtol=1e-7, atol=0)


@pytest.mark.parametrize("norm", [50.0, 1e4])
@pytest.mark.parametrize("make", MANIFOLDS)
def test_huge_tangent_vectors_stay_on_the_manifold(make, norm, dtype):
    m = make()
    x, o, edge = _hard_inputs(m, dtype)
    for p in (x, o, edge):
        u = _unit_tangent(m, p) * norm
        for v in (u, -u):
            p_ = p.clone().requires_grad_()
            y = m.expmap(p_, v)
            assert torch.isfinite(y).all()
            m.check_point(y.detach())
            if isinstance(m, PoincareBall):
                assert float(y.detach().double().norm(dim=-1).max()) * math.sqrt(m.c) < 1
            (g,) = torch.autograd.grad(y.sum() + m.dist(p_, y).sum(), p_)
            assert torch.isfinite(g).all()


def test_lorentz_far_points_float32():
    lor = Lorentz(2, k=1.3)
    x = lor.random_base(50, generator=_gen(2))
    u = _unit_tangent(lor, x)
    for R in (10.0, 30.0):
        y = lor.expmap(x, R * u)
        # x_0 was recomputed from the spatial part: the hyperboloid constraint holds to float32 round-off
        x0 = torch.sqrt(1.3 + (y[:, 1:].double() ** 2).sum(-1))
        torch.testing.assert_close(y[:, 0].double(), x0, rtol=2e-7, atol=0)
        lor.check_point(y)
        torch.testing.assert_close(lor.dist(x, y), torch.full((50,), R), rtol=1e-5, atol=0)
    # points far from the origin and 0.5 apart: -<x, y>_L / k - 1 (and the chord <y - x, y - x>_L)
    # cancel to garbage in float32 (error ~ eps x_0^2); ours is within the representation limit
    # eps x_0 of float64 on the same stored points.
    o = lor.base_origin().expand(50, 3)
    far = lor.expmap(o, 9.0 * _unit_tangent(lor, o, seed=4))
    near = lor.expmap(far, 0.5 * _unit_tangent(lor, far, seed=5))
    d32, d64 = lor.dist(far, near), lor.dist(far.double(), near.double())
    torch.testing.assert_close(d32.double(), d64, rtol=0, atol=2e-3)
    naive = math.sqrt(1.3) * torch.acosh((far[:, 0] * near[:, 0] - (far[:, 1:] * near[:, 1:]).sum(-1)) / 1.3)
    assert not bool(((naive.double() - d64).abs() < 0.05).all())  # the test can tell
    torch.testing.assert_close(lor.logmap(far, near).double(), lor.logmap(far.double(), near.double()), rtol=0, atol=2e-3 * float(far[:, 0].max()))
    torch.testing.assert_close(lor.norm(far, lor.logmap(far, near)), torch.full((50,), 0.5), rtol=5e-3, atol=0)
    # and in float64 a distance of 50 is exact
    x64 = lor.projx(x.double())
    y64 = lor.expmap(x64, 50.0 * _unit_tangent(lor, x64))
    torch.testing.assert_close(lor.dist(x64, y64), torch.full((50,), 50.0, dtype=F64), rtol=1e-12, atol=0)


# ----------------------------------------------------------------- checks
def test_lorentz_checks_work_in_float64_and_say_how_far_off():
    lor = Lorentz(3, k=2.0)
    x = lor.random_base(10, generator=_gen(0), dtype=F64)
    u = lor.proju(x, torch.randn(x.shape, generator=_gen(1), dtype=F64))
    lor.check_vector(x, u)  # geoopt's own tangent check fails on float64 input
    bad = x.clone()
    bad[3, 0] += 0.1
    with pytest.raises(ValueError, match=r"-k = -2.*max .* = .*projx"):
        lor.check_point(bad)
    with pytest.raises(ValueError, match="x_0 > 0"):
        lor.check_point(-x)
    with pytest.raises(ValueError, match=r"<x, u>_L = 0.*proju"):
        lor.check_vector(x, u + 0.1 * x)


def test_ball_check_point():
    b = PoincareBall(2, c=4.0)
    b.check_point(torch.tensor([[0.49, 0.0], [0.0, -0.3]], dtype=F64))
    with pytest.raises(ValueError, match=r"sqrt\(c\)\|x\| = 1\.02.*projx"):
        b.check_point(torch.tensor([[0.51, 0.0], [0.0, -0.3]], dtype=F64))
    b.check_point(b.projx(torch.tensor([[5.0, 0.0]])))


# --------------------------------------------------- geoopt compatibility
@pytest.mark.parametrize("name, dtype", [("ball2", torch.float32), ("ball3_c0.3", F64), ("lorentz2", F64), ("lorentz3_k2.5", torch.float32)])
def test_riemannian_adam_minimises_distance(name, dtype):
    m = FACTORIES[name]()
    g = _gen(3)
    start, target = m.random_base(8, generator=g, dtype=dtype), m.random_base(8, generator=g, dtype=dtype)
    p = geoopt.ManifoldParameter(start.clone(), manifold=m)
    opt = geoopt.optim.RiemannianAdam([p], lr=0.1)
    for _ in range(150):
        opt.zero_grad()
        loss = m.dist(p, target).pow(2).sum()
        loss.backward()
        opt.step()
    m.check_point(p.detach())
    assert float(m.dist(p.detach(), target).max()) < 0.05 * float(m.dist(start, target).max())


@pytest.mark.parametrize("make", MANIFOLDS)
def test_egrad2rgrad_is_the_riemannian_gradient(make):
    m = make()
    x, y = _pair(m, 20)
    xr = x.clone().requires_grad_()
    (egrad,) = torch.autograd.grad(m.dist(xr, y).pow(2).sum(), xr)
    saved = egrad.clone()
    rgrad = m.egrad2rgrad(x, egrad)
    torch.testing.assert_close(egrad, saved, rtol=0, atol=0)  # input not modified
    torch.testing.assert_close(rgrad, -2 * m.logmap(x, y), rtol=1e-8, atol=1e-8)  # grad of d^2/2 is -log


def test_geoopt_extras_use_the_exact_curvature():
    b = PoincareBall(2, c=0.3).to(F64)
    u = torch.randn(5, 2, generator=_gen(0), dtype=F64)
    torch.testing.assert_close(b.expmap0(u), b.expmap(torch.zeros(2, dtype=F64), u), rtol=1e-12, atol=1e-12)
    x = b.random_base(5, generator=_gen(1), dtype=F64)
    torch.testing.assert_close(b.mobius_add(-x, x), torch.zeros_like(x), rtol=0, atol=1e-15)
    lor = Lorentz(2, k=0.3).to(F64)
    torch.testing.assert_close(lor.expmap0(lor.proju(lor.base_origin(dtype=F64), torch.cat([torch.zeros(5, 1, dtype=F64), u], -1))),
                               lor.expmap(lor.base_origin(dtype=F64), torch.cat([torch.zeros(5, 1, dtype=F64), u], -1)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype, s, tol", [(F64, 1 - 1e-7, 1e-6), (torch.float32, None, 0.3)])
def test_ball_long_steps_from_the_edge_back_inwards(dtype, s, tol, monkeypatch):
    # exp_x(log_x(y)) with x at the edge and y inside: the Moebius denominator cancels to
    # round-off there; the stable branch (_mobius_dir) keeps the round trip accurate (float32:
    # a step of length ~19 from the projx boundary amplifies directional round-off by
    # sinh(19) ~ 1e8, so 0.3 is near the conditioning limit; the plain formula gives ~19).
    c = 0.6
    m = PoincareBall(2, c=c)
    d = _unit(torch.randn(40, 2, generator=_gen(0), dtype=dtype))
    x = d * (s / math.sqrt(c)) if s is not None else m.projx(d * 10)
    y = m.random_base(40, generator=_gen(1), dtype=dtype)
    u = m.logmap(x, y)
    err = m.dist(m.expmap(x, u), y)
    assert float(err.max()) < tol
    ref = Lorentz(2, k=1 / c)
    X, Y = _ball_to_lorentz(x.double(), c), _ball_to_lorentz(y.double(), c)
    t = torch.rand(40, generator=_gen(2), dtype=F64)
    gt = m.geodesic(x, y, t.to(dtype))
    torch.testing.assert_close(_ball_to_lorentz(gt.double(), c)[:, 1:] / X[:, :1], ref.geodesic(X, Y, t)[:, 1:] / X[:, :1], rtol=0, atol=tol)
    xt, vt = m.geodesic_and_velocity(x, y, t.to(dtype))
    torch.testing.assert_close(m.norm(xt, vt).double(), m.dist(x, y).double(), rtol=tol, atol=0)
    # the plain Moebius formula alone cannot do this (so the test can fail)
    monkeypatch.setattr("manifolds.hyperbolic._ILL", 0.0)
    bad = m.dist(m.expmap(x, u), y)
    assert not bool((bad < tol).all())
