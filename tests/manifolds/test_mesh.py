"""Mesh manifold: Laplace-Beltrami spectrum, premetrics, closest points, base distribution, bad inputs."""

import math

import numpy as np
import pytest
import torch

import trimesh  # a dependency of geoflow: a missing install must fail, not skip
from scipy.stats import spearmanr  # noqa: E402

from manifolds.mesh import Mesh, closest_point_on_triangles  # noqa: E402

from ..conftest import TOL  # noqa: E402
from .mesh_triangles import log_area_change, tiny_triangles  # noqa: E402


@pytest.fixture(scope="module")
def ico():
    s = trimesh.creation.icosphere(subdivisions=3)  # 642 vertices on the unit sphere
    return Mesh(s.vertices, s.faces, n_eigs=30)


@pytest.fixture(scope="module")
def blob():
    # a non-convex, irregular closed surface: a bumpy sphere with random vertex jitter
    s = trimesh.creation.icosphere(subdivisions=2)
    v = np.asarray(s.vertices)
    rng = np.random.default_rng(0)
    r = 1 + 0.3 * np.sin(3 * v[:, 0]) * np.cos(2 * v[:, 1]) + 0.02 * rng.standard_normal(len(v))
    return Mesh(v * r[:, None], s.faces, n_eigs=20)


def _on_surface(m, x):
    _, d = m.locate(x)
    return float(d.max()) / m.scale


def great_circle(x, y):
    return torch.atan2(torch.linalg.cross(x, y, dim=-1).norm(dim=-1), (x * y).sum(-1))


# ------------------------------------------------------------------ Laplacian
def test_laplacian_closed_forms(ico):
    L, M = ico.laplacian()
    n = L.shape[0]
    assert abs(L - L.T).max() < 1e-12
    assert np.abs(L @ np.ones(n)).max() < 1e-10  # constants are harmonic
    assert abs(M.diagonal().sum() - ico.total_area) < 1e-10
    assert abs(ico.total_area - 4 * math.pi) / (4 * math.pi) < 0.01  # icosphere area -> 4 pi
    # the coordinate functions are eigenfunctions of the sphere with lambda = 2
    X = ico.vertices.numpy()
    for k in range(3):
        x = X[:, k]
        lx, mx = L @ x, M @ x
        assert abs((x @ lx) / (x @ mx) - 2) < 0.02  # Rayleigh quotient
        # pointwise the lumped mass is only first-order accurate at the 12 valence-5 vertices
        assert np.abs(lx - 2 * mx).max() / np.abs(2 * mx).max() < 0.1


def test_icosphere_eigenvalues_and_multiplicities(ico):
    lam = ico.eigenvalues.numpy()
    assert lam[0] == 0.0
    start = 1
    for l in range(1, 5):  # eigenvalue l(l+1) with multiplicity 2l+1
        block = lam[start : start + 2 * l + 1]
        np.testing.assert_allclose(block, l * (l + 1), rtol=0.03)
        start += 2 * l + 1
    assert lam[start] > 20 * 0.97 * 1.0 + 5  # next block (l = 5: 30) is well separated
    # M-orthonormal eigenvectors
    _, M = ico.laplacian()
    P = ico.eigenvectors.numpy()
    np.testing.assert_allclose(P.T @ (M @ P), np.eye(P.shape[1]), atol=1e-8)


# ------------------------------------------------------------------ closest point
def test_closest_point_on_triangles_regions():
    a, b, c = torch.tensor([0.0, 0, 0]), torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0])
    p = torch.tensor([[0.2, 0.2, 3.0], [2.0, -1.0, 0.5], [-1.0, -1.0, 0.0], [0.6, 0.6, -1.0], [0.5, -2.0, 0.0]])
    q = closest_point_on_triangles(p, a, b, c)
    want = torch.tensor([[0.2, 0.2, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.0]])
    torch.testing.assert_close(q, want)


