"""The 2-D benchmark densities (eight_gaussians, moons, checkerboard): densities against scipy and
independent constructions, normalisation, samples against the density, dataset registration."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from geoflow.data import Checkerboard, EightGaussians, Moons, load_dataset
from manifolds.euclidean import Euclidean

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _grid(lo, hi, h):
    """Cell midpoints of [lo[0], hi[0]) x [lo[1], hi[1]) with step h, shape (nx, ny, 2)."""
    gx = torch.arange(lo[0] + h / 2, hi[0], h, dtype=F64)
    gy = torch.arange(lo[1] + h / 2, hi[1], h, dtype=F64)
    return torch.stack(torch.meshgrid(gx, gy, indexing="ij"), -1)


def _density_on(d, pts, chunk=4096):
    flat = pts.reshape(-1, 2)
    return torch.cat([d.log_prob(flat[i : i + chunk]).exp() for i in range(0, flat.shape[0], chunk)]).reshape(
        pts.shape[:-1]
    )


# ------------------------------------------------------------------ 8 Gaussians
def test_eight_gaussians_matches_torchcfm_construction():
    """torchcfm: centres 5 * [(1,0), (-1,0), (0,1), (0,-1), (+-1/sqrt2, +-1/sqrt2)], covariance sqrt(0.1) I."""
    d = EightGaussians.default()
    r = 1 / math.sqrt(2)
    centres = 5 * torch.tensor([(1, 0), (-1, 0), (0, 1), (0, -1), (r, r), (r, -r), (-r, r), (-r, -r)], dtype=F64)
    x = torch.randn(400, 2, generator=_gen(), dtype=F64) * 4
    comps = [stats.multivariate_normal(c.numpy(), math.sqrt(0.1) * np.eye(2)).logpdf(x.numpy()) for c in centres]
    ref = torch.from_numpy(np.logaddexp.reduce(np.stack(comps), axis=0) - math.log(8))
    torch.testing.assert_close(d.log_prob(x), ref, rtol=1e-12, atol=1e-12)
    assert d.std**2 == pytest.approx(math.sqrt(0.1), rel=1e-14)
    assert d.log_prob(x.float()).dtype == torch.float32


def test_eight_gaussians_integrates_to_one():
    d = EightGaussians.default()
    h = 0.05  # trapezoid/midpoint rule on a smooth, rapidly decaying density: spectrally accurate
    total = float(_density_on(d, _grid((-11, -11), (11, 11), h)).sum()) * h * h
    assert total == pytest.approx(1.0, abs=1e-10)


def test_eight_gaussians_samples():
    d = EightGaussians.default()
    x = d.sample(16000, generator=_gen(3), dtype=F64)
    assert x.shape == (16000, 2) and x.dtype == F64
    # nearest centre: uniform over the 8 components; squared distance / s^2 ~ chi^2(2)
    sq = (x.unsqueeze(1) - d.means).square().sum(-1)
    k = sq.argmin(1)
    assert stats.chisquare(np.bincount(k.numpy(), minlength=8)).pvalue > 1e-3
    assert stats.kstest((sq.min(1).values / d.std**2).numpy(), stats.chi2(2).cdf).pvalue > 1e-3
    # second moment E[x x^T] = (r^2 / 2 + s^2) I
    m2 = (x.T @ x / x.shape[0]).numpy()
    np.testing.assert_allclose(m2, (12.5 + math.sqrt(0.1)) * np.eye(2), atol=0.4)
    torch.testing.assert_close(d.sample(50, generator=_gen(1)), d.sample(50, generator=_gen(1)), rtol=0, atol=0)
    assert d.sample(5).dtype == torch.float32


# ------------------------------------------------------------------ moons
def _moons_quad(d, x):
    """log p(x) with scipy's adaptive quadrature of the defining integral (independent of Gauss-Legendre)."""
    s, a, b = d.std, d.scale, d.offset

    def f(t, which):
        cx = math.cos(t) if which == 0 else 1 - math.cos(t)
        cy = math.sin(t) if which == 0 else 0.5 - math.sin(t)
        sq = (x[0] - a * cx - b) ** 2 + (x[1] - a * cy - b) ** 2
        return math.exp(-0.5 * sq / s**2) / (2 * math.pi * s * s)

    total = sum(integrate.quad(f, 0, math.pi, args=(w,), epsabs=0, epsrel=1e-13, limit=200)[0] for w in (0, 1))
    return math.log(total / (2 * math.pi))


def test_moons_log_prob_against_adaptive_quadrature():
    d = Moons.default()
    pts = [(0.5, -0.25), (-4.0, -1.0), (2.0, -1.0), (-1.0, 2.0), (5.0, -1.0), (1.0, 1.0), (0.0, 4.5), (-3.0, -3.0)]
    got = d.log_prob(torch.tensor(pts, dtype=F64))
    ref = torch.tensor([_moons_quad(d, p) for p in pts], dtype=F64)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_moons_quadrature_converged():
    x = (torch.rand(600, 2, generator=_gen(1), dtype=F64) * 2 - 1) * 30  # log p down to about -1300
    ref = Moons(nodes=1024).log_prob(x)
    rel = lambda q: float(((Moons(nodes=q).log_prob(x) - ref).abs() / (1 + ref.abs())).max())  # noqa: E731
    assert rel(256) < 1e-12  # rounding level of log p
    assert rel(64) > 1e-10  # too few nodes far from the arcs: the check can fail


