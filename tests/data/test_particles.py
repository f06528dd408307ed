"""DW4 / Lennard-Jones energies, forces, shipped data and the MCMC sampler (geoflow.data.particles)."""

import hashlib
import io
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

import geoflow.data.particles as particles
from geoflow.data.particles import (
    dw4_energy,
    dw4_forces,
    lj_energy,
    lj_forces,
    load_dw4,
    load_lj13,
    sample_lj,
)

F64 = torch.float64
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
FILES = Path(particles.__file__).parent / "files"
needs_shared = pytest.mark.skipif(not (SHARED / "dw4").is_dir(), reason="original data files (../shared/data) absent")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def ref_dw4(x, a=0.0, b=-4.0, c=0.9, d0=4.0, tau=1.0):
    """Koehler et al.'s form, literally: 1/(2 tau) sum over i != j."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros(x.shape[0])
    for i, j in itertools.permutations(range(x.shape[1]), 2):
        r = np.linalg.norm(x[:, i] - x[:, j], axis=-1) - d0
        out += a * r + b * r**2 + c * r**4
    return out / (2 * tau)


def ref_lj(x, eps=1.0, rm=1.0, k=1.0, ordered=True):
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros(x.shape[0])
    pairs = itertools.permutations(range(x.shape[1]), 2) if ordered else itertools.combinations(range(x.shape[1]), 2)
    for i, j in pairs:
        d = np.linalg.norm(x[:, i] - x[:, j], axis=-1)
        out += eps * ((rm / d) ** 12 - 2 * (rm / d) ** 6)
    return out + 0.5 * k * ((x - x.mean(1, keepdims=True)) ** 2).sum((1, 2))


def finite_diff_grad(f, x, h=1e-6):
    g = torch.zeros_like(x)
    flat, gflat = x.reshape(x.shape[0], -1), g.reshape(x.shape[0], -1)
    for k in range(flat.shape[1]):
        e = torch.zeros_like(flat)
        e[:, k] = h
        gflat[:, k] = (f((flat + e).reshape(x.shape)) - f((flat - e).reshape(x.shape))) / (2 * h)
    return g


def lj_cloud(B, n, g, spacing=1.1):
    """Configurations without overlaps: a jittered cubic grid."""
    side = math.ceil(n ** (1 / 3))
    grid = torch.tensor(list(itertools.product(range(side), repeat=3))[:n], dtype=F64) * spacing
    return grid + 0.1 * torch.randn(B, n, 3, generator=g, dtype=F64)


def random_orthogonal(D, g):
    Q, R = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=F64))
    return Q * torch.sign(torch.diagonal(R))


def test_public_names():
    for name in particles.__all__:
        assert getattr(particles, name) is not None
    assert particles.DW4_SHAPE == (4, 2) and particles.LJ13_SHAPE == (13, 3) and particles.LJ55_SHAPE == (55, 3)


# ---------------------------------------------------------------------------- energies
def test_dw4_energy_matches_definition_and_is_invariant():
    g = gen(1)
    x = 3 * torch.randn(64, 4, 2, generator=g, dtype=F64)
    np.testing.assert_allclose(dw4_energy(x).numpy(), ref_dw4(x), rtol=1e-12, atol=1e-10)
    kw = dict(a=0.3, b=-2.0, c=0.5, d0=3.0, tau=2.0)
    np.testing.assert_allclose(dw4_energy(x, **kw).numpy(), ref_dw4(x, **kw), rtol=1e-12, atol=1e-10)
    Q = random_orthogonal(2, g)
    y = x[:, torch.randperm(4, generator=g)] @ Q.T + torch.randn(64, 1, 2, generator=g, dtype=F64)
    torch.testing.assert_close(dw4_energy(y), dw4_energy(x))
    # the minimum of one pair: d = d0 +- sqrt(-b / (2 c)) = 4 +- 1.49, depth -b^2/(4c)
    two = torch.tensor([[[0.0, 0.0], [4.0 + math.sqrt(4 / 1.8), 0.0]]], dtype=F64)
    torch.testing.assert_close(dw4_energy(two), torch.tensor([-16 / 3.6], dtype=F64))


@pytest.mark.parametrize("ordered", [True, False])
def test_lj_energy_matches_definition(ordered):
    g = gen(2)
    x = lj_cloud(16, 13, g)
    ref = ref_lj(x, ordered=ordered)
    np.testing.assert_allclose(lj_energy(x, ordered_pairs=ordered).numpy(), ref, rtol=1e-12, atol=1e-9)
    ref2 = ref_lj(x, eps=0.7, rm=1.2, k=0.5, ordered=ordered)
    got = lj_energy(x, eps=0.7, rm=1.2, oscillator_scale=0.5, ordered_pairs=ordered)
    np.testing.assert_allclose(got.numpy(), ref2, rtol=1e-12, atol=1e-9)
    no_osc = ref_lj(x, k=0.0, ordered=ordered)
    np.testing.assert_allclose(lj_energy(x, oscillator=False, ordered_pairs=ordered).numpy(), no_osc, rtol=1e-12)
    # a pair at rm has energy -eps per ordered pair: -2 eps for ordered pairs, -eps otherwise
    pair = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]], dtype=F64)
    assert float(lj_energy(pair, oscillator=False, ordered_pairs=ordered)) == pytest.approx(-2.0 if ordered else -1.0)


def test_lj_energy_invariances_and_float32():
    g = gen(3)
    x = lj_cloud(8, 13, g)
    Q = random_orthogonal(3, g)
    y = x[:, torch.randperm(13, generator=g)] @ Q.T + 5.0
    torch.testing.assert_close(lj_energy(y), lj_energy(x))
    torch.testing.assert_close(lj_energy(x.float()).double(), lj_energy(x), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("which", ["dw4", "lj13", "lj55"])
def test_forces_against_finite_differences_and_autograd(which):
    g = gen(4)
    if which == "dw4":
        x = 2.5 * torch.randn(3, 4, 2, generator=g, dtype=F64)
        energy, forces = dw4_energy, dw4_forces
        kw_list = [{}, dict(a=0.2, b=-3.0, c=0.7, d0=3.5, tau=1.5)]
    else:
        x = lj_cloud(2, 13 if which == "lj13" else 55, g)
        energy, forces = lj_energy, lj_forces
        kw_list = [{}, dict(ordered_pairs=False, oscillator_scale=0.3, eps=0.8, rm=1.1)]
    for kw in kw_list:
        F = forces(x, **kw)
        fd = -finite_diff_grad(lambda z: energy(z, **kw), x)
        torch.testing.assert_close(F, fd, atol=1e-5 * max(1.0, float(fd.abs().max())), rtol=1e-6)
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(xg, **kw).sum(), xg)
        torch.testing.assert_close(F, -grad, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(F.sum(-2), torch.zeros_like(F.sum(-2)), atol=1e-9, rtol=0)  # no net force


def test_dw4_coinciding_particles_are_finite():
    x = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [0.0, 5.0]]], dtype=F64, requires_grad=True)
    E = dw4_energy(x)
    (grad,) = torch.autograd.grad(E.sum(), x)
    assert torch.isfinite(E).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(dw4_forces(x.detach()), -grad)


def test_energy_bad_inputs():
    with pytest.raises(ValueError, match="n_particles"):
        lj_energy(torch.randn(5, 39))  # flat rows: 39 is not a dimension
    with pytest.raises(ValueError, match="n_particles"):
        dw4_energy(torch.randn(8))
    with pytest.raises(TypeError, match="x"):
        dw4_energy(torch.zeros(3, 4, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="eps"):
        lj_energy(torch.randn(2, 13, 3), eps=-1.0)
    with pytest.raises(ValueError, match="tau"):
        dw4_energy(torch.randn(2, 4, 2), tau=0.0)
    with pytest.raises(TypeError, match="ordered_pairs"):
        lj_forces(torch.randn(2, 13, 3), ordered_pairs=1)


# ---------------------------------------------------------------------------- shipped data
def test_lj13_data_follow_the_ordered_pair_convention():
    x = load_lj13("test", dtype=F64)
    assert x.shape == (5000, 13, 3)
    E = lj_energy(x)
    # README / our computation on the full split: mean -43.13, std about 7.0
    assert -44.0 < float(E.mean()) < -42.3 and 6.0 < float(E.std()) < 8.0
    # virial (Stein) identity at the true energy: E[(x - x_mean) . grad E] = dof = 3 (n - 1) = 36
    c = x - x.mean(1, keepdim=True)
    vir = -(c * lj_forces(x)).sum((1, 2))
    assert abs(float(vir.mean()) - 36.0) < 4 * float(vir.std()) / math.sqrt(5000) + 0.3
    # the sum over i < j (bgflow / eacf) violates it badly
    vir_half = -(c * lj_forces(x, ordered_pairs=False)).sum((1, 2))
    assert abs(float(vir_half.mean()) - 36.0) > 5.0  # 27.1
    val = load_lj13("val")
    assert val.shape == (2000, 13, 3) and val.dtype == torch.float32
    assert -44.5 < float(lj_energy(val.double()).mean()) < -41.5
    # no row of val is a test row (rotation/permutation-free comparison of raw rows)
    rows = {r.tobytes() for r in load_lj13("test").numpy()}
    assert not any(r.tobytes() in rows for r in val.numpy())
    assert torch.allclose(x.mean(1), torch.zeros(5000, 3, dtype=F64), atol=1e-12)


def test_dw4_loader_modes_and_energies():
    counts = particles._load_npy("dw4_counts.npy").astype(np.int64)
    assert counts.sum(0).tolist() == [100000, 10000, 10000]
    assert ((counts > 0).sum(0)).tolist() == [30091, 7701, 7750]  # distinct rows per split
    assert int(((counts[:, 0] > 0) & (counts[:, 2] > 0)).sum()) == 6702  # distinct train-test overlap
    assert int(counts[counts[:, 0] > 0, 2].sum()) == 8889  # test rows that occur in train
    splits = {s: load_dw4(s, dtype=F64) for s in ("train", "val", "test")}
    assert [len(v) for v in splits.values()] == [100565, 9805, 9630]
    for v in splits.values():
        assert v.shape[1:] == (4, 2)
        assert float(v.mean(1).abs().max()) < 1e-12  # centred
        # Boltzmann mean energy of the data (README: -22.45 test, -22.48 train)
        assert abs(float(dw4_energy(v).mean()) + 22.47) < 0.25
    # disjoint: no configuration in two splits (compare centred rows exactly)
    keys = {s: {r.tobytes() for r in load_dw4(s, mode="unique").numpy()} for s in splits}
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["val"] and not keys["val"] & keys["test"]
    assert [len(k) for k in keys.values()] == [26755, 2676, 2676]
    # the distinct rows alone are biased towards high energy (why "disjoint" keeps multiplicities)
    assert float(dw4_energy(load_dw4("train", mode="unique", dtype=F64)).mean()) > -21.8
    orig = load_dw4("test", mode="original", center=False, dtype=F64)
    assert orig.shape == (10000, 4, 2) and float(orig.mean(1).abs().max()) > 10.0  # the raw files are not centred
    assert abs(float(dw4_energy(orig).mean()) + 22.450) < 1e-3
    with pytest.raises(ValueError, match="mode"):
        load_dw4("train", mode="dedup")
    with pytest.raises(ValueError, match="split"):
        load_dw4("tests")
    with pytest.raises(ValueError, match="sample_lj"):
        load_lj13("train")


def test_packaged_files_checked():
    for name, (rows, sha) in particles._SHIPPED.items():
        data = (FILES / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha
        assert np.load(io.BytesIO(data), allow_pickle=False).shape[0] == rows
        assert f"`{name}`" in (FILES / "PROVENANCE.md").read_text()


@needs_shared
def test_shipped_files_rebuild_from_the_originals():
    built = particles._build_files(particles._read_sources(SHARED))
    for name, arr in built.items():
        np.testing.assert_array_equal(arr, particles._load_npy(name))
    # "original" reproduces the published test split as a multiset, bit for bit
    raw = np.load(SHARED / "dw4" / "test_split_DW4.npy")
    got = load_dw4("test", mode="original", center=False).numpy().reshape(-1, 8)
    counts_got = np.unique(got, axis=0, return_counts=True)[1]
    np.testing.assert_array_equal(counts_got, np.unique(raw, axis=0, return_counts=True)[1])
    np.testing.assert_array_equal(np.unique(got, axis=0), np.unique(raw, axis=0))
    torch.testing.assert_close(load_dw4("val", path=SHARED / "dw4"), load_dw4("val"))
    full = load_lj13("test", path=SHARED / "lj13" / "test_split_LJ13-1000.npy")
    assert full.shape == (10000, 13, 3)
    torch.testing.assert_close(full[:5000], load_lj13("test"))


# ---------------------------------------------------------------------------- MCMC
def test_sample_lj13_matches_test_split():
    x, stats = sample_lj(13, 256, seed=0, n_chains=128, burn_in=2000, thin=100, return_stats=True, dtype=F64)
    assert x.shape == (256, 13, 3) and x.dtype == F64
    assert float(x.mean(1).abs().max()) < 1e-12
    E = lj_energy(x)
    torch.testing.assert_close(E, stats.energy, rtol=1e-9, atol=1e-9)  # rotation/permutation kept the energy
    data = lj_energy(load_lj13("test", dtype=F64))
    assert 0.4 < stats.acceptance < 0.75 and 0.3 < stats.scale_acceptance < 0.9
    assert abs(float(E.mean()) - float(data.mean())) < 1.6  # 3.5 standard errors (std 7, 256 samples)
    assert ks_2samp(E.numpy(), data.numpy()).statistic < 0.12
    # negative control: the sum over i < j (half the LJ term) gives a clearly different density
    y = sample_lj(13, 64, seed=0, n_chains=64, burn_in=400, thin=1, ordered_pairs=False, dtype=F64)
    assert ks_2samp(lj_energy(y).numpy(), data.numpy()).statistic > 0.5


def test_sample_lj_reproducible_and_options():
    a = sample_lj(13, 6, seed=3, n_chains=3, burn_in=20, thin=5)
    b = sample_lj(13, 6, seed=3, n_chains=3, burn_in=20, thin=5)
    c = sample_lj(13, 6, seed=4, n_chains=3, burn_in=20, thin=5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32 and a.shape == (6, 13, 3)
    m = sample_lj(5, 4, seed=0, n_chains=2, burn_in=10, thin=2, method="metropolis")
    assert m.shape == (4, 5, 3) and torch.isfinite(m).all()
    init = lj_cloud(2, 13, gen(5))
    s = sample_lj(13, 2, seed=0, burn_in=0, thin=1, init=init)
    assert s.shape == (2, 13, 3)
    with pytest.raises(ValueError, match="method"):
        sample_lj(13, 2, seed=0, method="hmc")
    with pytest.raises(ValueError, match="init"):
        sample_lj(13, 2, seed=0, init=torch.randn(2, 12, 3))
    with pytest.raises(ValueError, match="n_samples"):
        sample_lj(13, 0, seed=0)
    with pytest.raises(TypeError, match="seed"):
        sample_lj(13, 2, seed=None)