def test_projx_matches_brute_force(blob, gen):
    x = blob.random_base(300, generator=gen, dtype=torch.float64)
    y = x + 0.2 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    y = torch.cat([y, 3 * torch.randn(20, 3, generator=gen, dtype=torch.float64)])  # far away points too
    p = blob.projx(y)
    V, F = blob.vertices, blob.faces
    tri = V[F]
    allq = closest_point_on_triangles(y[:, None], tri[None, :, 0], tri[None, :, 1], tri[None, :, 2])
    best = (allq - y[:, None]).norm(dim=-1).min(1).values
    torch.testing.assert_close((p - y).norm(dim=-1), best, atol=1e-12, rtol=0)
    assert _on_surface(blob, p) < 1e-12
    torch.testing.assert_close(blob.projx(p), p, atol=1e-12, rtol=0)  # idempotent


@pytest.mark.parametrize("step", [0.0, 0.01, 0.2, 3.0])
def test_locate_matches_brute_force(blob, gen, step):
    # the certified candidate search gives the brute-force face and distance, for points on the
    # surface, near it and far from it
    x = blob.random_base(400, generator=gen, dtype=torch.float64)
    y = x + step * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    V, F = blob.vertices, blob.faces
    tri = V[F]
    allq = closest_point_on_triangles(y[:, None], tri[None, :, 0], tri[None, :, 1], tri[None, :, 2])
    best = (allq - y[:, None]).norm(dim=-1).min(1).values
    face, dist = blob.locate(y)
    torch.testing.assert_close(dist, best, atol=1e-12, rtol=0)
    q = closest_point_on_triangles(y, tri[face, 0], tri[face, 1], tri[face, 2])
    torch.testing.assert_close((q - y).norm(dim=-1), best, atol=1e-12, rtol=0)


def test_locate_uncertified_is_an_upper_bound(blob, gen):
    # certify=False: the best of the candidate faces, a point of the surface whose distance bounds the
    # true one from above; for points on the surface (dist 0) it is the exact search's answer
    x = blob.random_base(400, generator=gen, dtype=torch.float64)
    face, dist = blob.locate(x.clone(), certify=False)
    assert float(dist.max()) < 1e-12
    for step in (0.05, 0.5):
        y = x + step * torch.randn(x.shape, generator=gen, dtype=torch.float64)
        f_fast, d_fast = blob.locate(y.clone(), certify=False)
        f_exact, d_exact = blob.locate(y.clone())
        assert bool((d_fast >= d_exact - 1e-12).all())
        tri = blob.vertices[blob.faces]
        q = closest_point_on_triangles(y, tri[f_fast, 0], tri[f_fast, 1], tri[f_fast, 2])
        torch.testing.assert_close((q - y).norm(dim=-1), d_fast, atol=1e-12, rtol=0)  # the distance to that face
    # a certified call does not reuse an uncertified result for the same tensor
    y = x + 0.5 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    blob.locate(y, certify=False)
    torch.testing.assert_close(blob.locate(y)[1], blob.locate(y.clone())[1], atol=0, rtol=0)
    with pytest.raises(TypeError, match="certify"):
        blob.locate(x, certify=1)


def test_numpy_closest_point_matches_torch(blob, gen):
    from manifolds.mesh import _closest_point_np

    y = 2 * torch.randn(500, 3, generator=gen, dtype=torch.float64)
    tri = blob.vertices[blob.faces][torch.randint(0, blob.faces.shape[0], (500,), generator=gen)]
    q = closest_point_on_triangles(y, tri[:, 0], tri[:, 1], tri[:, 2])
    qn = _closest_point_np(y.numpy(), tri[:, 0].numpy(), tri[:, 1].numpy(), tri[:, 2].numpy())
    np.testing.assert_array_equal(qn, q.numpy())


