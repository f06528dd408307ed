"""Triangle-mesh datasets: the Stanford bunny and Spot the cow with eigenfunction densities.

Meshes ship in ``geoflow/data/files/`` (``bunny.obj``, ``spot.obj``; provenance, licences and
sha256 in ``files/PROVENANCE.md``).  The target densities are built at load time by our own
code, following the recipe of Chen & Lipman 2023 ("Flow Matching on General Geometries",
section 5.3; as implemented in Jo & Hwang's public reproduction):

1. scale the mesh (bunny by 1/250, Spot by 1);
2. refine it ``upsample`` times by midpoint subdivision (each triangle into 4; the surface
   is unchanged, so samples lie on the original mesh);
3. compute the k-th non-trivial eigenfunction phi_k of L phi = lambda M phi on the refined
   mesh (cotangent Laplacian, lumped mass; index 0 is the constant function);
4. average phi_k over each refined face's 3 vertices and clip at 0: w_f = max(mean phi_k, 0);
5. draw faces with probability w_f / sum_f w_f (per face, *not* area-weighted, as in the
   recipe) and a uniform point inside each face (uniform barycentric coordinates).

The density w.r.t. area is therefore p(x) = w_f / (A_f sum w) on face f.  The sign of an
eigenvector is arbitrary; we fix it so that its largest-magnitude vertex value is positive
(the published recipe flips the sign by hand for bunny k=10 and Spot k=50 relative to
libigl's output, which we cannot reproduce bit for bit; see :func:`eigenfunction_density`).
"""

from __future__ import annotations

import functools
import io
import os
from typing import Optional

import numpy as np
import torch

from manifolds.mesh import Mesh, cotangent_laplacian, laplacian_eigenpairs

from ._parsing import read_bytes

__all__ = [
    "MESHES",
    "MESH_EIGENFUNCTIONS",
    "load_mesh",
    "eigenfunction_density",
    "sample_mesh_density",
    "mesh_splits",
    "target_face_density",
    "target_entropy",
    "area_smooth_nll",
]

#: Shipped meshes: file, scale applied at load, sha256 of the file.
MESHES = {
    "bunny": ("bunny.obj", 1 / 250, "4de73019859d1f959de20977f8a06242c8ede461138c9ea004c7a8ceb59ae26e"),
    "spot": ("spot.obj", 1.0, "0738b5e8608fed74e5e8c7aa8dd0af97b4b74f9f6cbf7aac84cd7e40b2e44a75"),
}
#: The eigenfunction indices of the published benchmarks.
MESH_EIGENFUNCTIONS = (10, 50, 100)


def _check_name(name) -> str:
    if not isinstance(name, str) or name not in MESHES:
        raise ValueError(f"`name` must be one of {sorted(MESHES)}, got {name!r}")
    return name


@functools.lru_cache(maxsize=4)
def _read_mesh(name: str) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    file, scale, sha = MESHES[name]
    data, _, _ = read_bytes(file, None, sha)
    tm = trimesh.load(io.BytesIO(data), file_type="obj", force="mesh", process=False)
    tm.merge_vertices(merge_tex=True, merge_norm=True)  # OBJ v/vt seams split vertices
    tm.remove_unreferenced_vertices()
    return np.asarray(tm.vertices, dtype=np.float64) * scale, np.asarray(tm.faces, dtype=np.int64)


def load_mesh(name: str, **kwargs) -> Mesh:
    """The shipped mesh ``"bunny"`` (2502 vertices, 5000 faces, scaled by 1/250) or ``"spot"`` (2930, 5856).

    Keyword arguments go to :class:`manifolds.Mesh` (``n_eigs``, ``premetric``, ``tau``, ...).
    """
    V, F = _read_mesh(_check_name(name))
    return Mesh(V.copy(), F.copy(), **kwargs)


