"""Sphere, FlatTorus, Euclidean and Product against closed forms, at their hard points."""

import math

import geoopt
import pytest
import torch

import manifolds as M

from ..conftest import TOL


def _unit(v):
    return v / v.norm(dim=-1, keepdim=True)


# ----------------------------------------------------------------- sphere
def test_sphere_dist_closed_form_and_geoopt():
    g = torch.Generator().manual_seed(0)
    s = M.Sphere(3)
    x, y = s.random_base(200, generator=g, dtype=torch.float64), s.random_base(200, generator=g, dtype=torch.float64)
    ref = torch.arccos((x * y).sum(-1).clamp(-1, 1))
    torch.testing.assert_close(s.dist(x, y), ref, rtol=1e-10, atol=1e-10)
    gs = geoopt.Sphere()
    torch.testing.assert_close(s.dist(x, y), gs.dist(x, y), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(s.expmap(x, s.proju(x, y)), gs.expmap(x, gs.proju(x, y)), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(s.logmap(x, y), gs.logmap(x, y), rtol=1e-9, atol=1e-9)


def test_sphere_small_distances_are_accurate_in_float32():
    # acos(<x, y>) returns 0 (or 3e-4) for an angle of 1e-5 in float32; the atan2 form is exact.
    s = M.Sphere(2)
    for theta in [1e-3, 1e-5, 1e-7]:
        x = torch.tensor([1.0, 0.0, 0.0])
        y = torch.tensor([math.cos(theta), math.sin(theta), 0.0])
        assert abs(float(s.dist(x, y)) - theta) / theta < 1e-3, theta
        u = s.logmap(x, y)
        assert abs(float(u[1]) - theta) / theta < 1e-3


def test_sphere_expmap_is_great_circle():
    s = M.Sphere(2)
    x = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    for th in [0.0, 0.3, math.pi / 2, 3.0, 2 * math.pi + 0.1]:
        u = torch.tensor([0.0, th, 0.0], dtype=torch.float64)
        torch.testing.assert_close(s.expmap(x, u), torch.tensor([math.cos(th), math.sin(th), 0.0], dtype=torch.float64))


def test_sphere_s1_matches_angles():
    s, t = M.Sphere(1), M.FlatTorus(1)
    a = torch.linspace(-3.1, 3.1, 50, dtype=torch.float64)
    b = torch.roll(a, 7)
    xa = torch.stack([a.cos(), a.sin()], -1)
    xb = torch.stack([b.cos(), b.sin()], -1)
    torch.testing.assert_close(s.dist(xa, xb), t.dist(a[:, None], b[:, None]))


def test_sphere_base_log_prob_values():
    for n, area in [(1, 2 * math.pi), (2, 4 * math.pi), (3, 2 * math.pi**2)]:
        s = M.Sphere(n)
        lp = s.base_log_prob(s.random_base(3, dtype=torch.float64))
        torch.testing.assert_close(lp, torch.full((3,), -math.log(area), dtype=torch.float64))


@pytest.mark.parametrize("n", [1, 2, 4])
def test_sphere_antipodal_points_finite(n, dtype):
    s = M.Sphere(n)
    x = s.random_base(16, generator=torch.Generator().manual_seed(0), dtype=dtype)
    x[0] = 0
    x[0, 0] = 1.0  # +e_0: the fallback direction must switch to e_1
    x[1] = 0
    x[1, -1] = -1.0
    x = x.requires_grad_()
    y = -x.detach()
    u = s.logmap(x, y)
    assert torch.isfinite(u).all()
    torch.testing.assert_close(s.norm(x, u), torch.full((16,), math.pi, dtype=dtype), atol=TOL[dtype] * 10, rtol=0)
    assert (x * u).sum(-1).abs().max() < 10 * TOL[dtype]
    torch.testing.assert_close(s.dist(x, y), torch.full((16,), math.pi, dtype=dtype), atol=TOL[dtype], rtol=0)
    # exp of the log lands on the antipode
    torch.testing.assert_close(s.expmap(x, u), y, atol=TOL[dtype] * 10, rtol=0)
    (u.sum() + s.dist(x, y).sum() + s.geodesic(x, y, 0.5).sum()).backward()
    assert torch.isfinite(x.grad).all()


def test_sphere_nearly_antipodal_log_is_tangent_float32():
    s = M.Sphere(2)
    x = torch.tensor([[0.0, 0.0, 1.0]])
    for eps in [1e-2, 1e-4, 1e-6]:
        y = _unit(torch.tensor([[eps, 0.0, -1.0]]))
        u = s.logmap(x, y)
        assert abs(float((x * u).sum())) < 1e-5
        assert abs(float(u.norm()) - float(s.dist(x, y))) < 1e-4


# ------------------------------------------------------------------ torus
def test_torus_crosses_the_seam():
    t = M.FlatTorus(1)
    x = torch.tensor([[math.pi - 0.1]], dtype=torch.float64)
    y = torch.tensor([[-math.pi + 0.1]], dtype=torch.float64)
    torch.testing.assert_close(t.dist(x, y), torch.tensor([0.2], dtype=torch.float64))
    torch.testing.assert_close(t.logmap(x, y), torch.tensor([[0.2]], dtype=torch.float64))
    mid = t.geodesic(x, y, 0.5)
    assert abs(abs(float(mid)) - math.pi) < 1e-12
    assert -math.pi <= float(mid) < math.pi


def test_torus_wrap_is_half_open(dtype):
    t = M.FlatTorus(1)
    vals = torch.tensor([math.pi, -math.pi, 3 * math.pi, -1e-30, 2 * math.pi - 1e-7, 1e4, -1e4], dtype=dtype)[:, None]
    w = t.projx(vals)
    assert (w >= -math.pi).all() and (w < math.pi).all()
    torch.testing.assert_close(torch.cos(w), torch.cos(vals), atol=1e-3 if dtype == torch.float32 else 1e-9, rtol=0)


def test_torus_gradients_at_seam(dtype):
    t = M.FlatTorus(2)
    x = torch.tensor([[math.pi - 1e-7, -math.pi]], dtype=dtype, requires_grad=True)
    y = torch.tensor([[-math.pi, math.pi - 1e-7]], dtype=dtype)
    out = t.dist(x, y).sum() + t.logmap(x, y).sum() + t.geodesic(x, y, 0.5).sum()
    out.backward()
    assert torch.isfinite(x.grad).all()


# -------------------------------------------------------------- euclidean
def test_euclidean_base_log_prob_is_gaussian():
    e = M.Euclidean(4, std=2.0)
    x = torch.randn(10, 4, dtype=torch.float64)
    ref = torch.distributions.Normal(0.0, 2.0).log_prob(x).sum(-1)
    torch.testing.assert_close(e.base_log_prob(x), ref)


# ---------------------------------------------------------------- product
def test_product_against_factors():
    s, t = M.Sphere(2), M.FlatTorus(3)
    p = M.Product(s, t)
    assert p.dim == 5 and p.point_shape == (6,)
    g = torch.Generator().manual_seed(0)
    x, y = p.random_base(7, generator=g, dtype=torch.float64), p.random_base(7, generator=g, dtype=torch.float64)
    xs, xt = x[:, :3], x[:, 3:]
    ys, yt = y[:, :3], y[:, 3:]
    torch.testing.assert_close(p.dist(x, y), (s.dist(xs, ys) ** 2 + t.dist(xt, yt) ** 2).sqrt())
    torch.testing.assert_close(p.logmap(x, y), torch.cat([s.logmap(xs, ys), t.logmap(xt, yt)], -1))
    torch.testing.assert_close(p.base_log_prob(x), s.base_log_prob(xs) + t.base_log_prob(xt))
    with pytest.raises(ValueError, match="factor 1"):
        p.check_point(torch.cat([xs, xt + 10], -1))


def test_product_rejects_non_manifolds():
    with pytest.raises(ValueError, match="at least one"):
        M.Product()
    with pytest.raises(TypeError, match="factor 0"):
        M.Product(geoopt.Sphere())


# ------------------------------------------------------------ constructors
@pytest.mark.parametrize("cls", [M.Euclidean, M.Sphere, M.FlatTorus])
def test_constructor_validation(cls):
    with pytest.raises(ValueError, match="`n` must be >= 1"):
        cls(0)
    with pytest.raises(TypeError, match="`n` must be an int"):
        cls(2.5)
    with pytest.raises(TypeError, match="`n` must be an int"):
        cls(True)


def test_check_point_messages_say_how_far_off():
    s = M.Sphere(2)
    with pytest.raises(ValueError, match=r"Sphere\(n=2\).*max \|\|x\| - 1\| = 1"):
        s.check_point(torch.tensor([[2.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="use proju"):
        s.check_vector(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match=r"trailing shape \(3,\)"):
        s.check_point(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"\[-pi, pi\)"):
        M.FlatTorus(2).check_point(torch.tensor([0.0, 4.0]))


@pytest.mark.parametrize(
    "m", [M.Sphere(2), M.Euclidean(3), M.Product(M.Sphere(2), M.Euclidean(2))], ids=["sphere", "euclid", "product"]
)
def test_riemannian_adam_on_our_manifolds(m):
    g = torch.Generator().manual_seed(0)
    target = m.random_base(generator=g)
    p = geoopt.ManifoldParameter(m.random_base(generator=g), manifold=m)
    opt = geoopt.optim.RiemannianAdam([p], lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        loss = m.dist(p, target) ** 2
        loss.backward()
        opt.step()
    assert float(m.dist(p.detach(), target)) < 1e-3
    m.check_point(p.detach())


def test_manifolds_does_not_import_geoflow():
    import subprocess
    import sys

    code = "import sys, manifolds; assert 'geoflow' not in sys.modules, 'manifolds imported geoflow'"
    subprocess.run([sys.executable, "-c", code], check=True)
    import pathlib

    root = pathlib.Path(M.__file__).parent
    for f in root.rglob("*.py"):
        text = f.read_text()
        assert "import geoflow" not in text and "from geoflow" not in text, f


def test_euclidean_shape_option():
    """Euclidean(shape=...) reduces over all point dimensions and equals Euclidean(n) on flattened points."""
    img, vec = M.Euclidean(shape=(2, 3, 4), std=0.5), M.Euclidean(24, std=0.5)
    g = torch.Generator().manual_seed(0)
    x = img.random_base(7, generator=g, dtype=torch.float64)
    y = img.random_base(7, generator=g, dtype=torch.float64)
    assert x.shape == (7, 2, 3, 4) and img.dim == 24 and img.point_shape == (2, 3, 4)
    f = lambda a: a.reshape(7, 24)  # noqa: E731
    torch.testing.assert_close(img.base_log_prob(x), vec.base_log_prob(f(x)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(img.dist(x, y), vec.dist(f(x), f(y)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(img.inner(x, x, y), vec.inner(f(x), f(x), f(y)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(img.norm(x, y, keepdim=True).reshape(7), vec.norm(f(x), f(y)), rtol=1e-12, atol=1e-12)
    assert img.inner(x, y[0], keepdim=True).shape == (7, 1, 1, 1)
    assert repr(img) == "Euclidean(shape=(2, 3, 4), std=0.5)" and repr(vec) == "Euclidean(n=24, std=0.5)"
    with pytest.raises(TypeError, match="exactly one of `n` and `shape`"):
        M.Euclidean(3, shape=(3,))
    with pytest.raises(TypeError, match="exactly one"):
        M.Euclidean()
    with pytest.raises(TypeError, match="`shape`"):
        M.Euclidean(shape=())
    with pytest.raises((TypeError, ValueError), match="shape"):
        M.Euclidean(shape=(2, 0))