def test_proju_and_checks(blob, gen, dtype):
    x = blob.random_base(50, generator=gen, dtype=dtype)
    blob.check_point(x)
    u = blob.proju(x, torch.randn(x.shape, generator=gen, dtype=dtype))
    blob.check_vector(x, u)
    n = blob.normal(x)
    assert float((u * n).sum(-1).abs().max()) < 10 * TOL[dtype]
    torch.testing.assert_close(blob.proju(x, u), u, atol=10 * TOL[dtype], rtol=0)
    # n(x) is the Phong normal: a unit vector, equal to the vertex normal at a vertex, within the
    # dihedral angles of the face normal, and continuous across an edge (both faces agree there).
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(50, dtype=dtype), atol=10 * TOL[dtype], rtol=0)
    face, _ = blob.locate(x)
    fn = blob.face_normals[face].to(dtype)
    assert float((n * fn).sum(-1).min()) > 0.5
    V, F = blob.vertices, blob.faces
    v0 = V[F[face[0], 0]].to(dtype)
    vn = blob.normal(v0[None], face[:1])
    for f in torch.nonzero((F == F[face[0], 0]).any(-1)).flatten()[:3]:  # every face at that vertex gives the same n
        torch.testing.assert_close(blob.normal(v0[None], f[None]), vn, atol=10 * TOL[dtype], rtol=0)
    with pytest.raises(ValueError, match="use projx"):
        blob.check_point(x + 0.05 * fn)
    with pytest.raises(ValueError, match="use proju"):
        blob.check_vector(x, u + n)


def test_adjacency_pairs_faces_across_shared_edges(blob):
    F, adj = blob._F, blob._adj
    assert (adj >= 0).all()  # closed surface
    g, j = adj // 3, adj % 3
    assert (adj[g, j] == 3 * np.arange(len(F))[:, None] + np.arange(3)).all()  # involution
    for i in range(3):
        mine = np.sort(F[:, [(i + 1) % 3, (i + 2) % 3]], axis=1)
        theirs = np.sort(np.stack([F[g[:, i], (j[:, i] + 1) % 3], F[g[:, i], (j[:, i] + 2) % 3]], 1), axis=1)
        assert (mine == theirs).all()
    # an open mesh (one triangle strip) has boundary edges
    strip = Mesh(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.2]], float), np.array([[0, 1, 2], [1, 3, 2]]), n_eigs=1)
    assert (strip._adj < 0).sum() == 4 and (strip._adj >= 0).sum() == 2


def test_walk_inside_a_face_is_the_face_plane_step(blob, gen):
    x = blob.random_base(40, generator=gen, dtype=torch.float64)
    face, _ = blob.locate(x)
    u = 1e-6 * blob.scale * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    y, jump = blob.walk(x, u)
    nf = blob.face_normals[face]
    n = blob.normal(x)
    same = blob.locate(y.clone())[0] == face
    assert int(same.sum()) >= 35  # tiny steps stay in their face (the rest cross an edge they started next to)
    # the tangent part of u (smooth normal), rotated onto the face plane by the smallest rotation n -> n_f
    ut = u - (u * n).sum(-1, keepdim=True) * n
    axis = torch.linalg.cross(n, nf, dim=-1)
    sin, cos = axis.norm(dim=-1, keepdim=True), (n * nf).sum(-1, keepdim=True)
    k = axis / sin
    rodrigues = ut * cos + torch.linalg.cross(k, ut, dim=-1) * sin + k * (k * ut).sum(-1, keepdim=True) * (1 - cos)
    torch.testing.assert_close(y[same], (x + rodrigues)[same], atol=1e-15, rtol=0)
    torch.testing.assert_close(blob.face_velocity(x, u), rodrigues, atol=1e-15, rtol=0)
    assert (jump[same] == 0).all()
    assert float(((y - x) * nf).sum(-1).abs().max()) < 1e-15  # moves in the face plane


def test_walk_on_a_flat_mesh_is_a_translation(gen):
    # a triangulated planar square: crossing edges changes nothing, so the walk is x + u
    n = 6
    ii, jj = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    V = np.stack([ii.ravel() / n, jj.ravel() / n, np.zeros(ii.size)], 1)
    idx = lambda a, b: a * (n + 1) + b  # noqa: E731
    F = [[idx(a, b), idx(a + 1, b), idx(a + 1, b + 1)] for a in range(n) for b in range(n)]
    F += [[idx(a, b), idx(a + 1, b + 1), idx(a, b + 1)] for a in range(n) for b in range(n)]
    sq = Mesh(V, np.array(F), n_eigs=3)
    x = torch.rand(50, 3, generator=gen, dtype=torch.float64) * 0.4 + 0.3
    x[:, 2] = 0
    u = (torch.rand(50, 3, generator=gen, dtype=torch.float64) - 0.5) * 0.5
    y, jump = sq.walk(x, u)
    want = x + u
    want[:, 2] = 0
    torch.testing.assert_close(y, want, atol=1e-12, rtol=0)
    torch.testing.assert_close(jump, torch.zeros(50, dtype=torch.float64), atol=1e-12, rtol=0)


