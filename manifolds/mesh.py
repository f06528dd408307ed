"""Triangle meshes as manifolds, with spectral (Laplace-Beltrami) premetrics.

A :class:`Mesh` is a connected triangle mesh (closed, or with boundary) in R^3 seen as a
2-manifold: points are 3-D positions on the surface, tangent vectors are 3-D vectors in the
plane of the face that holds the point, and the metric is the one induced by R^3.  There is
no closed-form exponential or logarithm map: :meth:`Mesh.expmap` is the projected step
``projx(x + u)`` (a retraction), and :meth:`Mesh.dist` is a *premetric* (Chen & Lipman 2023,
"Flow Matching on General Geometries", section 3.3): a spectral distance built from the
eigenpairs of the cotangent Laplace-Beltrami operator, or a geodesic-distance reference.

Discretisation (Pinkall & Polthier 1993; Meyer et al. 2003):

.. math::
    L_{ij} = -\\tfrac12 (\\cot\\alpha_{ij} + \\cot\\beta_{ij}), \\quad L_{ii} = -\\sum_{j \\ne i} L_{ij},
    \\qquad M_{ii} = \\tfrac13 \\sum_{f \\ni i} A_f, \\qquad L \\phi_k = \\lambda_k M \\phi_k

(cotangent stiffness matrix, lumped barycentric mass matrix, generalised eigenproblem with
phi_k^T M phi_l = delta_kl).  Eigenfunctions are interpolated linearly (barycentrically)
inside faces, phi_k(x) = sum_i b_i(x) phi_k(v_i), and the spectral premetrics are

.. math::
    d_{bh}(x, y)^2 = \\sum_{k=1}^{K} \\frac{(\\phi_k(x) - \\phi_k(y))^2}{\\lambda_k^2}, \\qquad
    d_{diff}(x, y)^2 = \\sum_{k=1}^{K} e^{-2\\tau\\lambda_k} (\\phi_k(x) - \\phi_k(y))^2

(biharmonic distance, Lipman, Rustamov & Funkhouser 2010; diffusion distance, Coifman &
Lafon 2006), i.e. the Euclidean distance between spectral embeddings E(x) in R^K, with
E(v) = (phi_k(v) / lambda_k)_k or (e^{-tau lambda_k} phi_k(v))_k at the vertices.
"""

from __future__ import annotations

import math
import time
import weakref
from typing import Optional

import geoopt
import numpy as np
import torch

from ._math import norm_safe
from .base import Manifold

__all__ = [
    "Mesh",
    "PREMETRICS",
    "GEODESIC_METHODS",
    "closest_point_on_triangles",
    "cotangent_laplacian",
    "laplacian_eigenpairs",
]

#: Valid values of ``premetric``.
PREMETRICS = ("biharmonic", "diffusion", "geodesic")
#: Valid values of ``geodesic_method``.
GEODESIC_METHODS = ("dijkstra", "heat")


def closest_point_on_triangles(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Closest point to ``p`` on the (solid) triangle ``(a, b, c)``, batched and differentiable.

    The orthogonal projection q = p - <p - a, n> n / |n|^2 (n = (b - a) x (c - a)) is the answer
    when its barycentric coordinates are all >= 0; otherwise the closest point lies on the
    boundary and is the nearest of the three clamped segment projections
    s0 + clamp(<p - s0, s1 - s0> / |s1 - s0|^2, 0, 1) (s1 - s0).

    Shapes: all arguments broadcast, ``(..., 3)``; returns ``(..., 3)``.
    Triangles must be non-degenerate (area > 0).
    """
    p, a, b, c = torch.broadcast_tensors(p, a, b, c)
    shape = p.shape
    # coordinates first, (3, N): the dot products become sums of three rows (elementwise work), far
    # faster on CPU than reductions over a trailing dimension of size 3
    p, a, b, c = (v.reshape(-1, 3).T.contiguous() for v in (p, a, b, c))
    return _closest_rows(p, a, b, c, torch).T.reshape(shape)


def _closest_point_np(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """:func:`closest_point_on_triangles` in numpy, for the closest-point search (float64, no autograd;
    numpy's per-operation overhead is a fraction of torch's on the small batches of a search)."""
    p, a, b, c = np.broadcast_arrays(p, a, b, c)
    shape = p.shape
    p, a, b, c = (np.ascontiguousarray(v.reshape(-1, 3).T) for v in (p, a, b, c))
    return _closest_rows(p, a, b, c, np).T.reshape(shape)


def _closest_rows(p, a, b, c, xp):
    """The closest point on triangles (a, b, c) to p, all ``(3, N)`` coordinate rows; ``xp`` is torch or numpy."""

    def dot(u, v):
        return u[0] * v[0] + u[1] * v[1] + u[2] * v[2]

    e1, e2 = b - a, c - a
    n = xp.stack([e1[1] * e2[2] - e1[2] * e2[1], e1[2] * e2[0] - e1[0] * e2[2], e1[0] * e2[1] - e1[1] * e2[0]])
    q = p - (dot(p - a, n) / dot(n, n)) * n
    d = q - a
    d00, d01, d11 = dot(e1, e1), dot(e1, e2), dot(e2, e2)
    d20, d21 = dot(d, e1), dot(d, e2)
    den = d00 * d11 - d01 * d01
    bv = (d11 * d20 - d01 * d21) / den
    bw = (d00 * d21 - d01 * d20) / den
    inside = (bv >= 0) & (bw >= 0) & (bv + bw <= 1)

    def seg(s0, s1):
        e = s1 - s0
        t = xp.clip(dot(p - s0, e) / dot(e, e), 0.0, 1.0)
        q = s0 + t * e
        return q, dot(q - p, q - p)

    (q0, l0), (q1, l1), (q2, l2) = seg(a, b), seg(b, c), seg(c, a)
    # first minimum on ties, as argmin
    edge = xp.where(l1 < l0, q1, q0)
    edge = xp.where(l2 < xp.minimum(l0, l1), q2, edge)
    return xp.where(inside, q, edge)


def _rotate(u: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The minimal rotation taking the unit vector a to the unit vector b, applied to u perpendicular to a.

    R u = u - (<u, b> / (1 + <a, b>)) (a + b): length preserving and perpendicular to b (a . b > -1).
    """
    c = 1 + (a * b).sum(-1, keepdim=True)
    return u - (u * b).sum(-1, keepdim=True) / c.clamp(min=1e-12) * (a + b)


def cotangent_laplacian(vertices: np.ndarray, faces: np.ndarray):
    """Cotangent stiffness matrix L (positive semi-definite) and lumped barycentric mass matrix M.

    L_ij = -(cot alpha_ij + cot beta_ij) / 2 for each edge (i, j) (alpha, beta the angles opposite
    the edge), L_ii = -sum_j L_ij; M_ii = (1/3) sum of the areas of the faces around vertex i.

    Shapes: vertices ``(V, 3)`` float64, faces ``(F, 3)`` int -> two ``(V, V)`` scipy.sparse CSC matrices.
    """
    from scipy import sparse

    V, F = np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64)
    n = V.shape[0]
    rows, cols, vals = [], [], []
    for k in range(3):
        i, j, o = F[:, (k + 1) % 3], F[:, (k + 2) % 3], F[:, k]  # edge (i, j) opposite corner o
        u, w = V[i] - V[o], V[j] - V[o]
        cot = (u * w).sum(1) / np.linalg.norm(np.cross(u, w), axis=1)
        rows += [i, j]
        cols += [j, i]
        vals += [-0.5 * cot, -0.5 * cot]
    rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    W = sparse.coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()
    L = (W - sparse.diags(np.asarray(W.sum(axis=1)).ravel())).tocsc()
    areas = 0.5 * np.linalg.norm(np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]]), axis=1)
    mass = np.zeros(n)
    np.add.at(mass, F.ravel(), np.repeat(areas / 3.0, 3))
    return L, sparse.diags(mass).tocsc()