def test_moons_integrates_to_one_and_samples_match():
    d = Moons.default()
    h = 0.1
    lo, hi = (-10.0, -9.0), (11.0, 8.0)
    dens = _density_on(d, _grid(lo, hi, h))
    assert float(dens.sum()) * h * h == pytest.approx(1.0, abs=1e-9)
    # samples against the density: counts in 1 x 1 bins (probabilities by the midpoint rule inside each bin)
    x = d.sample(20000, generator=_gen(4), dtype=F64)
    nb = (int(hi[0] - lo[0]), int(hi[1] - lo[1]))
    probs = dens.reshape(nb[0], 10, nb[1], 10).sum((1, 3)).numpy() * h * h
    idx = np.floor(x.numpy() - np.array(lo)).astype(int)
    assert idx.min() >= 0 and (idx < np.array(nb)).all()
    counts = np.zeros(nb)
    np.add.at(counts, (idx[:, 0], idx[:, 1]), 1)
    exp = probs.ravel() * x.shape[0]
    big = exp >= 5
    obs = np.append(counts.ravel()[big], counts.ravel()[~big].sum())
    expected = np.append(exp[big], exp[~big].sum())
    stat = ((obs - expected) ** 2 / expected).sum()
    assert stats.chi2.sf(stat, df=len(obs) - 1) > 1e-3
    # the mean needs no quadrature: E c_out = 3 (0, 2/pi) - 1, E c_in = 3 (1, 1/2 - 2/pi) - 1, so E x = (1/2, -1/4)
    se = x.std(0) / math.sqrt(x.shape[0])
    assert bool(((x.mean(0) - torch.tensor([0.5, -0.25], dtype=F64)).abs() < 4 * se).all())


# ------------------------------------------------------------------ checkerboard
def test_checkerboard_values_and_integral():
    d = Checkerboard.default()
    pts = torch.tensor([[-3.9, -3.9], [-1.9, -3.9], [0.1, 0.1], [0.1, -0.1], [3.9, 3.9], [4.0, 3.0], [-4.1, -3.0],
                        [-4.0, -4.0], [2.0, 2.0]], dtype=F64)  # fmt: skip
    dark = -math.log(32.0)
    expected = torch.tensor([dark, -math.inf, dark, -math.inf, dark, -math.inf, -math.inf, dark, dark], dtype=F64)
    assert torch.equal(d.log_prob(pts), expected)
    lp = d.log_prob(_grid((-5, -5), (5, 5), 0.025))  # midpoint grid aligned with the squares: exact
    assert float(lp.exp().sum()) * 0.025**2 == pytest.approx(1.0, abs=1e-12)
    assert float(torch.isfinite(lp).double().mean()) == pytest.approx(32 / 100)


def test_checkerboard_matches_ffjord_recipe():
    """FFJORD: x1 = 4u - 2, x2 = u' - 2 b + (floor(x1) mod 2), b in {0, 1}, all times 2: every point is dark for us."""
    rng = np.random.default_rng(0)
    n = 5000
    x1 = rng.random(n) * 4 - 2
    x2 = rng.random(n) - rng.integers(0, 2, n) * 2 + np.floor(x1) % 2
    pts = torch.from_numpy(np.stack([x1, x2], 1) * 2)
    assert bool(torch.isfinite(Checkerboard.default().log_prob(pts)).all())
    assert not bool(torch.isfinite(Checkerboard.default().log_prob(pts + torch.tensor([2.0, 0.0], dtype=F64))).any())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_checkerboard_samples_agree_with_log_prob(dtype):
    d = Checkerboard.default()
    x = d.sample(16000, generator=_gen(5), dtype=dtype)
    assert x.shape == (16000, 2) and x.dtype == dtype
    assert bool(torch.isfinite(d.log_prob(x)).all())
    u = (x.double().numpy() + 4) / 2
    cell = np.floor(u).astype(int)
    counts = np.zeros((4, 4))
    np.add.at(counts, (cell[:, 0], cell[:, 1]), 1)
    dark = (np.add.outer(np.arange(4), np.arange(4)) % 2) == 0
    assert counts[~dark].sum() == 0
    assert stats.chisquare(counts[dark]).pvalue > 1e-3
    assert stats.kstest((u - cell).ravel(), "uniform").pvalue > 1e-3


# ------------------------------------------------------------------ checks and registration
@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: EightGaussians(radius=0.0), ValueError, "radius"),
        (lambda: EightGaussians(std=-1.0), ValueError, "std"),
        (lambda: EightGaussians(k=0), ValueError, "k"),
        (lambda: EightGaussians(k=2.0), TypeError, "k"),
        (lambda: Moons(noise=float("nan")), ValueError, "noise"),
        (lambda: Moons(offset=float("inf")), ValueError, "offset"),
        (lambda: Moons(nodes=4), ValueError, "nodes"),
        (lambda: Checkerboard(k=3), ValueError, "even"),
        (lambda: Checkerboard(k=4.0), TypeError, "k"),
        (lambda: Checkerboard(side=0), ValueError, "side"),
        (lambda: EightGaussians().log_prob(torch.zeros(3, 3)), ValueError, "trailing shape"),
        (lambda: Moons().sample(0), ValueError, "n"),
    ],
)
def test_argument_checks(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("name, cls", [("moons", Moons), ("eight_gaussians", EightGaussians),
                                       ("checkerboard", Checkerboard)])  # fmt: skip
def test_registered_in_load_dataset(name, cls):
    ds = load_dataset(name, n_samples=500, seed=3)
    assert isinstance(ds.manifold, Euclidean) and tuple(ds.manifold.point_shape) == (2,)
    assert isinstance(ds.meta["distribution"], cls) and "R^2" in ds.meta["units"]
    # the standard Gaussian base of Euclidean(2)
    assert float(ds.manifold.base_log_prob(torch.zeros(2))) == pytest.approx(-math.log(2 * math.pi), rel=1e-6)
    again = load_dataset(name, n_samples=500, seed=3)
    assert torch.equal(ds.train, again.train)
    assert bool(torch.isfinite(ds.log_prob(ds.train)).all())
