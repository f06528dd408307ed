"""Mesh datasets: shipped meshes, eigenfunction densities, seeded splits."""

import math

import numpy as np
import pytest
import torch

import trimesh  # noqa: F401  (a dependency of geoflow: a missing install must fail, not skip)

from geoflow.data.meshes import (  # noqa: E402
    MESHES,
    _midpoint_subdivide,
    eigenfunction_density,
    load_mesh,
    mesh_splits,
    sample_mesh_density,
    target_entropy,
    area_smooth_nll,
)
from manifolds.mesh import Mesh  # noqa: E402


@pytest.mark.parametrize("name,nv,nf,size", [("bunny", 2502, 5000, 1.0), ("spot", 2930, 5856, 1.0)])
def test_load_mesh(name, nv, nf, size):
    m = load_mesh(name, n_eigs=10)
    assert isinstance(m, Mesh)
    assert m.vertices.shape == (nv, 3) and m.faces.shape == (nf, 3)
    assert 1.0 < m.scale < 4.0  # the bunny is scaled by 1/250 (raw coordinates about +-250)
    # closed genus-0 surfaces: V - E + F = 2
    F = m.faces.numpy()
    e = np.unique(np.sort(np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]]), axis=1), axis=0)
    assert nv - len(e) + nf == 2
    with pytest.raises(ValueError, match="name"):
        load_mesh("dragon")


def test_midpoint_subdivision_keeps_surface():
    m = load_mesh("spot", n_eigs=5)
    V, F = _midpoint_subdivide(m.vertices.numpy(), m.faces.numpy())
    assert F.shape[0] == 4 * m.faces.shape[0]
    area = 0.5 * np.linalg.norm(np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]]), axis=1).sum()
    assert abs(area - m.total_area) < 1e-10 * m.total_area
    _, d = m.locate(torch.from_numpy(V))
    assert float(d.max()) < 1e-12


def test_eigenfunction_density_and_samples():
    V, F, p = eigenfunction_density("bunny", 10, upsample=0)
    assert p.shape == (F.shape[0],) and abs(float(p.sum()) - 1) < 1e-12 and float(p.min()) >= 0
    assert 0.1 < float((p > 0).double().mean()) < 0.9  # clipped at 0: a part of the surface carries mass
    # the face weights are the clipped face means of an eigenfunction of the Laplacian
    m = load_mesh("bunny", n_eigs=12)
    phi = m.eigenvectors[:, 10].numpy()
    phi = phi if phi[np.argmax(np.abs(phi))] > 0 else -phi
    w = np.maximum(phi[F.numpy()].mean(1), 0)
    np.testing.assert_allclose(p.numpy(), w / w.sum(), atol=1e-6 * float(p.max()))
    x = sample_mesh_density("bunny", 10, 20000, generator=torch.Generator().manual_seed(0), upsample=0)
    assert x.shape == (20000, 3) and x.dtype == torch.float64
    m.check_point(x)
    face, _ = m.locate(x)
    counts = torch.bincount(face, minlength=F.shape[0]).double()
    assert float(counts[p == 0].sum()) <= 5  # (points on edges of zero-mass faces only)
    big = p > 5 / 20000
    chi2 = float(((counts[big] - 20000 * p[big]) ** 2 / (20000 * p[big])).sum())
    dof = int(big.sum())
    assert chi2 < dof + 6 * math.sqrt(2 * dof)


def test_target_entropy_against_monte_carlo():
    # H = -E_p[log p]: the closed form over faces against a Monte Carlo mean of -log p(x) at target samples,
    # and below the uniform density's log(area) (the maximum entropy on the surface)
    H = target_entropy("bunny", 10, upsample=0)
    V, F, p = eigenfunction_density("bunny", 10, upsample=0)
    m = load_mesh("bunny", n_eigs=12)
    x = sample_mesh_density("bunny", 10, 40000, generator=torch.Generator().manual_seed(1), upsample=0)
    face, _ = m.locate(x)
    dens = p / m.face_areas.double()
    nll = -dens[face].log()
    se = float(nll.std()) / math.sqrt(nll.numel())
    assert abs(float(nll.mean()) - H) < 4 * se + 1e-3
    assert H < math.log(m.total_area) - 0.5


def test_area_smooth_nll_against_monte_carlo():
    # E_p[-log q] for q = w_f / sum_g w_g A_g (w_f the per-face weight, P_f = w_f / sum w): the closed form
    # against a Monte Carlo mean of -log q(x) at target samples; above the entropy (Jensen), below uniform
    ce = area_smooth_nll("bunny", 10, upsample=0)
    H = target_entropy("bunny", 10, upsample=0)
    V, F, p = eigenfunction_density("bunny", 10, upsample=0)
    m = load_mesh("bunny", n_eigs=12)
    A = m.face_areas.double()
    q = p / (p * A).sum()
    torch.testing.assert_close((q * A).sum(), torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-12)
    x = sample_mesh_density("bunny", 10, 40000, generator=torch.Generator().manual_seed(2), upsample=0)
    face, _ = m.locate(x)
    nll = -q[face].log()
    se = float(nll.std()) / math.sqrt(nll.numel())
    assert abs(float(nll.mean()) - ce) < 4 * se + 1e-3
    assert H + 0.01 < ce < math.log(m.total_area)


def test_mesh_splits_seeded():
    tr, va, te = mesh_splits("spot", 10, seed=0, n=1000, upsample=0)
    assert tr.shape == (800, 3) and va.shape == (100, 3) and te.shape == (100, 3) and tr.dtype == torch.float32
    tr2, _, te2 = mesh_splits("spot", 10, seed=0, n=1000, upsample=0)
    assert torch.equal(tr, tr2) and torch.equal(te, te2)
    tr3, _, _ = mesh_splits("spot", 10, seed=1, n=1000, upsample=0)
    assert not torch.equal(tr, tr3)
    with pytest.raises(ValueError, match="`k`"):
        mesh_splits("spot", 0, seed=0)
    with pytest.raises(TypeError, match="seed"):
        mesh_splits("spot", 10, seed=None)
    with pytest.raises(ValueError, match="upsample"):
        eigenfunction_density("spot", 10, upsample=9)


def test_shipped_files_listed_with_sha():
    import hashlib
    from importlib import resources

    text = resources.files("geoflow.data").joinpath("files/PROVENANCE.md").read_text()
    for file, _, sha in MESHES.values():
        data = resources.files("geoflow.data").joinpath("files").joinpath(file).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha
        assert sha in text and file in text