def test_walk_crossing_a_fold_has_the_flux_jump():
    # two faces folded along the y axis: f in the plane z = 0 (x < 0), g rising with slope 1 (x > 0).
    # With the displacement taken in the plane of the bisector normal m of the fold, the rotations onto f and g
    # are rotations about the edge, so the flux is continuous (jump 0) and the point goes on in g with the
    # same speed; with f's own normal the velocity keeps its in-plane form in f and turns in g, with the jump
    # log((u . nu_f) / (R_g u . nu_g)).
    V = np.array([[-1.0, -1, 0], [-1, 1, 0], [0, -1, 0], [0, 1, 0], [1, -1, 1], [1, 1, 1]])
    F = np.array([[0, 2, 1], [1, 2, 3], [2, 4, 3], [3, 4, 5]])
    m = Mesh(V, F, n_eigs=2)
    x = torch.tensor([[-0.1, 0.1, 0.0]], dtype=torch.float64)
    r2 = math.sqrt(2)
    c8, s8 = math.cos(math.pi / 8), math.sin(math.pi / 8)  # the bisector is tilted by 22.5 degrees
    mb = torch.tensor([[-s8, 0.0, c8]], dtype=torch.float64)
    u = torch.tensor([[0.3 * c8, 0.05, 0.3 * s8]], dtype=torch.float64)  # tangent to the bisector plane
    y, jump = m.walk(x, u, normal=mb)
    # in f: (0.3, 0.05, 0) reaches x = 0 at fraction 1/3; in g: (0.3/sqrt2, 0.05, 0.3/sqrt2) for 2/3
    want = torch.tensor([0.0, 0.1 + 0.05 / 3, 0.0], dtype=torch.float64) + (2 / 3) * torch.tensor([0.3 / r2, 0.05, 0.3 / r2], dtype=torch.float64)
    torch.testing.assert_close(y[0], want, atol=1e-12, rtol=0)
    assert abs(float(jump[0])) < 1e-12
    nf = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    u2 = torch.tensor([[0.3, 0.05, 0.0]], dtype=torch.float64)
    y2, jump2 = m.walk(x, u2, normal=nf)
    ng = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64) / r2
    rg = u2[0] - (u2[0] @ ng) / (1 + float(nf[0] @ ng)) * (nf[0] + ng)  # R_g u2
    nu_g = torch.tensor([1.0, 0, 1], dtype=torch.float64) / r2
    assert abs(float(jump2[0]) - math.log(0.3 / float(rg @ nu_g))) < 1e-12
    torch.testing.assert_close(y2[0], torch.tensor([0.0, 0.1 + 0.05 / 3, 0.0], dtype=torch.float64) + (2 / 3) * rg, atol=1e-12, rtol=0)
    # a plane tilted along the edge, in which u turned onto g would point back out of g: in f the point moves
    # with (0.05, 0.24, 0) (u rotated about the x axis), reaches the edge at fraction 0.2, then goes on straight
    # across it, its velocity unfolded onto g (rotated about the edge), with no jump
    n3 = torch.tensor([[0.0, 0.6, 0.8]], dtype=torch.float64)
    u3 = torch.tensor([[0.05, 0.192, -0.144]], dtype=torch.float64)
    x3 = torch.tensor([[-0.01, 0.1, 0.0]], dtype=torch.float64)
    ng3 = _rotate_about_y(torch.tensor([0.05, 0.24, 0.0], dtype=torch.float64))
    assert float(ng3 @ torch.tensor([-1.0, 0, 1], dtype=torch.float64)) == pytest.approx(0, abs=1e-15)  # in g's plane
    y3, jump3 = m.walk(x3, u3, normal=n3)
    torch.testing.assert_close(y3[0], torch.tensor([0.0, 0.148, 0.0], dtype=torch.float64) + 0.8 * ng3, atol=1e-12, rtol=0)
    assert float(jump3[0]) == 0.0


