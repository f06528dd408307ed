"""MLP velocity fields and EMA."""

import math

import pytest
import torch

import manifolds as M
from geoflow.nn import EMA, MLPVelocity, ManifoldFeatures, SinusoidalTimeEmbedding

from ..manifolds.cases import CASES


@pytest.mark.parametrize("name", sorted(CASES))
def test_mlp_output_is_tangent(name):
    m = CASES[name]()
    net = MLPVelocity(m, hidden=32, depth=2).double()
    x = m.random_base(7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = net(x, torch.rand(7, dtype=torch.float64))
    assert v.shape == x.shape
    m.check_vector(x, v.detach())
    v2 = net(x, 0.3)  # scalar t broadcasts
    assert v2.shape == x.shape


def test_torus_features_are_continuous_across_the_seam():
    t = M.FlatTorus(2)
    f = ManifoldFeatures(t)
    a = torch.tensor([[3.14159265, 0.0]], dtype=torch.float64)
    b = torch.tensor([[-3.14159265, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(f(a), f(b), atol=1e-7, rtol=0)
    net = MLPVelocity(t, hidden=16, depth=2).double()
    torch.testing.assert_close(net(a, 0.5), net(b, 0.5), atol=1e-6, rtol=0)


def test_conditioning():
    s = M.Sphere(2)
    net = MLPVelocity(s, hidden=16, depth=2, num_classes=3)
    x = s.random_base(4)
    a = net(x, 0.5, cond=torch.tensor([0, 0, 0, 0]))
    b = net(x, 0.5, cond=torch.tensor([1, 1, 1, 1]))
    null = net(x, 0.5)  # the null label
    assert not torch.allclose(a, b) and not torch.allclose(a, null)
    vec = MLPVelocity(s, hidden=16, depth=2, cond_dim=5)
    c = torch.randn(4, 5)
    assert vec(x, 0.5, cond=c).shape == x.shape
    # cond=None is the null condition: zeros with null flag 1 (geoflow.nn.conditioning)
    null = torch.cat([torch.zeros(4, 5), torch.ones(4, 1)], dim=1)
    torch.testing.assert_close(vec(x, 0.5), vec(x, 0.5, cond=null), rtol=0, atol=0)
    # (batch, cond_dim) means "flag 0": the same as passing the flag column explicitly
    torch.testing.assert_close(vec(x, 0.5, cond=c), vec(x, 0.5, cond=torch.cat([c, torch.zeros(4, 1)], 1)), rtol=0, atol=0)
    assert not torch.allclose(vec(x, 0.5, cond=c), vec(x, 0.5))
    with pytest.raises(ValueError, match="must be zero"):
        vec(x, 0.5, cond=torch.cat([c, torch.ones(4, 1)], 1))
    with pytest.raises(ValueError, match=r"shape \(4, 5\) or \(4, 6\)"):
        vec(x, 0.5, cond=torch.randn(4, 3))
    with pytest.raises(ValueError, match="class labels must lie"):
        net(x, 0.5, cond=torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="unconditional"):
        MLPVelocity(s, hidden=16, depth=2)(x, 0.5, cond=torch.tensor([0, 1, 2, 3]))


def test_mlp_validation():
    with pytest.raises(ValueError, match="activation"):
        MLPVelocity(M.Sphere(2), activation="swishy")
    with pytest.raises(ValueError, match="hidden"):
        MLPVelocity(M.Sphere(2), hidden=0)
    with pytest.raises(TypeError, match="manifold"):
        MLPVelocity("sphere")
    with pytest.raises(ValueError, match="even"):
        SinusoidalTimeEmbedding(7)


def test_ema_is_exact_average():
    net = torch.nn.Linear(3, 2)
    ema = EMA(net, decay=0.5)
    w0 = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)
    torch.testing.assert_close(ema.module.weight, w0 + 0.5)
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)
    torch.testing.assert_close(ema.module.weight, 0.5 * (w0 + 0.5) + 0.5 * (w0 + 2))
    with ema.swapped_into(net):
        torch.testing.assert_close(net.weight, ema.module.weight)
    torch.testing.assert_close(net.weight, w0 + 2)
    with pytest.raises(ValueError, match="decay"):
        EMA(net, decay=1.0)


def test_fourier_features_are_the_formula_and_follow_the_seed():
    m = M.Sphere(2)
    torch.manual_seed(0)
    f = ManifoldFeatures(m, fourier=16, fourier_scale=2.5)
    assert f.out_dim == 3 + 32 and f.fourier_B.shape == (3, 16)
    x = m.random_base(10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z = 2 * math.pi * x @ f.fourier_B.double()
    torch.testing.assert_close(f(x), torch.cat([x, z.sin(), z.cos()], -1), rtol=0, atol=1e-12)
    # B ~ N(0, 2.5^2) from the global generator: the same seed gives the same B, another seed another
    torch.manual_seed(0)
    assert torch.equal(ManifoldFeatures(m, fourier=16, fourier_scale=2.5).fourier_B, f.fourier_B)
    torch.manual_seed(1)
    assert not torch.equal(ManifoldFeatures(m, fourier=16, fourier_scale=2.5).fourier_B, f.fourier_B)
    big = ManifoldFeatures(m, fourier=4000, fourier_scale=2.5).fourier_B
    assert abs(float(big.std()) - 2.5) < 0.1 and abs(float(big.mean())) < 0.1
    # no Fourier features: the plain features, and no draw from the generator (old models initialise as before)
    torch.manual_seed(0)
    plain = ManifoldFeatures(m)
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))
    assert plain.out_dim == 3 and torch.equal(plain(x), x) and not hasattr(plain, "fourier_B")


def test_mlp_with_fourier_features_is_tangent_and_restores_from_its_state_dict():
    m = M.Sphere(2)
    torch.manual_seed(0)
    a = MLPVelocity(m, hidden=32, depth=2, fourier_features=8, fourier_scale=3.0)
    torch.manual_seed(5)
    b = MLPVelocity(m, hidden=32, depth=2, fourier_features=8, fourier_scale=3.0)
    x = m.random_base(20, generator=torch.Generator().manual_seed(2), dtype=torch.float32)
    t = torch.rand(20, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(a(x, t), b(x, t))
    b.load_state_dict(a.state_dict())  # B is a buffer in the state dict
    assert torch.equal(a(x, t), b(x, t))
    assert float((a(x, t).detach() * x).sum(-1).abs().max()) < 1e-6
    assert a.config["fourier_features"] == 8 and a.config["fourier_scale"] == 3.0


@pytest.mark.parametrize("kw, match", [
    (dict(fourier_features=-1), "fourier"), (dict(fourier_features=1.5), "fourier"), (dict(fourier_features=True), "fourier"),
    (dict(fourier_features=4, fourier_scale=0.0), "fourier_scale"),
    (dict(fourier_features=4, fourier_scale=float("nan")), "fourier_scale"),
])
def test_fourier_feature_arguments_are_checked(kw, match):
    with pytest.raises(ValueError, match=match):
        MLPVelocity(M.Sphere(2), hidden=8, depth=1, **kw)
