"""Synthetic densities: exact normalisation by quadrature, samples against the density, Wood's vMF sampler."""

import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from geoflow.data import CheckerboardTorus, VonMisesFisherMixture, WrappedNormalTorusMixture, sample_von_mises_fisher
from manifolds.sphere import Sphere
from manifolds.torus import FlatTorus

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _sphere_point(z, phi):
    r = np.sqrt(np.clip(1 - z**2, 0, None))
    return torch.from_numpy(np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1))


def _mean_resultant_length(kappa, m=3):
    """A_m(kappa) = I_{m/2}(kappa) / I_{m/2-1}(kappa) (scipy's scaled Bessel functions)."""
    return float(special.ive(m / 2, kappa) / special.ive(m / 2 - 1, kappa))


def _sphere_bin_probs(log_prob, nz, nphi, nodes=16):
    """Probability of each (z, phi) bin of S^2 (equal-area bins): Gauss-Legendre inside each bin."""
    t, w = np.polynomial.legendre.leggauss(nodes)
    z_edges, p_edges = np.linspace(-1, 1, nz + 1), np.linspace(-np.pi, np.pi, nphi + 1)
    zc, zh = (z_edges[:-1] + z_edges[1:]) / 2, np.diff(z_edges) / 2
    pc, ph = (p_edges[:-1] + p_edges[1:]) / 2, np.diff(p_edges) / 2
    z = zc[:, None] + zh[:, None] * t  # (nz, nodes)
    p = pc[:, None] + ph[:, None] * t  # (nphi, nodes)
    Z, P = np.meshgrid(z.ravel(), p.ravel(), indexing="ij")
    dens = log_prob(_sphere_point(Z, P)).exp().numpy().reshape(nz, nodes, nphi, nodes)
    return np.einsum("aibj,i,j->ab", dens, w, w) * zh[:, None] * ph[None, :]


def _torus_bin_probs(log_prob, nb, nodes=12):
    t, w = np.polynomial.legendre.leggauss(nodes)
    edges = np.linspace(-np.pi, np.pi, nb + 1)
    c, h = (edges[:-1] + edges[1:]) / 2, np.diff(edges) / 2
    a = (c[:, None] + h[:, None] * t).ravel()
    A, B = np.meshgrid(a, a, indexing="ij")
    dens = log_prob(torch.from_numpy(np.stack([A, B], -1))).exp().numpy().reshape(nb, nodes, nb, nodes)
    return np.einsum("aibj,i,j->ab", dens, w, w) * h[:, None] * h[None, :]


def _chi2_pvalue(counts, probs, min_expected=5.0):
    """Pearson chi-square p-value, pooling bins whose expected count is below ``min_expected``."""
    counts, expected = counts.ravel().astype(float), probs.ravel() * counts.sum()
    small = expected < min_expected
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    stat = ((obs - exp) ** 2 / exp).sum()
    return float(stats.chi2.sf(stat, df=len(obs) - 1))