def _rotate_about_y(v):
    """The fold's hinge: f's plane z = 0 onto g's plane z = x (a rotation by 45 degrees about the y axis)."""
    c = s = 1 / math.sqrt(2)
    return torch.stack([c * v[0] - s * v[2], v[1], s * v[0] + c * v[2]])


def test_walk_jump_is_the_area_change_of_the_step(blob, gen):
    """The walk of a constant displacement maps a tiny triangle to one whose log-area change is minus the jump."""
    n, h = 200, 1e-6 * blob.scale
    x = blob.random_base(n, generator=gen, dtype=torch.float64)
    tri = tiny_triangles(blob, x, h, gen).chunk(3)
    # steps of a few faces (long constant-direction walks on a closed surface end stopped at edges)
    u = 0.05 * blob.scale * blob.proju(x, torch.randn(n, 3, generator=gen, dtype=torch.float64))
    n0 = blob.normal(x)  # one plane for the three corners, so that the step is the same constant field
    outs = [blob.walk(p, u, normal=n0) for p in tri]
    faces = [blob.locate(o[0].clone())[0] for o in outs]
    ok = (faces[0] == faces[1]) & (faces[0] == faces[2])  # the three took the same faces (not split by a vertex)
    # points that slid onto an edge (the flow cannot leave it there; no finite density) are rare and left out
    on_edge = blob.barycentric(outs[0][0].clone())[1].min(-1).values < 1e-9
    assert int(on_edge.sum()) <= 0.02 * n
    ok = ok & ~on_edge
    assert int(ok.sum()) >= 0.95 * n
    log_area = log_area_change(torch.cat([o[0] for o in outs]), h)
    crossed = outs[0][1] != 0
    assert int((crossed & ok).sum()) > 50  # the steps do cross edges, so the check is not vacuous
    # density x area is conserved: the area changes by exp(-jump)
    torch.testing.assert_close(log_area[ok], -outs[0][1][ok], atol=1e-5, rtol=0)
    assert _on_surface(blob, outs[0][0]) < 1e-12


def test_expmap_is_the_walk_and_stays_on_the_surface(blob, gen):
    x = blob.random_base(40, generator=gen, dtype=torch.float64)
    u = 0.1 * blob.proju(x, torch.randn(x.shape, generator=gen, dtype=torch.float64))
    y = blob.expmap(x, u)
    assert _on_surface(blob, y) < 1e-12
    torch.testing.assert_close(y, blob.walk(x, u)[0])
    with pytest.raises(NotImplementedError, match="PremetricPath"):
        blob.logmap(x, y)
    with pytest.raises(NotImplementedError, match="PremetricPath"):
        blob.geodesic(x, y, 0.5)


def test_walk_gradients_match_finite_differences(blob):
    x = blob.random_base(6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    u = 0.2 * blob.proju(x, torch.randn(x.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64))
    assert bool((blob.walk(x, u)[1] != 0).any())
    torch.autograd.gradcheck(lambda uu: blob.walk(x, uu), (u.clone().requires_grad_(True),), eps=1e-8, atol=1e-5)


# ------------------------------------------------------------------ base distribution
def test_random_base_uniform_by_area(blob):
    g = torch.Generator().manual_seed(1)
    x = blob.random_base(20000, generator=g, dtype=torch.float64)
    assert x.shape == (20000, 3)
    assert _on_surface(blob, x) < 1e-12
    # area fraction of the region z > 0 (sum of clipped face areas approximated by face centroids)
    face, _ = blob.locate(x)
    counts = torch.bincount(face, minlength=blob.faces.shape[0]).double()
    p = blob.face_areas / blob.total_area
    chi2 = float(((counts - 20000 * p) ** 2 / (20000 * p)).sum())
    dof = blob.faces.shape[0] - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof)  # goodness of fit to area weights
    lp = blob.base_log_prob(x[:3].float())
    assert lp.dtype == torch.float32 and torch.allclose(lp, torch.full((3,), -math.log(blob.total_area)))
    x2 = blob.random_base(2, 5, generator=torch.Generator().manual_seed(1))
    assert x2.shape == (2, 5, 3) and x2.dtype == torch.get_default_dtype()