def _midpoint_subdivide(V: np.ndarray, F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split every triangle into 4 at its edge midpoints (positions of old vertices unchanged)."""
    edges = np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]])
    edges.sort(axis=1)
    uniq, inv = np.unique(edges, axis=0, return_inverse=True)
    inv = inv.reshape(3, -1).T + V.shape[0]  # (F, 3): midpoint ids of edges 01, 12, 20
    Vn = np.concatenate([V, 0.5 * (V[uniq[:, 0]] + V[uniq[:, 1]])])
    a, b, c = F[:, 0], F[:, 1], F[:, 2]
    m01, m12, m20 = inv[:, 0], inv[:, 1], inv[:, 2]
    Fn = np.concatenate(
        [np.stack(t, 1) for t in ((a, m01, m20), (b, m12, m01), (c, m20, m12), (m01, m12, m20))]
    )
    return Vn, Fn


_CACHE_VERSION = 1


def _face_prob_cache(name: str, k: int, upsample: int) -> str:
    from .particles import cache_dir

    return os.path.join(cache_dir(), f"mesh-{name}-{MESHES[name][2][:12]}-k{k}-up{upsample}-v{_CACHE_VERSION}.npy")


@functools.lru_cache(maxsize=8)
def _density_cached(name: str, k: int, upsample: int):
    V, F = _read_mesh(name)
    for _ in range(upsample):
        V, F = _midpoint_subdivide(V, F)
    path = _face_prob_cache(name, k, upsample) if upsample > 0 else None
    if path is not None and os.path.exists(path):
        try:
            p = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt cached mesh density ({exc}); delete the file to recompute it") from None
        if p.shape != (F.shape[0],) or p.dtype != np.float64 or not np.isfinite(p).all() or (p < 0).any():
            raise ValueError(f"{path}: cached mesh density of shape {p.shape} and dtype {p.dtype} (expected "
                             f"({F.shape[0]},) float64, finite, >= 0); delete the file to recompute it")
        return V, F, p
    L, M = cotangent_laplacian(V, F)
    _, vecs = laplacian_eigenpairs(L, M, k + 1)
    phi = vecs[:, k]
    if phi[np.argmax(np.abs(phi))] < 0:
        phi = -phi
    w = np.maximum(phi[F].mean(1), 0.0)
    p = w / w.sum()
    if path is not None:  # the refined eigensolve takes tens of seconds: keep its result on disk
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as fh:
                np.save(fh, p, allow_pickle=False)
            os.replace(tmp, path)
        except OSError:  # pragma: no cover - a read-only cache only costs time
            pass
    return V, F, p


def eigenfunction_density(name: str, k: int, *, upsample: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The refined mesh and face probabilities of the eigenfunction-k target (module docstring).

    Args:
        name: ``"bunny"`` or ``"spot"``.
        k: eigenfunction index (>= 1; 10, 50 and 100 are the published sets).
        upsample: midpoint-subdivision rounds before the eigensolve (default 3 as published:
            5000 -> 320000 faces for the bunny, about 40 s of eigensolve on one CPU core; the
            face probabilities are cached in memory and, for ``upsample > 0``, on disk as
            ``mesh-{name}-{sha}-k{k}-up{upsample}-v1.npy`` in
            :func:`geoflow.data.particles.cache_dir` (``$GEOFLOW_CACHE`` or ``~/.cache/geoflow``)).

    Returns:
        ``(vertices (V', 3) float64, faces (F', 3) int64, face_prob (F',) float64)``.
    """
    name = _check_name(name)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be an int >= 1, got {k!r}")
    if isinstance(upsample, bool) or not isinstance(upsample, int) or not 0 <= upsample <= 4:
        raise ValueError(f"`upsample` must be an int in [0, 4], got {upsample!r}")
    V, F, p = _density_cached(name, k, upsample)
    return torch.from_numpy(V), torch.from_numpy(F), torch.from_numpy(p)


def sample_mesh_density(
    name: str, k: int, n: int, *, generator: Optional[torch.Generator] = None, upsample: int = 3
) -> torch.Tensor:
    """``n`` samples of the eigenfunction-k density on mesh ``name``, shape ``(n, 3)`` float64."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be an int >= 1, got {n!r}")
    V, F, p = eigenfunction_density(name, k, upsample=upsample)
    face = torch.multinomial(p, n, replacement=True, generator=generator)
    r = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    s = r[:, 0].sqrt()
    b = torch.stack([1 - s, s * (1 - r[:, 1]), s * r[:, 1]], dim=-1)
    return (b.unsqueeze(-1) * V[F[face]]).sum(-2)


def mesh_splits(
    name: str, k: int, seed: int, *, n: int = 100_000, fractions=(0.8, 0.1, 0.1), upsample: int = 3,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train, val, test) samples of the eigenfunction-k density on mesh ``name``, drawn with ``seed``.

    ``n`` samples in all (default 100000, as in the published setup) split 80/10/10 (the
    split of Chen & Lipman's code); the same (name, k, seed, n, upsample) gives the same
    tensors.  Shapes ``(n_train, 3)``, ``(n_val, 3)``, ``(n_test, 3)``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"`seed` must be an int, got {seed!r}")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"`fractions` must be 3 non-negative numbers summing to 1, got {fractions!r}")
    g = torch.Generator().manual_seed(seed)
    x = sample_mesh_density(name, k, n, generator=g, upsample=upsample).to(dtype)
    n_val, n_test = int(round(n * fractions[1])), int(round(n * fractions[2]))
    n_train = n - n_val - n_test
    return x[:n_train], x[n_train : n_train + n_val], x[n_train + n_val :]


def target_face_density(name: str, k: int, *, upsample: int = 3) -> torch.Tensor:
    """The eigenfunction-k target as a density per face of the *shipped* (unrefined) mesh, for plots.

    Midpoint subdivision puts child j of face f at index j F + f, so after any number of
    rounds refined face i lies in original face i mod F0; the mass of each original face is
    the sum of its children's probabilities, divided by its area (units 1 / area of the
    scaled mesh, as :func:`load_mesh`).

    Returns:
        ``(F0,)`` float64 density w.r.t. area; integrates to 1 over the surface.
    """
    _, _, p = eigenfunction_density(name, k, upsample=upsample)
    V0, F0 = _read_mesh(_check_name(name))
    mass = torch.bincount(torch.arange(p.shape[0]) % F0.shape[0], weights=p, minlength=F0.shape[0])
    return mass / _face_areas(torch.from_numpy(V0), torch.from_numpy(F0))


def _face_areas(V: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    a, b, c = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
    return 0.5 * torch.linalg.cross(b - a, c - a).norm(dim=-1)


def target_entropy(name: str, k: int, *, upsample: int = 3) -> float:
    """Differential entropy (nats, w.r.t. area of the scaled mesh) of the eigenfunction-k target.

    The target is piecewise constant on the refined faces, p = P_f / A_f, so
    H = -sum_f P_f log(P_f / A_f) exactly.  It is the smallest test NLL any model can reach in
    expectation (cross-entropy >= entropy): read published and measured NLLs against it.
    """
    return float(_entropy(*_mass_and_area(name, k, upsample)))


def _entropy(p: torch.Tensor, area: torch.Tensor) -> torch.Tensor:
    """-sum_f P_f log(P_f / A_f): the entropy of the piecewise-constant density P_f / A_f."""
    return -(p * (p / area).log()).sum()


def _mass_and_area(name: str, k: int, upsample: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Probability P_f and area A_f of the refined faces that carry mass (P_f > 0)."""
    V, F, p = eigenfunction_density(name, k, upsample=upsample)
    area = _face_areas(V, F)
    keep = p > 0
    return p[keep], area[keep]


def area_smooth_nll(name: str, k: int, *, upsample: int = 3) -> float:
    """Expected test NLL (nats) of the eigenfunction-k target's *area-smooth* version q: the density
    proportional to w_f = max(mean phi_k, 0) with respect to area, q = w_f / sum_g w_g A_g.

    The recipe draws faces with probability P_f proportional to w_f, not to w_f A_f (module
    docstring), so the target p = P_f / A_f carries a factor 1 / A_f that follows the sizes of the
    mesh's triangles (refined faces inherit their parent's area / 4^upsample).  q is what a model
    reaches that gets the eigenfunction exactly right but not that per-face weighting; the gap to
    the entropy is closed-form, E_p[-log q] - H = log E_P[A] - E_P[log A] >= 0 (Jensen; zero when
    the faces carrying mass have equal areas).  Read a measured NLL against both numbers.
    """
    p, area = _mass_and_area(name, k, upsample)
    return float(_entropy(p, area) + (p * area).sum().log() - (p * area.log()).sum())