# ------------------------------------------------------------------ vMF density
@pytest.mark.parametrize("kappa", [1e-3, 0.5, 10.0, 300.0])
def test_vmf_log_prob_matches_textbook_formula(kappa):
    mu = torch.tensor([0.3, -0.5, 0.8], dtype=F64)
    mu = mu / mu.norm()
    d = VonMisesFisherMixture(mu[None], [kappa])
    x = Sphere(2).random_base(500, generator=_gen(), dtype=F64)
    ref = math.log(kappa / (4 * math.pi * math.sinh(kappa))) + kappa * (x @ mu)
    torch.testing.assert_close(d.log_prob(x), ref, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kappa", [1e4, 1e6])
def test_vmf_log_prob_stable_for_large_kappa(kappa, dtype):
    mu = torch.tensor([[0.0, 0.0, 1.0]])
    d = VonMisesFisherMixture(mu, [kappa])
    theta = torch.tensor([0.0, 1e-3, 0.01, 0.5, math.pi], dtype=F64)
    x = torch.stack([theta.sin(), torch.zeros_like(theta), theta.cos()], -1)
    lp = d.log_prob(x.to(dtype))
    assert lp.dtype == dtype and bool(torch.isfinite(lp).all())
    # log(kappa / (2 pi (1 - e^{-2 kappa}))) - kappa (1 - cos theta), with 1 - cos = 2 sin^2(theta/2)
    ref = math.log(kappa / (2 * math.pi)) - kappa * 2 * (theta / 2).sin() ** 2
    torch.testing.assert_close(lp.to(F64), ref, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)


def test_vmf_kappa_zero_is_uniform():
    d = VonMisesFisherMixture([[1.0, 0.0, 0.0]], [0.0])
    x = Sphere(2).random_base(10, generator=_gen(), dtype=F64)
    torch.testing.assert_close(d.log_prob(x), torch.full((10,), -math.log(4 * math.pi), dtype=F64))
    y = d.sample(20000, generator=_gen(), dtype=F64)
    assert float(y.mean(0).norm()) < 0.03


def test_vmf_mixture_integrates_to_one_on_s2():
    d = VonMisesFisherMixture.default()
    z, wz = np.polynomial.legendre.leggauss(200)
    phi = np.linspace(-np.pi, np.pi, 400, endpoint=False)
    Z, P = np.meshgrid(z, phi, indexing="ij")
    dens = d.log_prob(_sphere_point(Z, P)).exp().numpy()
    total = (dens.sum(1) * (2 * np.pi / len(phi)) * wz).sum()  # dA = dz dphi
    assert abs(total - 1) < 1e-9


def test_vmf_mixture_samples_match_density_histogram_and_moments():
    d = VonMisesFisherMixture.default()
    n = 20000
    x = d.sample(n, generator=_gen(1), dtype=F64)
    Sphere(2).check_point(x)
    nz, nphi = 10, 20
    probs = _sphere_bin_probs(d.log_prob, nz, nphi)
    assert abs(probs.sum() - 1) < 1e-6
    zb = np.clip(((x[:, 2].numpy() + 1) / 2 * nz).astype(int), 0, nz - 1)
    pb = np.clip(((np.arctan2(x[:, 1].numpy(), x[:, 0].numpy()) + np.pi) / (2 * np.pi) * nphi).astype(int), 0, nphi - 1)
    counts = np.zeros((nz, nphi))
    np.add.at(counts, (zb, pb), 1)
    assert _chi2_pvalue(counts, probs) > 1e-3
    # first moment: E[x] = sum_k w_k A(kappa_k) mu_k
    a = torch.tensor([_mean_resultant_length(k) for k in d.kappas.tolist()], dtype=F64)
    mean_ref = (d.weights * a) @ d.means
    se = x.std(0) / math.sqrt(n)
    assert bool(((x.mean(0) - mean_ref).abs() < 5 * se).all())


def test_vmf_mixture_sample_dtype_and_reproducibility():
    d = VonMisesFisherMixture.default()
    a = d.sample(100, generator=_gen(3))
    assert a.dtype == torch.float32 and a.shape == (100, 3)
    Sphere(2).check_point(a)
    assert torch.equal(a, d.sample(100, generator=_gen(3)))
    assert not torch.equal(a, d.sample(100, generator=_gen(4)))


# ------------------------------------------------------------------ Wood's sampler
@pytest.mark.parametrize("kappa", [0.1, 1.0, 10.0, 100.0, 1e4])
def test_wood_sampler_mean_resultant_length_on_s2(kappa):
    n = 20000
    mu = torch.tensor([0.6, 0.0, -0.8], dtype=F64)
    x = sample_von_mises_fisher(mu.expand(n, 3), kappa, generator=_gen(), dtype=F64)
    Sphere(2).check_point(x)
    a = 1 / math.tanh(kappa) - 1 / kappa  # A_3(kappa) = coth kappa - 1/kappa
    assert a == pytest.approx(_mean_resultant_length(kappa), rel=1e-9)
    w = x @ mu
    var_w = 1 - 2 * a / kappa - a * a  # E[w^2] = 1 - 2 A / kappa on S^2
    se = math.sqrt(max(var_w, 1e-30) / n)
    assert abs(float(w.mean()) - a) < 5 * se
    # the mean resultant length |mean(x)| adds the transverse noise sqrt(E|x_perp|^2 / n) at most
    r_bar = float(x.mean(0).norm())
    assert abs(r_bar - a) < 5 * se + 3 * math.sqrt(2 * a / kappa / n)


@pytest.mark.parametrize("kappa", [0.5, 5.0, 1000.0])
def test_wood_sampler_cosine_has_exact_distribution(kappa):
    mu = torch.tensor([0.0, 1.0, 0.0], dtype=F64)
    w = (sample_von_mises_fisher(mu.expand(5000, 3), kappa, generator=_gen(7), dtype=F64) @ mu).numpy()

    def cdf(t):  # density of w on [-1, 1] is proportional to exp(kappa w)
        return (np.exp(kappa * (t - 1)) - np.exp(-2 * kappa)) / (1 - np.exp(-2 * kappa))

    assert stats.kstest(w, cdf).pvalue > 1e-3


@pytest.mark.parametrize("m", [2, 4, 10])
def test_wood_sampler_other_dimensions(m):
    kappa, n = 3.0, 20000
    mu = torch.zeros(m, dtype=F64)
    mu[-1] = 1.0
    x = sample_von_mises_fisher(mu.expand(n, m), kappa, generator=_gen(), dtype=F64)
    Sphere(m - 1).check_point(x)
    w = x[:, -1]
    a = _mean_resultant_length(kappa, m)
    assert abs(float(w.mean()) - a) < 5 * float(w.std()) / math.sqrt(n)


def test_wood_sampler_batched_means_and_kappas():
    mu = torch.tensor([[1.0, 0, 0], [0, 0, -1.0]], dtype=F64)
    kappa = torch.tensor([1e3, 1e5], dtype=F64)
    x = sample_von_mises_fisher(mu.repeat(2000, 1), kappa.repeat(2000), generator=_gen())
    assert x.dtype == F64 and x.shape == (4000, 3)
    w = (x * mu.repeat(2000, 1)).sum(-1)
    assert float(w[0::2].mean()) == pytest.approx(1 - 1e-3, abs=1e-4)
    assert float(w[1::2].mean()) == pytest.approx(1 - 1e-5, abs=1e-6)


def test_vmf_argument_validation():
    with pytest.raises(ValueError, match="kappa"):
        sample_von_mises_fisher(torch.tensor([1.0, 0, 0]), -1.0)
    with pytest.raises(ValueError, match="non-zero"):
        sample_von_mises_fisher(torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="kappas"):
        VonMisesFisherMixture([[1.0, 0, 0]], [-2.0])
    with pytest.raises(ValueError, match=r"\(K, 3\)"):
        VonMisesFisherMixture([[1.0, 0]], [2.0])
    with pytest.raises(ValueError, match="weights"):
        VonMisesFisherMixture([[1.0, 0, 0], [0, 1.0, 0]], [1.0, 2.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="trailing shape"):
        VonMisesFisherMixture.default().log_prob(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="n"):
        VonMisesFisherMixture.default().sample(1.5)


# ------------------------------------------------------------------ wrapped normal
def test_wrapped_normal_integrates_to_one_on_t2():
    d = WrappedNormalTorusMixture.default()
    g = np.linspace(-np.pi, np.pi, 256, endpoint=False)  # periodic trapezoid rule: spectral accuracy
    A, B = np.meshgrid(g, g, indexing="ij")
    dens = d.log_prob(torch.from_numpy(np.stack([A, B], -1))).exp().numpy()
    assert abs(dens.sum() * (2 * np.pi / 256) ** 2 - 1) < 1e-10


def test_wrapped_normal_truncation_bound_against_long_sum():
    means, scales = [[0.3, -3.0, 2.0]], [[2.5, 0.2, 4.0]]
    d = WrappedNormalTorusMixture(means, scales)
    assert d.n_wrap >= 2 and d.log_prob_error_bound <= 3e-16
    x = FlatTorus(3).random_base(300, generator=_gen(), dtype=F64)
    j = np.arange(-60, 61)
    diff = (x.numpy()[:, :, None] - np.array(means)[0][None, :, None] + 2 * np.pi * j)  # no wrapping at all
    s = np.array(scales)[0][None, :, None]
    ref = np.log((np.exp(-0.5 * (diff / s) ** 2) / (s * np.sqrt(2 * np.pi))).sum(-1)).sum(-1)
    err = np.abs(d.log_prob(x).numpy() - ref)
    assert err.max() < d.log_prob_error_bound + 1e-13
    # a looser tolerance keeps fewer terms, and the bound still holds
    loose = WrappedNormalTorusMixture(means, scales, wrap_tol=1e-3)
    assert loose.n_wrap < d.n_wrap
    assert np.abs(loose.log_prob(x).numpy() - ref).max() <= loose.log_prob_error_bound


def test_wrapped_normal_samples_match_density_histogram():
    d = WrappedNormalTorusMixture.default()
    x = d.sample(20000, generator=_gen(2), dtype=F64)
    FlatTorus(2).check_point(x)
    nb = 16
    probs = _torus_bin_probs(d.log_prob, nb)
    assert abs(probs.sum() - 1) < 1e-8
    idx = np.clip(((x.numpy() + np.pi) / (2 * np.pi) * nb).astype(int), 0, nb - 1)
    counts = np.zeros((nb, nb))
    np.add.at(counts, (idx[:, 0], idx[:, 1]), 1)
    assert _chi2_pvalue(counts, probs) > 1e-3


def test_wrapped_normal_float32_on_torus_and_periodic():
    d = WrappedNormalTorusMixture.default()
    x = d.sample(5000, generator=_gen())
    assert x.dtype == torch.float32
    FlatTorus(2).check_point(x)
    assert float(x.max()) < math.pi
    y = x.double()
    torch.testing.assert_close(d.log_prob(y + 2 * math.pi), d.log_prob(y), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(d.log_prob(x), d.log_prob(y).float(), rtol=1e-4, atol=1e-4)


def test_wrapped_normal_validation():
    with pytest.raises(ValueError, match="scales"):
        WrappedNormalTorusMixture([[0.0, 0.0]], [[0.0, 1.0]])
    with pytest.raises(ValueError, match="broadcast"):
        WrappedNormalTorusMixture([[0.0, 0.0]], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="wrap_tol"):
        WrappedNormalTorusMixture([[0.0, 0.0]], 1.0, wrap_tol=0.0)
    with pytest.raises(ValueError, match="wrapping terms"):
        WrappedNormalTorusMixture([[0.0, 0.0]], 1e5)


# ------------------------------------------------------------------ checkerboard
def test_checkerboard_values_and_integral():
    d = CheckerboardTorus()
    h = math.pi / 2
    pts = torch.tensor(
        [[-math.pi + 0.1, -math.pi + 0.1], [-math.pi + h + 0.1, -math.pi + 0.1], [0.1, 0.1], [0.1, -0.1], [3.0, 3.0]],
        dtype=F64,
    )
    dark = math.log(2 / (4 * math.pi**2))
    expected = torch.tensor([dark, -math.inf, dark, -math.inf, dark], dtype=F64)
    assert torch.equal(d.log_prob(pts), expected)
    assert torch.equal(d.log_prob(pts + 2 * math.pi), expected)
    # midpoint rule on a grid aligned with the squares is exact for a piecewise-constant density
    g = (torch.arange(400, dtype=F64) + 0.5) * (2 * math.pi / 400) - math.pi
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1)
    lp = d.log_prob(grid)
    assert float(torch.isfinite(lp).double().mean()) == 0.5
    assert float(lp.exp().sum()) * (2 * math.pi / 400) ** 2 == pytest.approx(1.0, abs=1e-12)
    assert d.log_prob(grid.float()).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_checkerboard_samples_agree_with_log_prob(dtype):
    d = CheckerboardTorus()
    n = 16000
    x = d.sample(n, generator=_gen(5), dtype=dtype)
    assert x.shape == (n, 2) and x.dtype == dtype
    FlatTorus(2).check_point(x)
    assert bool(torch.isfinite(d.log_prob(x)).all())  # every sample lies on a dark square
    u = (x.double().numpy() + np.pi) / (np.pi / 2)
    cell = np.clip(np.floor(u).astype(int), 0, 3)
    counts = np.zeros((4, 4))
    np.add.at(counts, (cell[:, 0], cell[:, 1]), 1)
    dark = (np.add.outer(np.arange(4), np.arange(4)) % 2) == 0
    assert counts[~dark].sum() == 0
    assert stats.chisquare(counts[dark]).pvalue > 1e-3  # uniform over the 8 dark squares
    frac = (u - cell).ravel()  # uniform inside each square
    assert stats.kstest(frac, "uniform").pvalue > 1e-3


def test_checkerboard_validation():
    with pytest.raises(ValueError, match="even"):
        CheckerboardTorus(k=3)
    with pytest.raises(TypeError, match="k"):
        CheckerboardTorus(k=4.0)