def laplacian_eigenpairs(L, M, k: int):
    """The k smallest eigenpairs of L phi = lambda M phi, ascending, M-orthonormal (numpy).

    Shift-invert Lanczos (``scipy.sparse.linalg.eigsh``) around sigma slightly below 0 (so that
    the factorised L - sigma M is positive definite), from a fixed start vector (deterministic).
    """
    from scipy.sparse.linalg import eigsh

    lam_scale = float((L.diagonal() / M.diagonal()).mean())
    vals, vecs = eigsh(L, k=k, M=M, sigma=-1e-6 * lam_scale, which="LM", v0=np.ones(L.shape[0]))
    order = np.argsort(vals)
    return vals[order], vecs[:, order]


class Mesh(Manifold):
    """A connected triangle mesh in R^3 as a 2-manifold, with spectral premetrics.

    Geometry (induced by R^3):

    * ``projx(x)``: the closest point on the mesh (exact: candidate faces from a KD-tree on
      a grid of points on every face, exact point-triangle distances, certified by the
      grid's covering radius, with a wider search for the rare uncertified points; see
      :meth:`locate`).
    * ``proju(x, u) = u - <u, n(x)> n(x)`` with n(x) the smooth normal (barycentric
      interpolation of smoothed, area-weighted vertex normals, :meth:`normal`; see :meth:`proju` for why
      not the face normal).
    * ``expmap(x, u)``: the end of :meth:`walk` (u turned onto each face it crosses), and
      ``retr(x, u) = projx(x + u)`` (a projected step, cheaper, for optimisers): retractions,
      not the exponential map (a polyhedral surface has no smooth geodesic flow across edges
      and vertices).
    * ``logmap`` and ``geodesic`` do not exist (``NotImplementedError``): flows on meshes use
      the premetric path :class:`geoflow.paths.PremetricPath`.
    * ``dist(x, y)``: the premetric chosen by ``premetric`` (module docstring), with
      gradients in x and y (autograd through the barycentric interpolation; the gradient of
      b_i(x) lies in the face plane, so grad_x d is tangent).  ``"geodesic"`` is a reference
      for comparisons (see :meth:`geodesic_distance`), not a smooth premetric.

    Base distribution: uniform by area, log p = -log(total area).

    Precomputation (timed in :attr:`timings`, seconds): cotangent Laplacian and lumped mass
    matrix (scipy.sparse), the ``n_eigs + 1`` smallest generalised eigenpairs by
    shift-invert Lanczos (``scipy.sparse.linalg.eigsh`` with sigma slightly below 0), and,
    for ``premetric="geodesic"`` only, the vertex-to-vertex geodesic distance matrix.

    Args:
        vertices: ``(V, 3)`` float array or tensor, finite.
        faces: ``(F, 3)`` integer array or tensor of vertex indices; every vertex must be
            used, no face may repeat a vertex or have zero area, and the mesh must be
            connected (one component).
        n_eigs: number K of non-constant eigenpairs used by the spectral premetrics
            (default 100, as in Chen & Lipman 2023); at most V - 2.
        premetric: ``"biharmonic"`` (default), ``"diffusion"`` or ``"geodesic"``.
        tau: diffusion time of the diffusion premetric (default 0.25, Chen & Lipman's
            setting; in units of length^2, so scale it with the mesh).
        geodesic_method: how the vertex geodesic distances of ``"geodesic"`` are computed:
            ``"dijkstra"`` (default; shortest paths along edges, an upper bound of the
            geodesic distance, scipy.sparse.csgraph) or ``"heat"`` (the heat method of
            Crane et al. 2013 through the optional package ``potpourri3d``, symmetrised).
        k_candidates: the closest-point search examines the faces of the 2 k_candidates
            nearest search points (a grid on each face; default 8).
        normal_smoothing: rounds of averaging each vertex normal with its neighbours' before the
            smooth normal field is interpolated (default 10; 0 = area-weighted vertex normals).
            Flows move inside the faces with the tangent field turned from the smooth normal's
            plane onto the face plane (:meth:`face_velocity`); the less that normal turns inside
            a face, the less the flow's density ripples at the scale of the faces.  Measured on a
            2500-step bunny k=10 model (``benchmarks/mesh_nll_check.py``): test NLL at rk4 20 steps
            2.11 / 1.82 / 1.81 / 1.78 with 0 / 5 / 20 / 60 rounds, samples unchanged; the
            likelihood stays consistent with the sampled flow (see :meth:`walk`).

    Shapes: points and tangent vectors ``(*batch, 3)``.
    """

    name = "Mesh"
    reversible = False

    def __init__(
        self,
        vertices,
        faces,
        *,
        n_eigs: int = 100,
        premetric: str = "biharmonic",
        tau: float = 0.25,
        geodesic_method: str = "dijkstra",
        k_candidates: int = 8,
        normal_smoothing: int = 10,
    ):
        geoopt.Manifold.__init__(self)
        self._set_shape((3,), 2)
        if not isinstance(premetric, str) or premetric not in PREMETRICS:
            raise ValueError(f"`premetric` must be one of {list(PREMETRICS)}, got {premetric!r}")
        if not isinstance(geodesic_method, str) or geodesic_method not in GEODESIC_METHODS:
            raise ValueError(f"`geodesic_method` must be one of {list(GEODESIC_METHODS)}, got {geodesic_method!r}")
        n_eigs = self._check_int("n_eigs", n_eigs)
        self.tau = self._check_positive("tau", tau)
        self.k_candidates = self._check_int("k_candidates", k_candidates)
        self.normal_smoothing = self._check_int("normal_smoothing", normal_smoothing, minimum=0)
        V, F = self._validate_mesh(vertices, faces)
        if n_eigs > V.shape[0] - 2:
            raise ValueError(f"`n_eigs` must be <= number of vertices - 2 = {V.shape[0] - 2}, got {n_eigs}")
        self.premetric = premetric
        self.geodesic_method = geodesic_method
        self.n_eigs = n_eigs
        self.timings: dict[str, float] = {}
        self._V, self._F = V, F
        self._setup_geometry()
        self._setup_spectrum()
        self._D: Optional[np.ndarray] = None
        if premetric == "geodesic":
            self._geodesic_matrix()
        self._cache: dict = {}
        self._loc_cache = None
        self.injectivity_radius = 0.0
        self.normalisation_chart = None

    # ------------------------------------------------------------ construction
    @classmethod
    def from_file(cls, path, *, scale: float = 1.0, **kwargs) -> "Mesh":
        """Load a mesh file (OBJ, PLY, OFF, STL, ... through ``trimesh``) and build a :class:`Mesh`.

        Vertices duplicated by texture or normal seams (OBJ ``v/vt``) are merged, unused
        vertices dropped; coordinates are multiplied by ``scale``.  Other keyword arguments go
        to :class:`Mesh`.
        """
        try:
            import trimesh
        except ImportError as exc:  # pragma: no cover - trimesh is a dependency
            raise ImportError("Mesh.from_file needs trimesh: pip install 'trimesh>=4'") from exc
        scale = cls._check_positive("scale", scale)
        tm = trimesh.load(str(path), force="mesh", process=False)
        tm.merge_vertices(merge_tex=True, merge_norm=True)
        tm.remove_unreferenced_vertices()
        return cls(np.asarray(tm.vertices, dtype=np.float64) * scale, np.asarray(tm.faces, dtype=np.int64), **kwargs)

    @staticmethod
    def _validate_mesh(vertices, faces):
        def to_np(a, name):
            if isinstance(a, torch.Tensor):
                a = a.detach().cpu().numpy()
            try:
                return np.asarray(a)
            except Exception as exc:  # noqa: BLE001
                raise TypeError(f"`{name}` must be an array or tensor, got {type(a).__name__}") from exc

        V, F = to_np(vertices, "vertices"), to_np(faces, "faces")
        if V.ndim != 2 or V.shape[1] != 3 or V.shape[0] < 4:
            raise ValueError(f"`vertices` must have shape (V, 3) with V >= 4, got {V.shape}")
        if not np.issubdtype(V.dtype, np.floating) and not np.issubdtype(V.dtype, np.integer):
            raise TypeError(f"`vertices` must be numeric, got dtype {V.dtype}")
        V = V.astype(np.float64)
        if not np.isfinite(V).all():
            raise ValueError(f"`vertices` contains {int((~np.isfinite(V)).sum())} NaN or inf entries")
        if F.ndim != 2 or F.shape[1] != 3 or F.shape[0] < 2:
            raise ValueError(f"`faces` must have shape (F, 3) (triangles) with F >= 2, got {F.shape}")
        if not np.issubdtype(F.dtype, np.integer):
            raise TypeError(f"`faces` must hold integer vertex indices, got dtype {F.dtype}")
        F = F.astype(np.int64)
        lo, hi = int(F.min()), int(F.max())
        if lo < 0 or hi >= V.shape[0]:
            raise ValueError(f"`faces` indices must lie in [0, {V.shape[0] - 1}] (number of vertices - 1), got [{lo}, {hi}]")
        rep = (F[:, 0] == F[:, 1]) | (F[:, 1] == F[:, 2]) | (F[:, 0] == F[:, 2])
        if rep.any():
            raise ValueError(f"`faces`: {int(rep.sum())} faces repeat a vertex (first: face {int(np.argmax(rep))} = {F[np.argmax(rep)].tolist()})")
        used = np.zeros(V.shape[0], dtype=bool)
        used[F.ravel()] = True
        if not used.all():
            raise ValueError(
                f"{int((~used).sum())} vertices are not used by any face (first: {int(np.argmin(used))}); remove them "
                "(trimesh: mesh.remove_unreferenced_vertices())"
            )
        cr = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
        area2 = np.linalg.norm(cr, axis=1)
        size = float(np.linalg.norm(V.max(0) - V.min(0)))
        degenerate = area2 <= 1e-12 * size * size
        if degenerate.any():
            raise ValueError(
                f"`faces`: {int(degenerate.sum())} faces have (near) zero area (first: face {int(np.argmax(degenerate))}); "
                "remove degenerate triangles"
            )
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        i = np.concatenate([F[:, 0], F[:, 1], F[:, 2]])
        j = np.concatenate([F[:, 1], F[:, 2], F[:, 0]])
        n_comp, _ = connected_components(coo_matrix((np.ones_like(i), (i, j)), shape=(V.shape[0],) * 2), directed=False)
        if n_comp != 1:
            raise ValueError(f"the mesh must be connected, got {n_comp} connected components; pass one component")
        return V, F

    def _setup_geometry(self) -> None:
        V, F = self._V, self._F
        a, b, c = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
        e1, e2 = b - a, c - a
        cr = np.cross(e1, e2)
        area2 = np.linalg.norm(cr, axis=1)
        self._areas = 0.5 * area2
        self.total_area = float(self._areas.sum())
        self._log_area = math.log(self.total_area)
        self._normals = cr / area2[:, None]
        # Vertex normals: area-weighted mean of the adjacent face normals (cr = 2 area n_f), normalised.
        vn = np.zeros_like(V)
        for k in range(3):
            np.add.at(vn, F[:, k], cr)
        self._vnormals = self._smooth_vertex_normals(F, vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-300))
        self._adj = self._adjacency(F)
        self.scale = float(np.linalg.norm(V.max(0) - V.min(0)))  # bounding-box diagonal
        # dual basis of (e1, e2) in the face plane: b1(x) = <d1, x - a>, b2(x) = <d2, x - a>
        g11, g12, g22 = (e1 * e1).sum(1), (e1 * e2).sum(1), (e2 * e2).sum(1)
        det = g11 * g22 - g12 * g12
        d1 = (g22[:, None] * e1 - g12[:, None] * e2) / det[:, None]
        d2 = (g11[:, None] * e2 - g12[:, None] * e1) / det[:, None]
        self._bgrad = np.stack([-(d1 + d2), d1, d2], axis=1)  # (F, 3 corners, 3 coords): grad b_i
        cent = (a + b + c) / 3.0
        self._centroids = cent
        self._face_radius = np.sqrt(((np.stack([a, b, c], 1) - cent[:, None]) ** 2).sum(-1)).max(1)
        self._radius = float(self._face_radius.max())
        from scipy.spatial import cKDTree

        self._tree = cKDTree(cent)
        # Search points: the centroids of the n_f^2 sub-triangles of a barycentric subdivision of
        # each face (n_f divisions).  The sub-triangles are copies of f scaled by 1 / n_f, so every
        # point of f lies within delta_f = R_f / n_f of one of them (R_f the centroid-to-corner
        # radius).  No two faces share a search point (a grid of corners repeats every mesh vertex
        # in each of its faces, which crowds the k nearest points into a few spots and leaves
        # most queries uncertified).  A face none of whose search points is among the k nearest
        # ones is then at least d_k - delta away from the query.
        target = 0.5 * float(np.median(self._face_radius))
        n_div = np.maximum(1, np.ceil(self._face_radius / target)).astype(np.int64)
        self._grid_delta = float((self._face_radius / n_div).max()) * (1 + 1e-9)
        pts, owner = [], []
        for n in np.unique(n_div):
            fs = np.nonzero(n_div == n)[0]
            up = [(i + 1 / 3, j + 1 / 3) for i in range(n) for j in range(n - i)]
            down = [(i + 2 / 3, j + 2 / 3) for i in range(n - 1) for j in range(n - 1 - i)]
            ij = np.array(up + down, dtype=np.float64) / n  # (n^2, 2) sub-triangle centroids
            q = a[fs, None, :] + ij[None, :, 0, None] * e1[fs, None, :] + ij[None, :, 1, None] * e2[fs, None, :]
            pts.append(q.reshape(-1, 3))
            owner.append(np.repeat(fs, ij.shape[0]))
        self._grid_owner = np.concatenate(owner)
        self._grid_tree = cKDTree(np.concatenate(pts))

    def _smooth_vertex_normals(self, F: np.ndarray, vn: np.ndarray) -> np.ndarray:
        """``normal_smoothing`` rounds of n_i <- normalise(n_i + sum of the 1-ring neighbours' n_j)."""
        if not self.normal_smoothing:
            return vn
        import scipy.sparse as sp

        i = np.concatenate([F[:, 0], F[:, 1], F[:, 2]])
        j = np.concatenate([F[:, 1], F[:, 2], F[:, 0]])
        nv = vn.shape[0]
        A = sp.coo_matrix((np.ones(2 * i.size), (np.concatenate([i, j]), np.concatenate([j, i]))), shape=(nv, nv)).tocsr()
        A.data[:] = 1.0  # each edge once, whichever faces list it
        A = A + sp.identity(nv, format="csr")
        for _ in range(self.normal_smoothing):
            vn = A @ vn
            vn = vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-300)
        return vn

    @staticmethod
    def _adjacency(F: np.ndarray) -> np.ndarray:
        """Across the edge opposite corner i of face f: ``adj[f, i] = 3 g + j`` with g the neighbouring face and
        j its corner opposite the same edge, or -1 on a boundary (or non-manifold) edge.  ``(F, 3)`` int64."""
        nF = F.shape[0]
        ends = np.stack([F[:, [1, 2]], F[:, [2, 0]], F[:, [0, 1]]], axis=1).reshape(-1, 2)  # edge opposite corner i
        ends.sort(axis=1)
        _, inv, counts = np.unique(ends, axis=0, return_inverse=True, return_counts=True)
        inv = inv.reshape(-1)
        slot = np.arange(3 * nF)
        order = np.argsort(inv, kind="stable")
        adj = np.full(3 * nF, -1, dtype=np.int64)
        two = counts[inv[order]] == 2  # interior manifold edges: consecutive pairs in the sorted order
        pairs = order[two].reshape(-1, 2)
        adj[pairs[:, 0]], adj[pairs[:, 1]] = slot[pairs[:, 1]], slot[pairs[:, 0]]
        return adj.reshape(nF, 3)

    def _laplacian(self):
        return cotangent_laplacian(self._V, self._F)

    def _setup_spectrum(self) -> None:
        t0 = time.perf_counter()
        L, M = self._laplacian()
        self.timings["laplacian"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        vals, vecs = laplacian_eigenpairs(L, M, self.n_eigs + 1)
        self.timings["eigs"] = time.perf_counter() - t0
        vals[0] = 0.0  # the constant eigenfunction (connected mesh)
        vals = np.maximum(vals, 0.0)
        self._stiffness, self._mass = L, M
        self._eigvals, self._eigvecs = vals, vecs
        lam = vals[1:]
        if not (lam > 0).all():
            raise ValueError("the Laplacian has more than one zero eigenvalue; is the mesh connected and non-degenerate?")
        self._embed = {
            "biharmonic": vecs[:, 1:] / lam,
            "diffusion": vecs[:, 1:] * np.exp(-self.tau * lam),
        }

    def _geodesic_matrix(self) -> np.ndarray:
        """Vertex-to-vertex geodesic distances (V, V), computed once (``geodesic_method``)."""
        if self._D is not None:
            return self._D
        t0 = time.perf_counter()
        V, F = self._V, self._F
        if self.geodesic_method == "heat":
            try:
                import potpourri3d as pp3d
            except ImportError as exc:
                raise ImportError("geodesic_method='heat' needs the optional package potpourri3d (pip install potpourri3d)") from exc
            solver = pp3d.MeshHeatMethodDistanceSolver(V, F)
            D = np.stack([solver.compute_distance(i) for i in range(V.shape[0])])
            D = 0.5 * (D + D.T)
            np.fill_diagonal(D, 0.0)
            D = np.maximum(D, 0.0)
        else:
            from scipy.sparse import coo_matrix
            from scipy.sparse.csgraph import shortest_path

            i = np.concatenate([F[:, 0], F[:, 1], F[:, 2]])
            j = np.concatenate([F[:, 1], F[:, 2], F[:, 0]])
            w = np.linalg.norm(V[i] - V[j], axis=1)
            G = coo_matrix((w, (i, j)), shape=(V.shape[0],) * 2).tocsr()
            G = G.maximum(G.T)
            D = shortest_path(G, method="D", directed=False)
        self.timings["geodesic"] = time.perf_counter() - t0
        self._D = D
        return D

    # ------------------------------------------------------------------ repr
    def extra_repr(self) -> str:
        s = f"n_vertices={self._V.shape[0]}, n_faces={self._F.shape[0]}, n_eigs={self.n_eigs}, premetric={self.premetric!r}"
        return s + (f", tau={self.tau}" if self.premetric == "diffusion" else "")

    # ------------------------------------------------------------- properties
    @property
    def vertices(self) -> torch.Tensor:
        """Vertex positions, ``(V, 3)`` float64."""
        return torch.from_numpy(self._V)

    @property
    def faces(self) -> torch.Tensor:
        """Faces, ``(F, 3)`` int64."""
        return torch.from_numpy(self._F)

    @property
    def face_areas(self) -> torch.Tensor:
        """Face areas, ``(F,)`` float64."""
        return torch.from_numpy(self._areas)

    @property
    def face_normals(self) -> torch.Tensor:
        """Unit face normals (orientation of the face's vertex order), ``(F, 3)`` float64."""
        return torch.from_numpy(self._normals)

    @property
    def eigenvalues(self) -> torch.Tensor:
        """Laplace-Beltrami eigenvalues lambda_0 = 0 <= lambda_1 <= ... <= lambda_K, ``(K + 1,)`` float64."""
        return torch.from_numpy(self._eigvals)

    @property
    def eigenvectors(self) -> torch.Tensor:
        """Eigenfunctions at the vertices, M-orthonormal, ``(V, K + 1)`` float64 (column 0 is constant)."""
        return torch.from_numpy(self._eigvecs)

    def laplacian(self):
        """The cotangent stiffness matrix L and the lumped mass matrix M (``scipy.sparse``), L phi = lambda M phi."""
        return self._stiffness, self._mass

    def _table(self, key: str, dtype, device) -> torch.Tensor:
        """Cached torch copies of the precomputed arrays per dtype and device."""
        ck = (key, dtype, device)
        t = self._cache.get(ck)
        if t is None:
            src = {
                "V": self._V,
                "F": self._F,
                "normals": self._normals,
                "vnormals": self._vnormals,
                "adj": self._adj,
                "bgrad": self._bgrad,
                "areas": self._areas,
                "biharmonic": self._embed["biharmonic"],
                "diffusion": self._embed["diffusion"],
                "eigvecs": self._eigvecs,
            }[key]
            t = torch.as_tensor(src, device=device)
            if t.is_floating_point():
                t = t.to(dtype)
            self._cache[ck] = t
        return t

    # ---------------------------------------------------------- point location
    def locate(self, x: torch.Tensor, *, certify: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Face holding the closest mesh point to each x, and the distance to the mesh.

        Exact closest-point search: the faces owning the k = 2 ``k_candidates`` nearest search
        points (the sub-triangle centroids of a subdivision of every face, KD-tree) are tested exactly; a point is
        certified when the k-th search-point distance d_k exceeds its best distance plus the
        grid's covering radius delta (every other face is at least d_k - delta away), else
        the faces that can still be closer are found with a ball query on the face centroids
        and tested (rare for points on the surface: the search points are about twice as fine as
        the faces; points well off it, as after a long straight step, are often uncertified).  The
        result of the last call is cached for the same, unmodified tensor.

        ``certify=False`` skips the certification: the best of the candidate faces, whose distance
        is an upper bound of the true one (equal wherever the search would have certified it).
        For callers that need a point of the surface near x rather than the provably closest one:
        :class:`geoflow.paths.PremetricPath`'s projected steps use it (on bunny paths not one of
        3218 uncertified points changed face in the exhaustive search, which costs a ball query each).

        Shapes: x ``(*batch, 3)`` -> face ``(*batch,)`` int64, distance ``(*batch,)`` (x's dtype).
        """
        if not isinstance(certify, bool):
            raise TypeError(f"`certify` must be a bool, got {type(certify).__name__}")
        c = self._loc_cache
        if c is not None and c[0]() is x and c[1] == x._version and (c[4] or not certify):
            return c[2], c[3]
        batch = x.shape[:-1]
        p = x.detach().reshape(-1, 3).to(torch.float64).cpu()
        n = p.shape[0]
        k = min(2 * self.k_candidates, self._grid_owner.shape[0])
        if n == 0:
            face = torch.zeros(0, dtype=torch.long)
            dist = torch.zeros(0, dtype=torch.float64)
        else:
            dc, idx = self._grid_tree.query(p.numpy(), k=k)
            face, dist = self._best_face(p, self._grid_owner[np.asarray(idx).reshape(n, k)])
            if certify and k < self._grid_owner.shape[0]:
                bad = (torch.from_numpy(np.asarray(dc).reshape(n, k)[:, -1]) - self._grid_delta <= dist).nonzero().flatten()
                if bad.numel():
                    f2, d2 = self._refine(p[bad], dist[bad])
                    better = d2 < dist[bad]
                    face[bad[better]], dist[bad[better]] = f2[better], d2[better]
        face = face.reshape(batch).to(x.device)
        dist = dist.reshape(batch).to(device=x.device, dtype=x.dtype)
        try:
            self._loc_cache = (weakref.ref(x), x._version, face, dist, certify)
        except TypeError:  # pragma: no cover - tensors support weak references
            self._loc_cache = None
        return face, dist

    def _refine(self, p: torch.Tensor, bound: torch.Tensor):
        """Exact search for points whose k-nearest candidates were not certified.

        Faces that can beat the current best distance ``bound`` satisfy |p - c_f| - r_f <= bound
        (c_f centroid, r_f centroid-to-vertex radius): found with a ball query of radius
        bound + max r_f on the centroid tree, pruned with the per-face radius, then tested exactly.
        """
        pn, bn = p.numpy(), bound.numpy()
        lists = self._tree.query_ball_point(pn, bn + self._radius + 1e-12 * self.scale)
        lens = np.fromiter((len(l) for l in lists), dtype=np.int64, count=len(lists))
        flat = np.concatenate([np.asarray(l, dtype=np.int64) for l in lists]) if lens.sum() else np.zeros(0, np.int64)
        row = np.repeat(np.arange(len(lists)), lens)
        keep = np.linalg.norm(pn[row] - self._centroids[flat], axis=1) - self._face_radius[flat] <= bn[row] + 1e-12 * self.scale
        flat, row = flat[keep], row[keep]
        tri = self._V[self._F[flat]]  # (P, 3, 3)
        q = _closest_point_np(pn[row], tri[:, 0], tri[:, 1], tri[:, 2])
        d = np.sqrt(((q - pn[row]) ** 2).sum(-1))
        order = np.lexsort((d, row))  # by row, then distance
        first = np.ones(order.size, dtype=bool)
        first[1:] = row[order][1:] != row[order][:-1]
        sel = order[first]
        face = torch.full((len(lists),), -1, dtype=torch.long)
        dist = torch.full((len(lists),), math.inf, dtype=torch.float64)
        face[torch.from_numpy(row[sel])] = torch.from_numpy(flat[sel])
        dist[torch.from_numpy(row[sel])] = torch.from_numpy(d[sel])
        return face, dist

    def _best_face(self, p: torch.Tensor, idx: np.ndarray):
        """Among candidate faces idx ``(n, k)`` (repeats allowed) the closest to p ``(n, 3)`` (float64, CPU).

        Ties go to the smallest face index (candidates are sorted before the first-minimum argmin).
        """
        cand = np.sort(idx, axis=1)
        tri = self._V[self._F[cand]]  # (n, k, 3, 3)
        pr = p.numpy()[:, None, :]
        q = _closest_point_np(pr, tri[..., 0, :], tri[..., 1, :], tri[..., 2, :])
        d2 = ((q - pr) ** 2).sum(-1)
        j = d2.argmin(1)
        rows = np.arange(cand.shape[0])
        return torch.from_numpy(cand[rows, j]), torch.from_numpy(np.sqrt(d2[rows, j]))

    def barycentric(self, x: torch.Tensor, face: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Barycentric coordinates of x in its face (located unless ``face`` is given), differentiable in x.

        b_1 = <d_1, x - a>, b_2 = <d_2, x - a>, b_0 = 1 - b_1 - b_2 with (d_1, d_2) the dual basis of
        the edges (b - a, c - a) in the face plane, so the gradient of b_i lies in that plane.

        Shapes: x ``(*batch, 3)`` -> (face ``(*batch,)``, b ``(*batch, 3)``).
        """
        if face is None:
            face, _ = self.locate(x)
        V = self._table("V", x.dtype, x.device)
        F = self._table("F", None, x.device)
        G = self._table("bgrad", x.dtype, x.device)[face]  # (*batch, 3, 3)
        a = V[F[face, 0]]
        b = (G @ (x - a).unsqueeze(-1)).squeeze(-1)
        b = b + torch.tensor([1.0, 0.0, 0.0], dtype=x.dtype, device=x.device)
        return face, b

    def interpolate(self, values: torch.Tensor, x: torch.Tensor, face: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Barycentric interpolation of per-vertex ``values`` ``(V, C)`` at points x: ``(*batch, C)``."""
        face, b = self.barycentric(x, face)
        F = self._table("F", None, x.device)
        return (b.unsqueeze(-1) * values[F[face]]).sum(-2)

    def eigenfunctions(self, x: torch.Tensor, k=None) -> torch.Tensor:
        """Eigenfunctions phi_k at points x (barycentric interpolation), ``(*batch, K + 1)`` or ``(*batch,)`` for one k."""
        vals = self._table("eigvecs", x.dtype, x.device)
        if k is not None:
            vals = vals[:, [k]] if isinstance(k, int) else vals[:, list(k)]
        out = self.interpolate(vals, x)
        return out.squeeze(-1) if isinstance(k, int) else out

    def spectral_embedding(self, x: torch.Tensor, premetric: Optional[str] = None, face=None) -> torch.Tensor:
        """The embedding E(x) in R^K whose Euclidean distances are the spectral premetric, ``(*batch, K)``."""
        premetric = self.premetric if premetric is None else premetric
        if premetric not in ("biharmonic", "diffusion"):
            raise ValueError(f"`premetric` must be 'biharmonic' or 'diffusion' for a spectral embedding, got {premetric!r}")
        return self.interpolate(self._table(premetric, x.dtype, x.device), x, face)

    # -------------------------------------------------------------- checks
    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5):
        _, d = self.locate(x)
        worst = float(d.max()) if d.numel() else 0.0
        tol = (atol + rtol) * self.scale
        if not worst <= tol:
            return False, (
                f"expected points on the mesh surface (shape (..., 3)), but the largest distance to the mesh is "
                f"{worst:.3g} = {worst / self.scale:.3g} x mesh size > tolerance {tol:.3g}; use projx to project"
            )
        return True, None

    def _check_vector_on_tangent(self, x, u, *, atol=1e-5, rtol=1e-5):
        n = self.normal(x)
        err = (n * u).sum(-1).abs()
        worst = float(err.max()) if err.numel() else 0.0
        if worst > atol * self.scale + rtol * float(u.abs().max() if u.numel() else 0.0):
            return False, f"expected u tangent at x (<u, n(x)> = 0 for the smooth normal n of Mesh.normal), but max |<u, n(x)>| = {worst:.3g}; use proju to project"
        return True, None

    # ------------------------------------------------------------- geometry
    def projx(self, x: torch.Tensor) -> torch.Tensor:
        """The closest point on the mesh (differentiable in x inside the chosen face)."""
        face, _ = self.locate(x)
        V = self._table("V", x.dtype, x.device)
        tri = V[self._table("F", None, x.device)[face]]
        return closest_point_on_triangles(x, tri[..., 0, :], tri[..., 1, :], tri[..., 2, :])

    def normal(self, x: torch.Tensor, face: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The smooth unit normal at x: n(x) = N / |N|, N = sum_i b_i(x) n_i (Phong interpolation).

        n_i are the vertex normals (area-weighted means of the adjacent face normals, smoothed
        ``normal_smoothing`` times over the 1-ring) and b_i the
        barycentric coordinates of x in its face, so n(x) is continuous across edges and
        differentiable in x inside a face.  Shapes: x ``(*batch, 3)`` -> ``(*batch, 3)``.
        """
        face, b = self.barycentric(x, face)
        vn = self._table("vnormals", x.dtype, x.device)[self._table("F", None, x.device)[face]]  # (*batch, 3, 3)
        n = (b.unsqueeze(-1) * vn).sum(-2)
        return n / norm_safe(n, dim=-1, keepdim=True)

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """u - <u, n(x)> n(x) with the smooth (interpolated vertex) normal n(x) of :meth:`normal`.

        Why the smooth normal and not the face normal: the projected field is then continuous
        across edges, so once it is turned onto each face (:meth:`face_velocity`) its flux
        through an edge is nearly the same from both sides, and the flow's density stays nearly
        continuous.  A field projected onto the face planes jumps at every edge by an amount of
        the order of the dihedral angle, and its density with it.

        Points then move inside their faces with this field turned onto the face plane
        (:meth:`face_velocity`, :meth:`walk`), and the likelihood adds the density jumps at edge
        crossings that :meth:`walk` reports.
        """
        n = self.normal(x)
        return u - (u * n).sum(-1, keepdim=True) * n

    def divergence_proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """u - <u, n_f> n_f with n_f the normal of x's face: the projector of the solvers' divergence.

        Points move inside their face with the face-plane part P_f u of a tangent field u
        (:meth:`walk`; the face plane is the surface's true tangent plane there), so the log-density
        of the flow changes inside a face at the rate -div_f(P_f u) = -tr(P_f J_u), the trace of
        the field's Jacobian along the face.  The solvers (``geoflow.solvers.log_likelihood``,
        ``divergence``) take this trace of :meth:`face_velocity` (the field turned onto the face)
        where other manifolds use ``proju`` and the field itself; the change at edge crossings is
        the flux ratio that :meth:`walk` returns.
        """
        face, _ = self.locate(x)
        nf = self._table("normals", u.dtype, u.device)[face]
        return u - (u * nf).sum(-1, keepdim=True) * nf

    def face_velocity(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The velocity with which a point at x moves inside its face for the tangent vector u.

        u (tangent to the smooth normal n(x) of :meth:`normal`; its normal part is dropped) is
        turned onto the face plane by the smallest rotation taking n(x) to the face normal n_f:
        R u = u - (<u, n_f> / (1 + <n(x), n_f>)) (n(x) + n_f).  Rotating (rather than projecting
        onto the face plane) keeps |u| and, where n(x) is the bisector of an edge's dihedral angle,
        gives the same flux through the edge from both faces, so the flow's density is nearly
        continuous across edges (the jumps that remain are reported by :meth:`walk`).  The solvers'
        divergence is the in-face trace of this field (``divergence_proju``).  Shapes: ``(*batch, 3)``.
        """
        face, _ = self.locate(x)
        nf = self._table("normals", u.dtype, u.device)[face]
        n = self.normal(x, face)
        return _rotate(u - (u * n).sum(-1, keepdim=True) * n, n, nf)

    def walk(
        self, x: torch.Tensor, u: torch.Tensor, *, normal: Optional[torch.Tensor] = None, max_crossings: int = 1000
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Move x along the surface by the tangent displacement u, face by face: ``(y, log_jump)``.

        u is taken in the tangent plane of ``normal`` (default: the smooth normal n(x) of
        :meth:`normal`; a normal part of u is dropped).  Inside each face f the point moves with
        R_f u, u turned onto the face plane by the smallest rotation taking the normal to n_f
        (:meth:`face_velocity`); where it reaches an edge it enters the neighbouring face g and
        goes on with R_g u for the rest of the step (by fraction, i.e. time at constant u), until
        the whole step is used.  For a fixed u this is an exact flow on the faces: area preserving
        inside them, but where the in-face normal components of the velocity differ across an edge
        a patch of mass crossing from f to g has its density multiplied by
        (R_f u . nu_f) / (R_g u . nu_g), with nu_f the unit normal of the edge in f's plane pointing
        out of f and nu_g the one in g's plane pointing into g.  ``log_jump`` is the sum of the logs
        of these ratios over the crossed edges: the log-density change of mass carried by the step
        (0 without a crossing); the solvers add it to the likelihood.

        Where the velocity turned onto g would point back out of g (R_g u . nu_g <= 0: the rotations
        onto f and g disagree, which happens for velocities nearly parallel to the edge when the
        smooth normal is not perpendicular to it), the point goes on straight: with its f-velocity
        unfolded onto g by the rotation about the edge, for the rest of the step, without a jump.
        A point stops on a boundary edge, and after ``max_crossings`` edges.  The walk is
        differentiable in x and u for a fixed sequence of faces.  The face of y is cached for the
        next :meth:`locate` of y.

        Shapes: x, u, normal ``(*batch, 3)`` -> y ``(*batch, 3)``, log_jump ``(*batch,)``.
        """
        if x.shape[-1:] != (3,) or u.shape[-1:] != (3,):
            raise ValueError(f"`x` and `u` must have shape (..., 3), got {tuple(x.shape)} and {tuple(u.shape)}")
        batch = torch.broadcast_shapes(x.shape, u.shape)[:-1]
        p = x.expand(*batch, 3).reshape(-1, 3)
        d = u.expand(*batch, 3).reshape(-1, 3)
        n = p.shape[0]
        face, _ = self.locate(p)
        dt, dev = torch.promote_types(p.dtype, d.dtype), p.device
        n0 = self.normal(p, face) if normal is None else normal.expand(*batch, 3).reshape(-1, 3).to(p.dtype)
        d = d - (d * n0).sum(-1, keepdim=True) * n0
        V, F = self._table("V", dt, dev), self._table("F", None, dev)
        G, NF, ADJ = self._table("bgrad", dt, dev), self._table("normals", dt, dev), self._table("adj", None, dev)
        e0 = torch.tensor([1.0, 0.0, 0.0], dtype=dt, device=dev)
        rem = torch.ones(n, dtype=dt, device=dev)
        jump = torch.zeros(n, dtype=dt, device=dev)
        active = torch.ones(n, dtype=torch.bool, device=dev)
        rows = torch.arange(n, device=dev)
        for _ in range(max_crossings + 1):
            if not bool(active.any()):
                break
            Gf, nf = G[face], NF[face]
            dirf = _rotate(d, n0, nf)  # in-face velocity (displacement per unit fraction of the step)
            bp = (Gf @ (p - V[F[face, 0]]).unsqueeze(-1)).squeeze(-1) + e0
            db = (Gf @ dirf.unsqueeze(-1)).squeeze(-1) * rem.unsqueeze(-1)  # change of b over the remaining move
            # fraction of the remaining move at which b_i reaches 0, for the coordinates that decrease
            s_all = torch.where(db < 0, bp.clamp(min=0) / (-db).clamp(min=torch.finfo(dt).tiny), torch.full_like(bp, math.inf))
            s, i = s_all.min(-1)
            cross = active & (s < 1)
            finish = active & ~cross
            step = torch.where(cross, s, torch.ones_like(s)) * rem
            p = torch.where(active.unsqueeze(-1), p + step.unsqueeze(-1) * dirf, p)
            rem = torch.where(cross, rem * (1 - s), torch.where(finish, torch.zeros_like(rem), rem))
            active = cross
            if not bool(cross.any()):
                break
            nb = ADJ[face, i]
            g, j = nb.clamp(min=0) // 3, nb.clamp(min=0) % 3
            grad_f = Gf[rows, i]  # points from edge i into f
            grad_g = G[g, j]  # points from the edge into g
            dg = _rotate(d, n0, NF[g])
            out_f = -(dirf * grad_f).sum(-1) / grad_f.norm(dim=-1)
            in_g = (dg * grad_g).sum(-1) / grad_g.norm(dim=-1)
            inner = cross & (nb >= 0)
            go = inner & (in_g > 1e-9 * out_f.abs())
            # Where the velocity turned onto g points back out of g (the two rotations disagree about a
            # velocity nearly parallel to the edge), the point goes on straight across the edge instead:
            # its f-velocity unfolded onto g (the rotation about the edge), which enters g, with no jump.
            unfold = inner & ~go
            if bool(unfold.any()):
                ng = NF[g]
                straight = _rotate(dirf, nf, ng)
                d = torch.where(unfold.unsqueeze(-1), _rotate(straight, ng, n0), d)
            ratio = torch.where(go, out_f / torch.where(go, in_g, torch.ones_like(in_g)), torch.ones_like(in_g))
            jump = jump + torch.where(go, ratio.clamp(min=torch.finfo(dt).tiny).log(), torch.zeros_like(jump))
            face = torch.where(inner, g, face)
            active = inner
        y = p.reshape(*batch, 3)
        self._prime_locate(y, face.reshape(batch))
        return y, jump.reshape(batch)

    def _prime_locate(self, y: torch.Tensor, face: torch.Tensor) -> None:
        """Remember that the points y (on the surface) lie in ``face`` for the next :meth:`locate` of y."""
        try:
            self._loc_cache = (weakref.ref(y), y._version, face, torch.zeros(face.shape, dtype=y.dtype, device=y.device),
                               True)
        except TypeError:  # pragma: no cover - tensors support weak references
            self._loc_cache = None

    def egrad2rgrad(self, x, u):
        return self.proju(x, u)

    def inner(self, x, u, v=None, *, keepdim=False):
        return self._flat_inner(x, u, v, keepdim)

    def component_inner(self, x, u, v=None):
        return u * (u if v is None else v)

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The end point of :meth:`walk`: a retraction, not the exponential map (see the class docstring)."""
        return self.walk(x, u)[0]

    def retr(self, x, u):
        return self.projx(x + u)

    def transp(self, x, y, v):
        return self.proju(y, v)

    def logmap(self, x, y):
        raise NotImplementedError(
            "Mesh has no logarithm map (no closed-form geodesics on a triangle mesh); use dist (a premetric) "
            "and geoflow.paths.PremetricPath"
        )

    def geodesic(self, x0, x1, t):
        raise NotImplementedError(
            "Mesh has no closed-form geodesics; use geoflow.paths.PremetricPath for conditional flows on meshes"
        )

    def geodesic_and_velocity(self, x0, x1, t):
        self.geodesic(x0, x1, t)

    # ------------------------------------------------------------ premetrics
    def dist(self, x: torch.Tensor, y: torch.Tensor, *, keepdim: bool = False, premetric: Optional[str] = None) -> torch.Tensor:
        """The premetric d(x, y) (``premetric`` overrides the mesh's default), shape ``(*batch,)``.

        Spectral premetrics: |E(x) - E(y)| with E the barycentric interpolation of the vertex
        embedding (module docstring); differentiable in x and y with tangent gradients, and a
        zero (finite) gradient at x == y.  ``"geodesic"``: :meth:`geodesic_distance`.
        """
        premetric = self.premetric if premetric is None else premetric
        if premetric not in PREMETRICS:
            raise ValueError(f"`premetric` must be one of {list(PREMETRICS)}, got {premetric!r}")
        if premetric == "geodesic":
            d = self.geodesic_distance(x, y)
            return d.unsqueeze(-1) if keepdim else d
        ex = self.spectral_embedding(x, premetric)
        ey = self.spectral_embedding(y, premetric)
        return norm_safe(ex - ey, keepdim=keepdim)

    def geodesic_distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Reference geodesic distance between surface points, an upper bound of the true one.

        d(x, y) = |x - y| when x and y lie in the same face (exact), otherwise
        min_{i, j} |x - v_i| + D(v_i, w_j) + |w_j - y| over the corners v_i of x's face and w_j of
        y's face, with D the vertex distance matrix (``geodesic_method``: edge-graph Dijkstra,
        itself an upper bound, or the heat method).  Computed once on first use (V^2 memory).

        Shapes: x, y ``(*batch, 3)`` broadcasting -> ``(*batch,)``.
        """
        D = self._geodesic_matrix()
        fx, _ = self.locate(x)
        fy, _ = self.locate(y)
        F = self._table("F", None, x.device)
        V = self._table("V", x.dtype, x.device)
        Dt = self._cache.get(("D", x.dtype, x.device))
        if Dt is None:
            Dt = torch.as_tensor(D, dtype=x.dtype, device=x.device)
            self._cache[("D", x.dtype, x.device)] = Dt
        vx, vy = F[fx], F[fy]  # (*bx, 3), (*by, 3)
        ax = norm_safe(x.unsqueeze(-2) - V[vx])  # (*bx, 3)
        ay = norm_safe(y.unsqueeze(-2) - V[vy])
        vx, vy = torch.broadcast_tensors(vx, vy)
        ax, ay = torch.broadcast_tensors(ax, ay)
        mid = Dt[vx.unsqueeze(-1), vy.unsqueeze(-2)]  # (*b, 3, 3)
        through = (ax.unsqueeze(-1) + mid + ay.unsqueeze(-2)).flatten(-2).amin(-1)
        fx, fy = torch.broadcast_tensors(fx, fy)
        direct = norm_safe(x - y)
        return torch.where(fx == fy, direct.expand_as(through), through)

    # ----------------------------------------------------------- distribution
    def _random_base(self, size, *, generator, dtype, device):
        n = math.prod(size)
        areas = self._table("areas", torch.float64, torch.device("cpu") if generator is None else generator.device)
        face = torch.multinomial(areas, n, replacement=True, generator=generator) if n else torch.zeros(0, dtype=torch.long)
        r = torch.rand(n, 2, generator=generator, dtype=torch.float64, device=areas.device)
        s = r[:, 0].sqrt()
        b = torch.stack([1 - s, s * (1 - r[:, 1]), s * r[:, 1]], dim=-1)
        V = self._table("V", torch.float64, areas.device)
        x = (b.unsqueeze(-1) * V[self._table("F", None, areas.device)[face]]).sum(-2)
        return x.to(dtype=dtype, device=device).reshape(*size, 3)

    def base_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """-log(total area), shape ``(*batch,)``."""
        return torch.full(x.shape[:-1], -self._log_area, dtype=x.dtype, device=x.device)