# ------------------------------------------------------------------ premetrics
@pytest.mark.parametrize("premetric", ["biharmonic", "diffusion"])
def test_spectral_premetric_axioms(blob, gen, dtype, premetric):
    x = blob.random_base(200, generator=gen, dtype=dtype)
    y = blob.random_base(200, generator=gen, dtype=dtype)
    d = blob.dist(x, y, premetric=premetric)
    assert d.shape == (200,) and d.dtype == dtype
    assert bool((d > 0).all())
    torch.testing.assert_close(d, blob.dist(y, x, premetric=premetric), atol=TOL[dtype], rtol=TOL[dtype])
    assert float(blob.dist(x, x, premetric=premetric).abs().max()) == 0.0
    # broadcasting: (B, 3) against (3,)
    torch.testing.assert_close(blob.dist(x, y[0], premetric=premetric), blob.dist(x, y[:1].expand_as(x), premetric=premetric))
    # finite (zero) gradient at x == y, tangent non-degenerate gradient elsewhere
    xr = x.clone().requires_grad_(True)
    (g0,) = torch.autograd.grad(blob.dist(xr, x.clone(), premetric=premetric).sum(), xr)
    assert torch.isfinite(g0).all() and float(g0.abs().max()) == 0.0
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(blob.dist(xr, y, premetric=premetric).sum(), xr)
    assert torch.isfinite(g).all()
    assert float(g.norm(dim=-1).min()) > 1e-3 * float(g.norm(dim=-1).median())
    face, _ = blob.locate(x)
    n = blob.face_normals[face].to(dtype)
    assert float((g * n).sum(-1).abs().max()) < 1e2 * TOL[dtype] * float(g.norm(dim=-1).max())


@pytest.mark.parametrize("premetric", ["biharmonic", "diffusion", "geodesic"])
def test_premetric_gradient_finite_differences(blob, premetric):
    g = torch.Generator().manual_seed(3)
    x = blob.random_base(30, generator=g, dtype=torch.float64)
    y = blob.random_base(30, generator=g, dtype=torch.float64)
    face, b = blob.barycentric(x)
    keep = b.min(-1).values > 0.05  # stay inside the face for the finite difference
    x, y = x[keep], y[keep]
    u = blob.proju(x, torch.randn(x.shape, generator=g, dtype=torch.float64))
    u = u / u.norm(dim=-1, keepdim=True)
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(blob.dist(xr, y, premetric=premetric).sum(), xr)
    h = 1e-6
    fd = (blob.dist(x + h * u, y, premetric=premetric) - blob.dist(x - h * u, y, premetric=premetric)) / (2 * h)
    ok = torch.isclose((grad * u).sum(-1), fd, atol=1e-6, rtol=1e-5)
    # the geodesic reference is a minimum over corner paths: skip the few kinks
    assert bool(ok.all()) if premetric != "geodesic" else float(ok.double().mean()) > 0.9


