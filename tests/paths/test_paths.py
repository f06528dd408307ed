"""Schedulers, affine and geodesic paths, against finite differences and the jvp reference."""

import math

import pytest
import torch

import manifolds as M
from geoflow.losses import cfm_loss, rcfm_loss
from geoflow.paths import (
    AffinePath,
    CondOTScheduler,
    CosineScheduler,
    GeodesicPath,
    PathSample,
    PolynomialScheduler,
    VEScheduler,
    VPScheduler,
    geodesic_velocity_reference,
)

from ..manifolds.cases import CASES
from ..manifolds.hard_points import hard_pair

SCHEDULERS = {
    "condot": CondOTScheduler(),
    "condot_smin": CondOTScheduler(sigma_min=1e-3),
    "cosine": CosineScheduler(),
    "poly3": PolynomialScheduler(3),
    "vp": VPScheduler(),
    "ve": VEScheduler(0.01, 10.0),
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_derivatives_match_finite_differences(name):
    s = SCHEDULERS[name]
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    h = 1e-6
    out, plus, minus = s(t), s(t + h), s(t - h)
    torch.testing.assert_close(out.d_alpha_t, (plus.alpha_t - minus.alpha_t) / (2 * h), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.d_sigma_t, (plus.sigma_t - minus.sigma_t) / (2 * h), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_finite_at_endpoints(name, dtype):
    out = SCHEDULERS[name](torch.tensor([0.0, 1.0], dtype=dtype))
    for v in (out.alpha_t, out.sigma_t, out.d_alpha_t, out.d_sigma_t):
        assert torch.isfinite(v).all()


def test_scheduler_boundary_values():
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for s in [CondOTScheduler(), CosineScheduler(), PolynomialScheduler(2)]:
        out = s(t)
        torch.testing.assert_close(out.alpha_t, t)
        torch.testing.assert_close(out.sigma_t, 1 - t)
    vp = VPScheduler()(t)
    assert float(vp.sigma_t[1]) < 1e-2 and float(vp.alpha_t[1]) > 0.999
    assert abs(float(vp.alpha_t[0] ** 2 + vp.sigma_t[0] ** 2) - 1) < 1e-12


def test_scheduler_validation():
    with pytest.raises(ValueError, match="sigma_min"):
        CondOTScheduler(sigma_min=-0.1)
    with pytest.raises(ValueError, match="beta_max"):
        VPScheduler(beta_min=5, beta_max=1)
    with pytest.raises(ValueError, match="sigma_max"):
        VEScheduler(1.0, 0.5)
    with pytest.raises(TypeError, match="`n`"):
        PolynomialScheduler("2")


# ------------------------------------------------------------------ affine
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_affine_path_velocity_is_time_derivative(name):
    path = AffinePath(SCHEDULERS[name])
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randn(16, 5, generator=g, dtype=torch.float64)
    t = torch.rand(16, generator=g, dtype=torch.float64) * 0.9 + 0.05
    h = 1e-6
    s = path.sample(x0, x1, t)
    fd = (path.sample(x0, x1, t + h).x_t - path.sample(x0, x1, t - h).x_t) / (2 * h)
    torch.testing.assert_close(s.dx_t, fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_affine_conversions(name):
    path = AffinePath(SCHEDULERS[name])
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(8, 3, generator=g, dtype=torch.float64), torch.randn(8, 3, generator=g, dtype=torch.float64)
    t = torch.rand(8, generator=g, dtype=torch.float64) * 0.9 + 0.05
    s = path.sample(x0, x1, t)
    # the conditional velocity of a known pair inverts exactly to that pair
    torch.testing.assert_close(path.velocity_to_target(s.dx_t, s.x_t, t), x1)
    torch.testing.assert_close(path.velocity_to_epsilon(s.dx_t, s.x_t, t), x0)
    torch.testing.assert_close(path.target_to_velocity(x1, s.x_t, t), s.dx_t)
    torch.testing.assert_close(path.epsilon_to_velocity(x0, s.x_t, t), s.dx_t)
    torch.testing.assert_close(path.target_to_epsilon(x1, s.x_t, t), x0)
    torch.testing.assert_close(path.epsilon_to_target(x0, s.x_t, t), x1)
    score = path.velocity_to_score(s.dx_t, s.x_t, t)
    sigma = SCHEDULERS[name](t).sigma_t[:, None]
    torch.testing.assert_close(score, -x0 / sigma)
    torch.testing.assert_close(path.score_to_velocity(score, s.x_t, t), s.dx_t)


def test_affine_gaussian_score_is_exact_marginal_score():
    # For x1 = mu fixed (a point mass), p_t = N(alpha mu, sigma^2 I): its score is -(x - alpha mu)/sigma^2.
    path = AffinePath(CosineScheduler())
    mu = torch.tensor([[1.0, -2.0]], dtype=torch.float64).expand(5, 2)
    t = torch.linspace(0.1, 0.9, 5, dtype=torch.float64)
    x = torch.randn(5, 2, dtype=torch.float64)
    out = CosineScheduler()(t)
    a, s = out.alpha_t[:, None], out.sigma_t[:, None]
    v_true = path.target_to_velocity(mu, x, t)
    torch.testing.assert_close(path.velocity_to_score(v_true, x, t), -(x - a * mu) / s**2)


# ---------------------------------------------------------------- geodesic
@pytest.mark.parametrize("name", sorted(CASES))
def test_geodesic_closed_form_matches_jvp_and_finite_differences(name):
    m = CASES[name]()
    path = GeodesicPath(m)
    g = torch.Generator().manual_seed(0)
    x0 = m.random_base(32, generator=g, dtype=torch.float64)
    x1 = m.expmap(x0, 0.8 * _tangent(m, x0, g))  # well inside the injectivity radius
    t = torch.rand(32, generator=g, dtype=torch.float64) * 0.9 + 0.05
    s = path.sample(x0, x1, t)
    ref_x, ref_v = geodesic_velocity_reference(m, x0, x1, t)
    torch.testing.assert_close(s.x_t, ref_x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(s.dx_t, ref_v, rtol=1e-7, atol=1e-7)
    h = 1e-6
    xp, xm = path.sample(x0, x1, t + h).x_t, path.sample(x0, x1, t - h).x_t
    fd = m.logmap(s.x_t, xp) - m.logmap(s.x_t, xm)
    torch.testing.assert_close(s.dx_t, fd / (2 * h), rtol=1e-5, atol=1e-5)
    m.check_vector(s.x_t, s.dx_t)
    # endpoints
    ends0 = path.sample(x0, x1, torch.zeros(32, dtype=torch.float64))
    ends1 = path.sample(x0, x1, torch.ones(32, dtype=torch.float64))
    assert float(m.dist(ends0.x_t, x0).max()) < 1e-9 and float(m.dist(ends1.x_t, x1).max()) < 1e-7
    # speed is the geodesic distance (kappa_t = t)
    torch.testing.assert_close(m.norm(s.x_t, s.dx_t), m.dist(x0, x1), rtol=1e-7, atol=1e-7)


def _tangent(m, x, g):
    u = m.proju(x, torch.randn(x.shape, generator=g, dtype=x.dtype))
    n = m.norm(x, u, keepdim=True).reshape(x.shape[:1] + (1,) * m.ndim)
    r = min(float(getattr(m, "injectivity_radius", math.inf)), 3.0)
    return u / n * r * torch.rand(n.shape, generator=g, dtype=x.dtype)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("kind", ["same", "far"])
def test_geodesic_path_finite_at_hard_points(name, kind, dtype):
    m = CASES[name]()
    path = GeodesicPath(m, CosineScheduler())
    x0, x1 = hard_pair(m, kind, 1e-7, 0, dtype)
    for tv in [0.0, 1.0, 0.5]:
        t = torch.full((x0.shape[0],), tv, dtype=dtype)
        x0r = x0.clone().requires_grad_()
        s = path.sample(x0r, x1, t)
        assert torch.isfinite(s.x_t).all() and torch.isfinite(s.dx_t).all()
        loss = rcfm_loss(m, lambda x, t: torch.zeros_like(x), s)
        loss.backward()
        assert torch.isfinite(x0r.grad).all()


def test_geodesic_path_validation():
    s = M.Sphere(2)
    path = GeodesicPath(s)
    x = s.random_base(4)
    with pytest.raises(ValueError, match="alpha_0 = 0"):
        GeodesicPath(s, VPScheduler())
    with pytest.raises(ValueError, match="alpha_0 = 0"):
        GeodesicPath(s, VEScheduler())
    with pytest.raises(TypeError, match="manifold"):
        GeodesicPath("sphere")
    with pytest.raises(ValueError, match="same shape"):
        path.sample(x, x[:3], torch.rand(4))
    with pytest.raises(ValueError, match=r"`t` must have shape \(batch,\)"):
        path.sample(x, x, torch.rand(5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        path.sample(x, x, torch.full((4,), 1.5))
    with pytest.raises(ValueError, match="trailing shape"):
        path.sample(torch.zeros(4, 2), torch.zeros(4, 2), torch.rand(4))


# ------------------------------------------------------------------- losses
def test_rcfm_equals_cfm_on_euclidean_and_uses_the_metric():
    e = M.Euclidean(3)
    path = GeodesicPath(e)
    g = torch.Generator().manual_seed(0)
    s = path.sample(torch.randn(10, 3, generator=g), torch.randn(10, 3, generator=g), torch.rand(10, generator=g))
    model = lambda x, t: 0.5 * x  # noqa: E731
    torch.testing.assert_close(rcfm_loss(e, model, s), cfm_loss(model, s))
    ref = ((0.5 * s.x_t - s.dx_t) ** 2).sum(-1).mean()
    torch.testing.assert_close(cfm_loss(model, s), ref)


def test_rcfm_normal_weight_penalises_the_raw_normal_part():
    from geoflow.nn import MLPVelocity

    s2 = M.Sphere(2)
    g = torch.Generator().manual_seed(0)
    x0, x1 = s2.random_base(32, generator=g), s2.random_base(32, generator=g)
    smp = GeodesicPath(s2).sample(x0, x1, torch.rand(32, generator=g))
    torch.manual_seed(0)
    model = MLPVelocity(s2, hidden=16, depth=2)
    raw = model(smp.x_t, smp.t, project=False)
    v = model(smp.x_t, smp.t)
    torch.testing.assert_close(v, s2.proju(smp.x_t, raw))
    normal = ((raw - v) ** 2).sum(-1).mean()
    assert float(normal.detach()) > 1e-3  # an untrained MLP's output is not tangent: the check is not vacuous
    base = rcfm_loss(s2, model, smp)
    torch.testing.assert_close(rcfm_loss(s2, model, smp, normal_weight=0.0), base)
    torch.testing.assert_close(rcfm_loss(s2, model, smp, normal_weight=2.5), base + 2.5 * normal)
    # and its gradient reaches the parameters
    rcfm_loss(s2, model, smp, normal_weight=1.0).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_loss_rejects_bad_model_output():
    s = PathSample(torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(4), torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="shape of x_t"):
        cfm_loss(lambda x, t: torch.zeros(4, 2), s)


def test_loss_passes_cond():
    s = PathSample(torch.zeros(4, 3), torch.ones(4, 3), torch.zeros(4), torch.zeros(4, 3), torch.zeros(4, 3))
    seen = {}

    def model(x, t, cond=None):
        seen["cond"] = cond
        return torch.zeros_like(x)

    cfm_loss(model, s, cond=torch.arange(4))
    assert seen["cond"] is not None
