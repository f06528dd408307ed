"""Classifier-free and classifier guidance: exact reductions, the batched pass, hand-computed score shifts."""

import math

import pytest
import torch

import geoflow.guidance as G
import manifolds as M
from geoflow.guidance import CFGVelocity, ClassifierGuidance
from geoflow.nn import MLPVelocity, UNetVelocity
from geoflow.paths import AffinePath, CondOTScheduler, CosineScheduler, GeodesicPath, PolynomialScheduler, VPScheduler
from geoflow.solvers import sample

SCHEDULERS = {
    "condot": CondOTScheduler(),
    "condot_smin": CondOTScheduler(sigma_min=0.1),
    "cosine": CosineScheduler(),
    "poly3": PolynomialScheduler(3),
    "vp": VPScheduler(),
}


def _unet(**kw):
    torch.manual_seed(0)
    return UNetVelocity(1, base=8, channel_mults=(1, 2), time_dim=16, num_classes=3, **kw).double().eval()


def _batch(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, t, y


class Counting:
    """Wraps a model and counts forward calls (and the batch sizes it saw)."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __call__(self, x, t, cond=None):
        self.calls.append(x.shape[0])
        return self.model(x, t, cond=cond)

    def null_cond(self, batch, **kw):
        return self.model.null_cond(batch, **kw)


def test_public_names():
    for name in G.__all__:
        assert hasattr(G, name), name


# ------------------------------------------------------------------ CFG
def test_cfg_w0_is_unconditional_and_w1_conditional_exactly():
    net = _unet()
    x, t, y = _batch()
    with torch.no_grad():
        v_null = net(x, t)  # cond=None: the null label
        v_cond = net(x, t, cond=y)
        assert torch.equal(net(x, t, cond=torch.full_like(y, 3)), v_null)
        assert torch.equal(CFGVelocity(net, 0.0)(x, t, y), v_null)
        assert torch.equal(CFGVelocity(net, 1)(x, t, y), v_cond)
        assert torch.equal(CFGVelocity(net, 3.0)(x, t), v_null)  # no condition: nothing to guide towards
        assert not torch.allclose(v_null, v_cond)


@pytest.mark.parametrize("w", [-0.5, 0.5, 2.0, 4.0])
def test_cfg_formula_in_one_batched_pass(w):
    net = Counting(_unet())
    x, t, y = _batch(6)
    with torch.no_grad():
        got = CFGVelocity(net, w)(x, t, y)
        assert net.calls == [12]  # [x; x] with [y; null] in one forward
        v_n, v_c = net.model(x, t), net.model(x, t, cond=y)
    torch.testing.assert_close(got, v_n + w * (v_c - v_n), rtol=1e-12, atol=1e-12)


def test_cfg_plain_callable_without_null_cond_uses_cond_none():
    # a closure: v(x, t, y) = y x, v(x, t) = -x  (so guided = -x + w (y x + x))
    def field(x, t, cond=None):
        return -x if cond is None else cond[:, None].to(x.dtype) * x

    x = torch.randn(4, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    w = 1.5
    expected = -x + w * (y[:, None] * x + x)
    torch.testing.assert_close(CFGVelocity(field, w)(x, 0.3, y), expected, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(CFGVelocity(field, 0)(x, 0.3, y), -x, rtol=0, atol=0)


def test_cfg_explicit_null_label_and_vector_conditions():
    net = _unet()
    x, t, y = _batch()
    with torch.no_grad():
        torch.testing.assert_close(CFGVelocity(net, 2.0, null=3)(x, t, y), CFGVelocity(net, 2.0)(x, t, y),
                                   rtol=1e-12, atol=1e-12)
        torch.manual_seed(1)
        vec = UNetVelocity(1, base=8, time_dim=16, cond_dim=4).double().eval()
        c = torch.randn(5, 4, dtype=torch.float64)
        v_n, v_c = vec(x, t), vec(x, t, cond=c)
        torch.testing.assert_close(CFGVelocity(vec, 3.0)(x, t, c), v_n + 3.0 * (v_c - v_n), rtol=1e-12, atol=1e-12)
        null_row = torch.tensor([0, 0, 0, 0, 1.0], dtype=torch.float64)
        torch.testing.assert_close(CFGVelocity(vec, 3.0, null=null_row)(x, t, c), v_n + 3.0 * (v_c - v_n),
                                   rtol=1e-12, atol=1e-12)


def test_cfg_on_the_sphere_stays_tangent():
    # geodesic paths: guidance is a heuristic, but the combination of tangent vectors is tangent
    s2 = M.Sphere(2)
    torch.manual_seed(0)
    net = MLPVelocity(s2, hidden=16, depth=2, num_classes=4).double()
    x = s2.random_base(7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.arange(7) % 4
    v = CFGVelocity(net, 3.0)(x, torch.full((7,), 0.4, dtype=torch.float64), y).detach()
    s2.check_vector(x, v)
    x1 = sample(CFGVelocity(net, 2.0), x, s2, steps=4, cond=y)
    s2.check_point(x1)


def test_cfg_drives_the_flat_solver_with_cond():
    net = _unet()
    x0, _, y = _batch(4)
    with torch.no_grad():
        a = sample(CFGVelocity(net, 2.0), x0, steps=3, method="euler", cond=y)
        b = sample(CFGVelocity(net, 2.0), x0, steps=3, method="euler", cond=(y + 1) % 3)
    assert a.shape == x0.shape and torch.isfinite(a).all() and not torch.allclose(a, b)


def test_cfg_validation():
    net = _unet()
    with pytest.raises(ValueError, match="`w` must be finite"):
        CFGVelocity(net, math.nan)
    with pytest.raises(TypeError, match="`w` must be a float"):
        CFGVelocity(net, "2")
    with pytest.raises(TypeError, match="callable"):
        CFGVelocity(3, 1.0)
    with pytest.raises(TypeError, match="`null`"):
        CFGVelocity(net, 1.0, null="none")
    x, t, y = _batch()
    with pytest.raises(ValueError, match="class labels must lie"):
        CFGVelocity(net, 2.0)(x, t, y + 5)


# ------------------------------------------------------------------ classifier guidance
class LinearClassifier(torch.nn.Module):
    """logits = W x + b(t) (linear in x), so grad_x log softmax_y = W_y - sum_k p_k W_k."""

    def __init__(self, d, k, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(k, d, generator=g, dtype=torch.float64)
        self.b = torch.randn(k, generator=g, dtype=torch.float64)

    def forward(self, x, t):
        return x.reshape(x.shape[0], -1) @ self.W.T + self.b * t[:, None]


def _hand_grad(clf, x, t, y):
    logits = x.reshape(x.shape[0], -1) @ clf.W.T + clf.b * t[:, None]
    p = torch.softmax(logits, dim=-1)
    return (clf.W[y] - p @ clf.W).reshape(x.shape)


def _field(x, t, cond=None):  # any smooth velocity
    return torch.sin(x) * (1 + t.reshape(-1, *([1] * (x.dim() - 1))))


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_classifier_guidance_shifts_the_score_by_scale_times_grad_log_p(name):
    path = AffinePath(SCHEDULERS[name])
    clf = LinearClassifier(6, 4)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(9, 6, generator=g, dtype=torch.float64)
    t = torch.rand(9, generator=g, dtype=torch.float64) * 0.9 + 0.05
    y = torch.randint(0, 4, (9,), generator=g)
    scale = 2.5
    guided = ClassifierGuidance(_field, clf, path, scale, min_alpha=0.0)  # t >= 0.05: alpha_t > 0 for all
    v, v_g = _field(x, t), guided(x, t, y)
    shift = path.velocity_to_score(v_g, x, t) - path.velocity_to_score(v, x, t)
    torch.testing.assert_close(shift, scale * _hand_grad(clf, x, t, y), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(guided.log_prob_grad(x, t, y), _hand_grad(clf, x, t, y), rtol=1e-12, atol=1e-12)


def test_classifier_guidance_condot_closed_form_and_scale_zero():
    # CondOT: alpha = t, sigma = 1 - t, so v~ = v + scale (1 - t) / t grad log p(y | x)
    path = AffinePath(CondOTScheduler())
    clf = LinearClassifier(2 * 4 * 4, 3, seed=1)
    x = torch.randn(5, 2, 4, 4, dtype=torch.float64)
    t = torch.tensor([0.1, 0.3, 0.5, 0.9, 1.0], dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0])
    v_g = ClassifierGuidance(_field, clf, path, 1.7)(x, t, y)
    expected = _field(x, t) + 1.7 * ((1 - t) / t).reshape(-1, 1, 1, 1) * _hand_grad(clf, x, t, y)
    torch.testing.assert_close(v_g, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(ClassifierGuidance(_field, clf, path, 0.0)(x, t, y), _field(x, t))
    assert torch.equal(ClassifierGuidance(_field, clf, path, 3.0)(x, t), _field(x, t))


def test_classifier_guidance_is_off_near_pure_noise_and_finite():
    path = AffinePath(CondOTScheduler())
    clf = LinearClassifier(3, 2)
    x = torch.randn(3, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 0.005, 0.5], dtype=torch.float64)
    y = torch.tensor([0, 1, 1])
    out = ClassifierGuidance(_field, clf, path, 5.0, min_alpha=0.01)(x, t, y)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:2], _field(x, t)[:2], rtol=0, atol=0)
    assert not torch.allclose(out[2], _field(x, t)[2])


def test_classifier_guidance_works_under_no_grad_and_in_the_solver():
    path = AffinePath()
    clf = LinearClassifier(64, 3)
    net = _unet()
    x0, _, y = _batch(3)
    with torch.no_grad():
        x1 = sample(ClassifierGuidance(net, clf, path, 1.0), x0, steps=3, method="euler", t0=0.0, cond=y)
    assert torch.isfinite(x1).all()


def test_classifier_guidance_validation():
    clf = LinearClassifier(3, 2)
    with pytest.raises(TypeError, match="AffinePath"):
        ClassifierGuidance(_field, clf, GeodesicPath(M.Sphere(2)), 1.0)
    with pytest.raises(ValueError, match="finite"):
        ClassifierGuidance(_field, clf, AffinePath(), math.inf)
    x = torch.randn(2, 3, dtype=torch.float64)
    t = torch.full((2,), 0.5, dtype=torch.float64)
    bad = ClassifierGuidance(_field, lambda x, t: x.sum(-1), AffinePath(), 1.0)
    with pytest.raises(ValueError, match="logits of shape"):
        bad(x, t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels must lie"):
        ClassifierGuidance(_field, clf, AffinePath(), 1.0)(x, t, torch.tensor([0, 2]))


# ------------------------------------------------------------------ conversions used by guidance
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_velocity_score_conversions_invert_each_other(name):
    path = AffinePath(SCHEDULERS[name])
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 5, generator=g, dtype=torch.float64)
    v = torch.randn(16, 5, generator=g, dtype=torch.float64)  # arbitrary, not a path's conditional velocity
    t = torch.rand(16, generator=g, dtype=torch.float64) * 0.9 + 0.05
    torch.testing.assert_close(path.score_to_velocity(path.velocity_to_score(v, x, t), x, t), v, rtol=1e-12, atol=1e-12)
    s = torch.randn(16, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(path.velocity_to_score(path.score_to_velocity(s, x, t), x, t), s, rtol=1e-12, atol=1e-12)