def test_spectral_distance_formula(ico, gen):
    # at vertices, d_bh^2 = sum_k (phi_k(v) - phi_k(w))^2 / lambda_k^2 straight from the eigenpairs
    V = ico.vertices
    i, j = torch.randint(0, V.shape[0], (2, 20), generator=gen)
    P, lam = ico.eigenvectors[:, 1:], ico.eigenvalues[1:]
    want = (((P[i] - P[j]) / lam) ** 2).sum(-1).sqrt()
    torch.testing.assert_close(ico.dist(V[i], V[j]), want, atol=1e-10, rtol=1e-9)
    want = ((P[i] - P[j]) ** 2 * torch.exp(-2 * ico.tau * lam)).sum(-1).sqrt()
    torch.testing.assert_close(ico.dist(V[i], V[j], premetric="diffusion"), want, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize(
    "premetric,method",
    [("biharmonic", None), ("diffusion", None), ("geodesic", "dijkstra"), ("geodesic", "heat")],
)
def test_icosphere_premetrics_order_like_great_circle(premetric, method):
    if method == "heat":
        pytest.importorskip("potpourri3d")
    s = trimesh.creation.icosphere(subdivisions=3)
    m = Mesh(s.vertices, s.faces, n_eigs=30, premetric=premetric, geodesic_method=method or "dijkstra")
    g = torch.Generator().manual_seed(4)
    x, y = m.random_base(400, generator=g, dtype=torch.float64), m.random_base(400, generator=g, dtype=torch.float64)
    gc = great_circle(x / x.norm(dim=-1, keepdim=True), y / y.norm(dim=-1, keepdim=True))
    rho = spearmanr(m.dist(x, y).numpy(), gc.numpy()).statistic
    assert rho > 0.99, rho
    if premetric == "geodesic":  # and in value: within a few per cent of the great circle
        rel = ((m.dist(x, y) - gc).abs() / gc.clamp_min(0.3)).median()
        assert float(rel) < 0.08


def test_geodesic_reference_small_cases(ico):
    x = ico.random_base(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(ico.geodesic_distance(x, x).abs().max()) == 0.0
    V = ico.vertices
    # vertex to vertex: exactly the matrix entry (corner paths of length 0 at both ends)
    d = ico.geodesic_distance(V[:1], V[100:101])
    assert torch.isclose(d, torch.as_tensor(ico._geodesic_matrix()[0, 100])).all()


# ------------------------------------------------------------------ bad inputs
def test_bad_inputs():
    s = trimesh.creation.icosphere(subdivisions=1)
    V, F = np.asarray(s.vertices), np.asarray(s.faces)
    with pytest.raises(ValueError, match="premetric"):
        Mesh(V, F, n_eigs=5, premetric="heat")
    with pytest.raises(ValueError, match="geodesic_method"):
        Mesh(V, F, n_eigs=5, geodesic_method="fmm")
    with pytest.raises(ValueError, match="indices"):
        Mesh(V, np.vstack([F, [[0, 1, 999]]]), n_eigs=5)
    with pytest.raises(ValueError, match="repeat a vertex"):
        Mesh(V, np.vstack([F, [[0, 0, 1]]]), n_eigs=5)
    Vn = V.copy()
    Vn[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Mesh(Vn, F, n_eigs=5)
    with pytest.raises(TypeError, match="integer"):
        Mesh(V, F.astype(float), n_eigs=5)
    with pytest.raises(ValueError, match=r"shape \(F, 3\)"):
        Mesh(V, F[:, :2], n_eigs=5)
    with pytest.raises(ValueError, match="not used by any face"):
        Mesh(np.vstack([V, [[5.0, 5, 5]]]), F, n_eigs=5)
    with pytest.raises(ValueError, match="connected"):
        Mesh(np.vstack([V, V + 3]), np.vstack([F, F + len(V)]), n_eigs=5)
    Vd = V.copy()
    Vd[F[0, 2]] = Vd[F[0, 0]]  # a zero-area face (two vertices at the same place)
    with pytest.raises(ValueError, match="zero area"):
        Mesh(Vd, F, n_eigs=5)
    with pytest.raises(ValueError, match="n_eigs"):
        Mesh(V, F, n_eigs=len(V))
    with pytest.raises(TypeError, match="n_eigs"):
        Mesh(V, F, n_eigs=2.5)
    with pytest.raises(ValueError, match="tau"):
        Mesh(V, F, n_eigs=5, tau=-1.0)
    m = Mesh(V, F, n_eigs=5)
    with pytest.raises(ValueError, match="premetric"):
        m.dist(m.vertices[:2], m.vertices[2:4], premetric="l2")
    with pytest.raises(ValueError, match=r"trailing shape \(3,\)"):
        m.check_point(torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        m.check_point(torch.full((2, 3), float("nan")))
