"""PremetricPath: the Chen & Lipman premetric conditional flow on meshes and on the sphere."""

import pytest
import torch

from geoflow.paths import GeodesicPath
from geoflow.paths.premetric import PremetricPath
from geoflow.paths.schedulers import CosineScheduler, VPScheduler
from manifolds import Sphere

import trimesh  # a dependency of geoflow: a missing install must fail, not skip
from manifolds.mesh import Mesh, closest_point_on_triangles  # noqa: E402


@pytest.fixture(scope="module")
def ico():
    s = trimesh.creation.icosphere(subdivisions=3)
    return Mesh(s.vertices, s.faces, n_eigs=30)


@pytest.fixture(scope="module")
def blob():
    import numpy as np

    s = trimesh.creation.icosphere(subdivisions=3)
    v = np.asarray(s.vertices)
    r = 1 + 0.3 * np.sin(3 * v[:, 0]) * np.cos(2 * v[:, 1])
    return Mesh(v * r[:, None], s.faces, n_eigs=50, premetric="diffusion")


def _pairs(m, n, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return m.random_base(n, generator=g, dtype=dtype), m.random_base(n, generator=g, dtype=dtype), torch.rand(n, generator=g, dtype=dtype)


def test_sphere_geodesic_premetric_reproduces_geodesic_path():
    # with d = great-circle distance the premetric flow is the geodesic flow (Chen & Lipman, prop. 4)
    S = Sphere(2)
    g = torch.Generator().manual_seed(0)
    x0, x1 = S.random_base(64, generator=g, dtype=torch.float64), S.random_base(64, generator=g, dtype=torch.float64)
    t = torch.rand(64, generator=g, dtype=torch.float64)
    for sched in (None, CosineScheduler()):
        ref = GeodesicPath(S, sched).sample(x0, x1, t)
        out = PremetricPath(S, scheduler=sched, steps=4).sample(x0, x1, t)
        torch.testing.assert_close(out.x_t, ref.x_t, atol=1e-8, rtol=0)
        torch.testing.assert_close(out.dx_t, ref.dx_t, atol=1e-7, rtol=0)


@pytest.mark.parametrize("which", ["ico", "blob"])
def test_flow_tracks_premetric_and_hits_x1(which, request):
    m = request.getfixturevalue(which)
    x0, x1, t = _pairs(m, 200, 1)
    t[:10] = 1.0
    t[10:20] = 0.0
    path = PremetricPath(m, steps=32)
    s = path.sample(x0, x1, t)
    assert s.x_t.shape == x0.shape and s.dx_t.shape == x0.shape
    assert torch.equal(s.x_t[:10], x1[:10])  # hits x1 at t = 1
    assert torch.equal(s.x_t[10:20], x0[10:20])
    _, dist = m.locate(s.x_t)
    assert float(dist.max()) < 1e-5 * m.scale  # stays on the surface
    d0, d = m.dist(x0, x1), m.dist(s.x_t, x1)
    rel = (d - (1 - t) * d0).abs() / d0
    assert float(rel.median()) < 5e-3 and float(rel.quantile(0.9)) < 3e-2
    assert torch.isfinite(s.dx_t).all()
    n = m.normal(s.x_t)  # tangent in the sense of Mesh.proju (the smooth normal), as the model's outputs
    assert float((s.dx_t * n).sum(-1).abs().max()) < 1e-9
    # d/dt d(x_t, x1) = -d0 for CondOT: the velocity decreases the premetric at the right rate
    xr = s.x_t[20:].clone().requires_grad_(True)
    (gd,) = torch.autograd.grad(m.dist(xr, x1[20:]).sum(), xr)
    rate = (gd * s.dx_t[20:]).sum(-1)
    torch.testing.assert_close(rate.median(), -d0[20:].median(), rtol=0.05, atol=0)
    assert float(((rate + d0[20:]).abs() / d0[20:]).median()) < 0.02


def test_few_steps_converge_to_many_steps(blob):
    x0, x1, t = _pairs(blob, 100, 2)
    ref = PremetricPath(blob, steps=256).solve(x0, x1, t)[0]
    errs = []
    for n in (2, 8, 32):
        x = PremetricPath(blob, steps=n).solve(x0, x1, t)[0]
        errs.append(float((x - ref).norm(dim=-1).median()))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.02 * blob.scale


def test_closed_form_gradient_matches_autograd(blob):
    x, y, _ = _pairs(blob, 50, 3)
    fast = PremetricPath(blob)
    slow = PremetricPath(blob, premetric=lambda a, b: blob.dist(a, b))  # autograd route
    d1, g1 = fast.dist_and_grad(x, y)
    d2, g2 = slow.dist_and_grad(x, y)
    torch.testing.assert_close(d1, d2)
    torch.testing.assert_close(g1, g2, atol=1e-10, rtol=1e-8)
    d, g = fast.dist_and_grad(x, x)
    assert float(d.abs().max()) == 0.0 and float(g.abs().max()) == 0.0


def test_velocity_matches_time_derivative(ico):
    x0, x1, t = _pairs(ico, 60, 5)
    t = 0.1 + 0.8 * t
    path = PremetricPath(ico, steps=128)
    h = 1e-3
    a, b = path.sample(x0, x1, t - h), path.sample(x0, x1, t + h)
    fd = (b.x_t - a.x_t) / (2 * h)
    v = path.sample(x0, x1, t).dx_t
    # The premetric's gradient jumps across edges (piecewise-linear interpolation), so exact
    # trajectories may slide along an edge where the velocity at x_t (one face's field) differs
    # from the trajectory's direction: compare directions and the rate of decrease of d only.
    cos = (fd * v).sum(-1) / (fd.norm(dim=-1) * v.norm(dim=-1))
    assert float(cos.median()) > 0.95
    d0 = ico.dist(x0, x1)
    H = 0.05  # d(x_t, x1) is linear in t (CondOT): its slope is -d0
    rate = (ico.dist(path.sample(x0, x1, t + H).x_t, x1) - ico.dist(path.sample(x0, x1, t - H).x_t, x1)) / (2 * H)
    assert float(((rate + d0).abs() / d0).median()) < 0.02


@pytest.mark.parametrize("scheduler", [None, CosineScheduler()])
def test_velocity_is_the_exact_path_rate(scheduler):
    # Chen & Lipman's velocity on the exact path: <grad d, dx_t> = -kappa'(t) d(x0, x1) at the simulated
    # x_t, for every t up to 1 (no 1 / kappa~ blow-up of the path error); chordal premetric on S^2,
    # where the projection is exact, with a coarse 4-step path
    sphere = Sphere(2)
    g = torch.Generator().manual_seed(7)
    x0 = sphere.random_base(200, generator=g, dtype=torch.float64)
    x1 = sphere.random_base(200, generator=g, dtype=torch.float64)
    t = torch.cat([torch.rand(150, generator=g, dtype=torch.float64), 1 - torch.logspace(-9, -2, 50, dtype=torch.float64)])

    def chordal(x, y):
        return (x - y).norm(dim=-1)

    kw = {} if scheduler is None else {"scheduler": scheduler}
    path = PremetricPath(sphere, premetric=chordal, steps=4, **kw)
    s = path.sample(x0, x1, t)
    d, grad = path.dist_and_grad(s.x_t, x1)
    kappa, d_kappa = path.scheduler.kappa(t)
    live = d > 0  # x_t == x1 (kappa rounds to 1) uses the last iterate's gradient instead: checked below
    assert int(live.sum()) > 190
    rate = (grad * s.dx_t).sum(-1)
    torch.testing.assert_close(rate[live], -(d_kappa * chordal(x0, x1))[live], atol=1e-12, rtol=1e-10)
    assert torch.isfinite(s.dx_t).all()
    speed, bound = s.dx_t.norm(dim=-1), d_kappa.abs() * chordal(x0, x1) / grad.norm(dim=-1).clamp_min(0.5)
    assert bool((speed[~live] <= 1.01 * bound[~live]).all())  # at x1 too: the exact-path speed, not a blow-up


def test_edge_cases_finite(ico, dtype):
    x0, x1, t = _pairs(ico, 20, 6, dtype)
    x1[:5] = x0[:5]  # x0 == x1
    t[5:10] = 1.0
    t[10:12] = 1.0 - 1e-7
    s = PremetricPath(ico, steps=8).sample(x0, x1, t)
    assert torch.isfinite(s.x_t).all() and torch.isfinite(s.dx_t).all()
    assert float(s.dx_t[:5].abs().max()) < 1e-5  # x0 == x1: (nearly) no motion
    assert float(s.dx_t[5:12].norm(dim=-1).min()) > 0  # the limit velocity at t = 1, not zero
    assert s.x_t.dtype == dtype


def test_premetric_options_and_errors(ico):
    x0, x1, t = _pairs(ico, 8, 7)
    s = PremetricPath(ico, premetric="diffusion", steps=4).sample(x0, x1, t)
    assert torch.isfinite(s.dx_t).all()
    s = PremetricPath(ico, premetric="geodesic", steps=4).sample(x0, x1, t)
    assert torch.isfinite(s.dx_t).all()
    with pytest.raises(ValueError, match="premetric"):
        PremetricPath(ico, premetric="l2")
    with pytest.raises(ValueError, match="needs a manifolds.Mesh"):
        PremetricPath(Sphere(2), premetric="biharmonic")
    with pytest.raises(TypeError, match="premetric"):
        PremetricPath(ico, premetric=3)
    with pytest.raises(ValueError, match="steps"):
        PremetricPath(ico, steps=0)
    with pytest.raises(TypeError, match="steps"):
        PremetricPath(ico, steps=2.0)
    with pytest.raises(ValueError, match="alpha_0 = 0"):
        PremetricPath(ico, scheduler=VPScheduler())
    with pytest.raises(TypeError, match="manifold"):
        PremetricPath("mesh")
    with pytest.raises(ValueError, match="PremetricPath.sample.*x0.*use projx"):
        PremetricPath(ico).sample(x0 * 1.1, x1, t)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        PremetricPath(ico).sample(x0, x1, t + 2)


# ------------------------------------------------------------- several times per simulated pair
@pytest.mark.parametrize("which", ["ico", "blob"])
def test_sample_times_tracks_premetric_and_hits_x1(which, request):
    # the grid form of the path (one simulation per pair, one Euler step of size < 1/n from the grid
    # state below kappa): the same checks as the per-time solve, same tolerances
    m = request.getfixturevalue(which)
    x0, x1, _ = _pairs(m, 50, 11)
    g = torch.Generator().manual_seed(12)
    t = torch.rand(50, 4, generator=g, dtype=torch.float64)
    t[:5, 0], t[5:10, 1], t[10:15, 2] = 1.0, 0.0, 0.5  # kappa = 1, 0 and a grid point (s_16 = 0.5)
    path = PremetricPath(m, steps=32)
    s = path.sample_times(x0, x1, t)
    assert s.x_t.shape == (200, 3) and s.dx_t.shape == (200, 3) and s.t.shape == (200,)
    assert torch.equal(s.t, t.reshape(-1)) and torch.equal(s.x0, x0.repeat_interleave(4, 0))  # pair-major rows
    assert torch.equal(s.x1, x1.repeat_interleave(4, 0))
    xt = s.x_t.reshape(50, 4, 3)
    assert torch.equal(xt[:5, 0], x1[:5]) and torch.equal(xt[5:10, 1], x0[5:10])
    _, dist = m.locate(s.x_t)
    assert float(dist.max()) < 1e-5 * m.scale
    tf = t.reshape(-1)
    d0, d = m.dist(s.x0, s.x1), m.dist(s.x_t, s.x1)
    rel = (d - (1 - tf) * d0).abs() / d0
    assert float(rel.median()) < 5e-3 and float(rel.quantile(0.9)) < 3e-2
    assert torch.isfinite(s.dx_t).all()
    assert float((s.dx_t * m.normal(s.x_t)).sum(-1).abs().max()) < 1e-9
    live = tf < 1
    xr = s.x_t[live].clone().requires_grad_(True)
    (gd,) = torch.autograd.grad(m.dist(xr, s.x1[live]).sum(), xr)
    rate = (gd * s.dx_t[live]).sum(-1)
    assert float(((rate + d0[live]).abs() / d0[live]).median()) < 0.02
    # at a grid time the point is the grid state itself: the same as the per-time solve with n = 16 steps
    # of size 1/32 (identical step sizes and order)
    half = PremetricPath(m, steps=16).solve(x0[10:15], x1[10:15], torch.full((5,), 0.5, dtype=torch.float64))[0]
    torch.testing.assert_close(xt[10:15, 2], half, atol=1e-12, rtol=0)


def test_sample_times_one_time_matches_grid_and_converges(blob):
    # with one time per pair the grid form is another discretisation of the same flow: both approach
    # the 256-step solve as n grows, at comparable error
    x0, x1, t = _pairs(blob, 100, 13)
    ref = PremetricPath(blob, steps=256).solve(x0, x1, t)[0]
    errs = []
    for n in (2, 8, 32):
        x = PremetricPath(blob, steps=n).sample_times(x0, x1, t[:, None]).x_t
        errs.append(float((x - ref).norm(dim=-1).median()))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.02 * blob.scale
    states, faces, d0, _, _ = PremetricPath(blob, steps=8).solve_grid(x0, x1)
    assert states.shape == (9, 100, 3) and faces.shape == (9, 100)
    assert torch.equal(states[0], x0)
    torch.testing.assert_close(states[-1], x1, atol=0.02 * blob.scale, rtol=0)  # the last step is a Newton step
    torch.testing.assert_close(d0, blob.dist(x0, x1))
    tri = blob.vertices[blob.faces]
    for j in (0, 3, 8):  # each state lies in its face (a point on an edge may name either face)
        f = faces[j]
        q = closest_point_on_triangles(states[j], tri[f, 0], tri[f, 1], tri[f, 2])
        assert float((q - states[j]).norm(dim=-1).max()) < 1e-12


def test_sample_times_edge_cases_and_errors(ico, dtype):
    x0, x1, _ = _pairs(ico, 12, 14, dtype)
    x1[:4] = x0[:4]  # x0 == x1
    t = torch.rand(12, 3, generator=torch.Generator().manual_seed(15), dtype=dtype)
    t[4:8, 0] = 1.0
    t[8:12, 1] = 1.0 - 1e-7
    s = PremetricPath(ico, steps=8).sample_times(x0, x1, t)
    assert torch.isfinite(s.x_t).all() and torch.isfinite(s.dx_t).all() and s.x_t.dtype == dtype
    v = s.dx_t.reshape(12, 3, 3)
    assert float(v[:4].abs().max()) < 1e-5
    assert float(v[4:8, 0].norm(dim=-1).min()) > 0 and float(v[8:12, 1].norm(dim=-1).min()) > 0
    path = PremetricPath(ico)
    with pytest.raises(ValueError, match=r"shape \(pairs, r\)"):
        path.sample_times(x0, x1, t[:, 0])
    with pytest.raises(ValueError, match=r"shape \(pairs, r\)"):
        path.sample_times(x0, x1, t[:, :0])
    with pytest.raises(ValueError, match=r"`t` must have shape \(batch,\)"):
        path.sample_times(x0, x1, t[:5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        path.sample_times(x0, x1, t + 0.5)
    with pytest.raises(ValueError, match="PremetricPath.sample_times.*x0"):
        path.sample_times(x0 * 1.1, x1, t)
    with pytest.raises(TypeError, match="x0"):
        path.sample_times(x0.numpy(), x1, t)


@pytest.mark.parametrize("which", ["ico", "blob"])
def test_sample_times_on_rows_of_a_joint_grid(which, request):
    # a simulation of many pairs at once, cut into rows (grid_rows): each pair's path is the one it
    # gets alone (the rows do not interact), so sample_times gives the same sample
    m = request.getfixturevalue(which)
    x0, x1, _ = _pairs(m, 30, 16)
    t = torch.rand(30, 3, generator=torch.Generator().manual_seed(17), dtype=torch.float64)
    path = PremetricPath(m, steps=8)
    grid = path.solve_grid(x0, x1)
    for rows in (slice(0, 10), slice(10, 30), torch.tensor([29, 3, 3, 17])):
        alone = path.sample_times(x0[rows], x1[rows], t[rows])
        cut = path.sample_times(x0[rows], x1[rows], t[rows], grid=PremetricPath.grid_rows(grid, rows))
        torch.testing.assert_close(cut.x_t, alone.x_t, atol=1e-12, rtol=0)
        torch.testing.assert_close(cut.dx_t, alone.dx_t, atol=1e-10, rtol=1e-10)
    # a grid that is not these pairs' is refused, naming what is wrong
    with pytest.raises(ValueError, match=r"`grid` states must have shape \(9, 10, 3\)"):
        path.sample_times(x0[:10], x1[:10], t[:10], grid=PremetricPath.grid_rows(grid, slice(0, 12)))
    with pytest.raises(ValueError, match=r"`grid` states must have shape \(5, 10, 3\).*got \(9, 10, 3\)"):
        PremetricPath(m, steps=4).sample_times(x0[:10], x1[:10], t[:10], grid=PremetricPath.grid_rows(grid, slice(0, 10)))
    with pytest.raises(TypeError, match="5-tuple that PremetricPath.solve_grid returns"):
        path.sample_times(x0, x1, t, grid=grid[0])
    states, faces, d0, e1, face1 = grid
    with pytest.raises(ValueError, match=r"`grid` faces must have shape \(9, 30\)"):
        path.sample_times(x0, x1, t, grid=(states, None, d0, e1, face1))
    with pytest.raises(ValueError, match=r"`grid` d0 must have shape \(30,\)"):
        path.sample_times(x0, x1, t, grid=(states, faces, d0[:3], e1, face1))


def test_tail_refines_the_last_interval(blob, ico):
    # tail points s = 1 - 0.3^i / n before the final Newton step: the same states below s = 1 - 1/n, the
    # same samples there, and paths that end on x1 (end error / mesh size: median 3.7e-3 -> 1.1e-5 with 4 steps)
    x0, x1, _ = _pairs(blob, 200, 21)
    plain, tailed = PremetricPath(blob, steps=4), PremetricPath(blob, steps=4, tail=4)
    torch.testing.assert_close(tailed.s_grid(), torch.tensor([0, 0.25, 0.5, 0.75, 1 - 0.3 / 4, 1 - 0.09 / 4, 1 - 0.027 / 4,
                                                            1 - 0.0081 / 4, 1], dtype=torch.float64))
    a, b = plain.solve_grid(x0, x1), tailed.solve_grid(x0, x1)
    assert a[0].shape == (5, 200, 3) and b[0].shape == (9, 200, 3) and b[1].shape == (9, 200)
    torch.testing.assert_close(b[0][:4], a[0][:4], atol=1e-12, rtol=0)
    end_a, end_b = ((s[0][-1] - x1).norm(dim=-1) / blob.scale for s in (a, b))
    assert float(end_b.median()) < 0.01 * float(end_a.median()) and float(end_b.quantile(0.9)) < 1e-4
    # d along the tail follows the identity d = (1 - s) d0 as closely as the last uniform state does (the
    # relative error does not grow while the distance shrinks 123-fold)
    d0, sg = blob.dist(x0, x1), tailed.s_grid()
    rel = [float(((blob.dist(b[0][j], x1) / d0 - (1 - sg[j])).abs() / (1 - sg[j])).median()) for j in range(3, 8)]
    assert max(rel[1:]) < 1.1 * rel[0], rel
    # sample_times: below s = 3/4 the same sample; in the last interval from the tail states
    t = torch.rand(200, 3, generator=torch.Generator().manual_seed(22), dtype=torch.float64)
    t[:, 2] = 1 - 0.05 * t[:, 2]  # kappa in (0.95, 1]: from the tail states (s >= 1 - 0.3 / 4)
    sa, sb = plain.sample_times(x0, x1, t), tailed.sample_times(x0, x1, t)
    low = t.reshape(-1) < 0.75
    torch.testing.assert_close(sb.x_t[low], sa.x_t[low], atol=1e-12, rtol=0)
    torch.testing.assert_close(sb.dx_t[low], sa.dx_t[low], atol=1e-10, rtol=1e-10)
    last = (t.reshape(-1) > 0.95) & (t.reshape(-1) < 1)
    ideal = (1 - t.reshape(-1)[last]) * d0.repeat_interleave(3)[last]  # relative to the remaining distance
    err_a = (blob.dist(sa.x_t[last], sa.x1[last]) - ideal).abs() / ideal
    err_b = (blob.dist(sb.x_t[last], sb.x1[last]) - ideal).abs() / ideal
    assert float(err_b.median()) < 0.5 * float(err_a.median()), (float(err_b.median()), float(err_a.median()))
    assert torch.isfinite(sb.dx_t).all()
    assert "tail=4" in repr(tailed)
    with pytest.raises(ValueError, match="`tail` must be >= 0, got -1"):
        PremetricPath(ico, tail=-1)
    with pytest.raises(TypeError, match="`tail` must be an int"):
        PremetricPath(ico, tail=2.0)
