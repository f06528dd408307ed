"""geoflow on a CUDA GPU: every result equals the CPU's on the same inputs (skipped without CUDA).

Inputs are drawn on the CPU from seeded generators and copied to ``cuda:0``; each operation runs on
both devices and the CUDA result, brought back, must equal the CPU result up to float rounding
(float64: 1e-9 relative and absolute, float32: 1e-4; gradients and solver outputs a few times
that), and every output must stay on the input's device.  Covered: the manifolds of
``tests/manifolds/cases.py`` and ``Mesh``; geodesic, affine and premetric paths with their losses
and gradients; ``sample`` / ``log_likelihood`` (exact and Hutchinson); the couplings; EGNN / TFN
(and their equivariance on the GPU); the particle energies; the trainer end to end (checkpoints,
resume, a checkpoint read back on the CPU, particles, QM9), the CLI's ``--device``, and torchrun
choosing nccl.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")

import manifolds as M  # noqa: E402
from geoflow.couplings import AlignmentCoupling, OTCoupling, PairedCoupling  # noqa: E402
from geoflow.losses import cfm_loss, rcfm_loss  # noqa: E402
from geoflow.nn import EGNNVelocity, MLPVelocity, TFNVelocity  # noqa: E402
from geoflow.paths import AffinePath, CondOTScheduler, CosineScheduler, GeodesicPath, PremetricPath  # noqa: E402
from geoflow.solvers import log_likelihood, sample  # noqa: E402
from geoflow.testing import assert_equivariant  # noqa: E402

from .manifolds.cases import CASES  # noqa: E402
from .train._state import fit_interrupted  # noqa: E402

CUDA = torch.device("cuda", 0)
_ROOT = Path(__file__).resolve().parents[1]
#: (rtol = atol) per dtype for values; ``scale`` widens it for gradients and ODE solves.
_TOL = {torch.float64: 1e-9, torch.float32: 1e-4}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _same(got: torch.Tensor, ref: torch.Tensor, dtype=None, *, scale: float = 1.0, what: str = "") -> None:
    """``got`` (computed on the GPU) lies on the GPU and equals the CPU result ``ref``."""
    assert isinstance(got, torch.Tensor) and got.device.type == "cuda", f"{what}: result on {getattr(got, 'device', got)}"
    assert ref.device.type == "cpu"
    tol = _TOL[dtype or ref.dtype] * scale
    torch.testing.assert_close(got.cpu(), ref, rtol=tol, atol=tol, msg=lambda m: f"{what}: CUDA != CPU: {m}")


def _both(fn, *args):
    """``fn`` on the CPU arguments and on their CUDA copies: (CUDA result, CPU result)."""
    ref = fn(*args)
    got = fn(*[a.to(CUDA) if isinstance(a, torch.Tensor) else a for a in args])
    return got, ref


# ============================================================================ manifolds
def _points(m, dtype, n=6, seed=0):
    g = _gen(seed)
    x = m.random_base(n, generator=g, dtype=dtype)
    y = m.random_base(n, generator=g, dtype=dtype)
    u = m.proju(x, 0.3 * torch.randn(x.shape, generator=g, dtype=dtype))
    w = torch.randn(x.shape, generator=g, dtype=dtype)  # weights of a scalar test function
    return x, y, u, w


@pytest.mark.parametrize("name", sorted(CASES))
def test_manifold_operations_on_cuda_equal_the_cpu(name, dtype):
    m = CASES[name]()
    x, y, u, _ = _points(m, dtype)
    t = torch.rand(x.shape[0], generator=_gen(1), dtype=dtype)
    ops = {
        "projx": lambda x, y, u, t: m.projx(x + 0.01 * u),
        "proju": lambda x, y, u, t: m.proju(x, 3 * u + 0.1 * y),
        "expmap": lambda x, y, u, t: m.expmap(x, u),
        "logmap": lambda x, y, u, t: m.logmap(x, y),
        "dist": lambda x, y, u, t: m.dist(x, y),
        "inner": lambda x, y, u, t: m.inner(x, u, u),
        "geodesic": lambda x, y, u, t: m.geodesic(x, y, t),
        "geodesic t=0.3": lambda x, y, u, t: m.geodesic(x, y, 0.3),
        "base_log_prob": lambda x, y, u, t: m.base_log_prob(x),
    }
    for what, op in ops.items():
        got, ref = _both(op, x, y, u, t)
        _same(got, ref, dtype, scale=10, what=f"{name}.{what}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_manifold_random_base_on_cuda(name, dtype):
    """A CPU generator gives the same points on every device; a CUDA generator draws on the GPU."""
    m = CASES[name]()
    ref = m.random_base(5, generator=_gen(3), dtype=dtype)
    got = m.random_base(5, generator=_gen(3), dtype=dtype, device=CUDA)
    _same(got, ref, dtype, what=f"{name}.random_base(generator=cpu, device=cuda)")
    g = torch.Generator(device=CUDA).manual_seed(3)
    on_gpu = m.random_base(4, 2, generator=g, dtype=dtype)
    assert on_gpu.device == CUDA and on_gpu.shape[:2] == (4, 2) and on_gpu.dtype == dtype
    m.check_point(on_gpu)
    assert m.random_base(3, dtype=dtype, device="cuda").device.type == "cuda"
    torch.testing.assert_close(m.random_base(4, 2, generator=torch.Generator(device=CUDA).manual_seed(3), dtype=dtype),
                               on_gpu, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_manifold_gradients_on_cuda_equal_the_cpu(name, dtype):
    m = CASES[name]()
    x, y, u, w = _points(m, dtype)

    def grads(x, y, u, w):
        x, y, u = (a.detach().clone().requires_grad_(True) for a in (x, y, u))
        f = (m.dist(x, y) ** 2).sum() + (w * m.expmap(x, u)).sum() + (w * m.logmap(x, y)).sum()
        f = f + (w * m.geodesic(x, y, 0.4)).sum() + m.inner(x, u, u).sum()
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(f, (x, y, u))])

    got, ref = _both(grads, x, y, u, w)
    assert torch.isfinite(ref).all()
    _same(got, ref, dtype, scale=100, what=f"{name} gradients")


@pytest.fixture(scope="module")
def mesh():
    trimesh = pytest.importorskip("trimesh")
    s = trimesh.creation.icosphere(subdivisions=2)
    return M.Mesh(s.vertices, s.faces, n_eigs=12)


def test_mesh_on_cuda_equals_the_cpu(mesh, dtype):
    """Mesh keeps its point location on the CPU (KD-tree) and computes on the points' device."""
    m = mesh
    g = _gen(0)
    x = m.random_base(8, generator=g, dtype=dtype)
    y = m.random_base(8, generator=g, dtype=dtype)
    u = m.proju(x, 0.05 * torch.randn(x.shape, generator=g, dtype=dtype))
    for what, op in {
        "projx": lambda x, y, u: m.projx(x + 0.02 * u),
        "proju": lambda x, y, u: m.proju(x, u + 0.1 * y),
        "expmap": lambda x, y, u: m.expmap(x, u),
        "normal": lambda x, y, u: m.normal(x),
        "dist (biharmonic)": lambda x, y, u: m.dist(x, y),
        "dist (diffusion)": lambda x, y, u: m.dist(x, y, premetric="diffusion"),
        "dist (geodesic)": lambda x, y, u: m.dist(x, y, premetric="geodesic"),
        "base_log_prob": lambda x, y, u: m.base_log_prob(x),
    }.items():
        got, ref = _both(op, x, y, u)
        _same(got, ref, dtype, scale=10, what=f"Mesh.{what}")
    face_gpu, d_gpu = m.locate(x.to(CUDA))
    face_cpu, _ = m.locate(x)
    assert face_gpu.device == CUDA and d_gpu.device == CUDA and torch.equal(face_gpu.cpu(), face_cpu)
    _same(m.random_base(6, generator=_gen(5), dtype=dtype, device=CUDA), m.random_base(6, generator=_gen(5), dtype=dtype),
          dtype, what="Mesh.random_base")
    gpu_draw = m.random_base(50, generator=torch.Generator(device=CUDA).manual_seed(0), dtype=dtype)
    assert gpu_draw.device == CUDA
    m.check_point(gpu_draw)

    def grads(x, y):
        x = x.detach().clone().requires_grad_(True)
        return torch.autograd.grad(m.dist(x, y).sum() + m.proju(x, y).pow(2).sum(), x)[0]

    got, ref = _both(grads, x, y)
    _same(got, ref, dtype, scale=100, what="Mesh gradients")
    with pytest.raises(NotImplementedError, match="no logarithm map"):
        m.logmap(x.to(CUDA), y.to(CUDA))


def test_mesh_walk_and_likelihood_on_cuda(mesh, dtype):
    """Mesh.walk (face-by-face steps with flux jumps) and the mesh likelihood on CUDA equal the CPU's."""
    m = mesh
    g = _gen(7)
    x = m.random_base(32, generator=g, dtype=dtype)
    u = m.proju(x, 0.3 * torch.randn(x.shape, generator=g, dtype=dtype))
    (yg, jg), (yc, jc) = m.walk(x.to(CUDA), u.to(CUDA)), m.walk(x, u)
    assert yg.device == CUDA and jg.device == CUDA and bool((jc != 0).any())
    _same(yg, yc, dtype, scale=10, what="Mesh.walk end points")
    _same(jg, jc, dtype, scale=100, what="Mesh.walk jumps")
    a = torch.tensor([0.2, 0.5, -0.3], dtype=dtype)

    def v(x, t):
        return a.to(x.device) * (1 + 0.5 * x[..., :1])

    got = log_likelihood(v, x.to(CUDA), m, method="rk4", steps=6)
    ref = log_likelihood(v, x, m, method="rk4", steps=6)
    _same(got, ref, dtype, scale=1e3, what="mesh log_likelihood")
    # a seeded CPU generator gives the same Hutchinson probe on every device
    hg = log_likelihood(v, x.to(CUDA), m, method="rk4", steps=6, divergence="hutchinson", generator=_gen(3))
    hc = log_likelihood(v, x, m, method="rk4", steps=6, divergence="hutchinson", generator=_gen(3))
    _same(hg, hc, dtype, scale=1e3, what="mesh Hutchinson log_likelihood with a CPU generator")


# ============================================================================ paths and losses
def _mlp(manifold, dtype, seed=0, **kw):
    torch.manual_seed(seed)
    return MLPVelocity(manifold, hidden=32, depth=2, time_dim=8, **kw).to(dtype)


def _loss_and_grads(make_path, loss_fn, manifold, model, x0, x1, t):
    """(x_t, dx_t, loss, parameter gradients) of one flow-matching step, on the device of the inputs."""
    dev = x0.device
    model = model.to(dev)
    model.zero_grad(set_to_none=True)
    s = make_path().sample(x0, x1, t)
    loss = loss_fn(manifold, model, s)
    loss.backward()
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    out = (s.x_t.detach(), s.dx_t.detach(), loss.detach().reshape(1), grads)
    model.to("cpu")
    return out


@pytest.mark.parametrize("name", ["sphere2", "torus2", "poincare2", "lorentz2", "spd2_affine", "so3",
                                  "product_sphere_torus_euclid"])
@pytest.mark.parametrize("scheduler", [CondOTScheduler, CosineScheduler])
def test_geodesic_path_and_rcfm_loss_on_cuda(name, scheduler, dtype):
    m = CASES[name]()
    x0, x1, _, _ = _points(m, dtype, n=16)
    t = torch.rand(16, generator=_gen(2), dtype=dtype)
    model = _mlp(m, dtype)
    rcfm = lambda man, model, s: rcfm_loss(man, model, s)  # noqa: E731
    got = _loss_and_grads(lambda: GeodesicPath(m, scheduler()), rcfm, m, model, x0.to(CUDA), x1.to(CUDA), t.to(CUDA))
    ref = _loss_and_grads(lambda: GeodesicPath(m, scheduler()), rcfm, m, model, x0, x1, t)
    for what, a, b in zip(("x_t", "dx_t", "loss", "gradients"), got, ref):
        _same(a, b, dtype, scale=100, what=f"GeodesicPath on {name}: {what}")


def test_affine_path_and_cfm_loss_on_cuda(dtype):
    m = M.Euclidean(4)
    g = _gen(0)
    x0, x1 = torch.randn(32, 4, generator=g, dtype=dtype), torch.randn(32, 4, generator=g, dtype=dtype)
    t = torch.rand(32, generator=g, dtype=dtype)
    model = _mlp(m, dtype)
    cfm = lambda man, model, s: cfm_loss(model, s)  # noqa: E731
    for scheduler in (CondOTScheduler(), CondOTScheduler(sigma_min=1e-2), CosineScheduler()):
        got = _loss_and_grads(lambda: AffinePath(scheduler), cfm, m, model, x0.to(CUDA), x1.to(CUDA), t.to(CUDA))
        ref = _loss_and_grads(lambda: AffinePath(scheduler), cfm, m, model, x0, x1, t)
        for what, a, b in zip(("x_t", "dx_t", "loss", "gradients"), got, ref):
            _same(a, b, dtype, scale=100, what=f"AffinePath({scheduler}): {what}")


def test_premetric_path_on_cuda(mesh, dtype):
    """Sphere (smooth premetric): CUDA == CPU.  Mesh: most draws agree, every one is a valid sample.

    On a mesh the premetric's gradient is constant inside each face and jumps across edges, and the
    projected Euler steps put points exactly on edges (projx clamps to the triangle); which face such
    a point belongs to is then decided by the last bit of its coordinates, so a draw may follow
    another face on the GPU than on the CPU (measured on an H100: 1 to 2 of 16 draws in float32 and
    in float64).  Given the same sample, the loss and its gradients agree tightly.
    """
    from geoflow.paths import PathSample

    g = _gen(0)
    rcfm = lambda man, model, s: rcfm_loss(man, model, s)  # noqa: E731
    s2 = M.Sphere(2)
    x0, x1 = s2.random_base(16, generator=g, dtype=dtype), s2.random_base(16, generator=g, dtype=dtype)
    t = torch.rand(16, generator=g, dtype=dtype)
    model = _mlp(s2, dtype)
    make = lambda: PremetricPath(s2, None, steps=4)  # noqa: E731
    got = _loss_and_grads(make, rcfm, s2, model, x0.to(CUDA), x1.to(CUDA), t.to(CUDA))
    ref = _loss_and_grads(make, rcfm, s2, model, x0, x1, t)
    for what, a, b in zip(("x_t", "dx_t", "loss", "gradients"), got, ref):
        _same(a, b, dtype, scale=100, what=f"PremetricPath(Sphere(2)): {what}")
    for premetric in ("biharmonic", "diffusion"):
        x0, x1 = mesh.random_base(16, generator=g, dtype=dtype), mesh.random_base(16, generator=g, dtype=dtype)
        t = torch.rand(16, generator=g, dtype=dtype)
        path = PremetricPath(mesh, premetric, steps=4)
        s_cpu = path.sample(x0, x1, t)
        s_gpu = path.sample(x0.to(CUDA), x1.to(CUDA), t.to(CUDA))
        assert s_gpu.x_t.device == CUDA and s_gpu.dx_t.device == CUDA
        mesh.check_point(s_gpu.x_t)
        assert bool(torch.isfinite(s_gpu.dx_t).all())
        tol = 100 * _TOL[dtype]
        ex = (s_gpu.x_t.cpu() - s_cpu.x_t).abs().amax(-1)
        ev = (s_gpu.dx_t.cpu() - s_cpu.dx_t).abs().amax(-1) / (1 + s_cpu.dx_t.abs().amax(-1))
        agree = (ex <= tol) & (ev <= tol)
        assert float(agree.double().mean()) >= 0.75, f"{premetric}: only {int(agree.sum())} of 16 draws agree"
        # the loss of one given sample: CUDA == CPU
        model = _mlp(mesh, dtype)
        on_cpu = PathSample(**{k: getattr(s_gpu, k).cpu() for k in ("x_t", "dx_t", "t", "x0", "x1")})
        ident = lambda: _Fixed(on_cpu)  # noqa: E731
        got = _loss_and_grads(ident, rcfm, mesh, model, s_gpu.x0, s_gpu.x1, s_gpu.t)
        ref = _loss_and_grads(ident, rcfm, mesh, model, on_cpu.x0, on_cpu.x1, on_cpu.t)
        for what, a, b in zip(("loss", "gradients"), got[2:], ref[2:]):
            _same(a, b, dtype, scale=100, what=f"rcfm_loss on a mesh premetric sample ({premetric}): {what}")


class _Fixed:
    """A 'path' that returns one given sample, moved to the device of the inputs."""

    def __init__(self, s):
        self.s = s

    def sample(self, x0, x1, t):
        from geoflow.paths import PathSample

        return PathSample(**{k: getattr(self.s, k).to(x0.device) for k in ("x_t", "dx_t", "t", "x0", "x1")})


# ============================================================================ solvers
class _Diagonal(torch.nn.Module):
    """v(x, t) = tanh(a x + b t) elementwise: a diagonal Jacobian, so a Rademacher probe gives the exact trace."""

    def __init__(self, n, dtype):
        super().__init__()
        g = _gen(7)
        self.a = torch.nn.Parameter(torch.randn(n, generator=g, dtype=dtype))
        self.b = torch.nn.Parameter(torch.randn(n, generator=g, dtype=dtype))

    def forward(self, x, t, cond=None):
        return torch.tanh(self.a * x + self.b * t[:, None])


@pytest.mark.parametrize("name", ["euclidean3", "sphere2", "torus2", "poincare2", "lorentz2", "so3", "spd3_logeuclidean"])
def test_sample_and_exact_log_likelihood_on_cuda(name, dtype):
    m = CASES[name]()
    model = _mlp(m, dtype).eval()
    x0 = m.random_base(24, generator=_gen(0), dtype=dtype)
    with torch.no_grad():
        ref = sample(model, x0, m, method="rk4", steps=6)
        got = sample(model.to(CUDA), x0.to(CUDA), m, method="rk4", steps=6)
    _same(got, ref, dtype, scale=100, what=f"sample on {name}")
    model.cpu()
    ref_lp = log_likelihood(model, ref, m, steps=6)
    got_lp = log_likelihood(model.to(CUDA), ref.to(CUDA), m, steps=6)
    _same(got_lp, ref_lp, dtype, scale=100, what=f"log_likelihood on {name}")


def test_adaptive_solver_on_cuda():
    m, dtype = M.Euclidean(3), torch.float64
    model = _mlp(m, dtype).eval()
    x0 = torch.randn(16, 3, generator=_gen(0), dtype=dtype)
    with torch.no_grad():
        ref = sample(model, x0, m, method="dopri5", atol=1e-9, rtol=1e-9)
        got = sample(model.to(CUDA), x0.to(CUDA), m, method="dopri5", atol=1e-9, rtol=1e-9)
    _same(got, ref, dtype, scale=1e3, what="dopri5 sample")


def test_hutchinson_log_likelihood_on_cuda(dtype):
    # Rademacher probes on a diagonal Jacobian are exact: the CUDA estimate equals the CPU's exact value
    m = M.Euclidean(5)
    field = _Diagonal(5, dtype)
    x1 = torch.randn(40, 5, generator=_gen(1), dtype=dtype)
    exact = log_likelihood(field, x1, m, steps=8)
    g = torch.Generator(device=CUDA).manual_seed(0)
    got = log_likelihood(field.to(CUDA), x1.to(CUDA), m, steps=8, divergence="hutchinson-rademacher", generator=g)
    _same(got, exact, dtype, scale=100, what="Hutchinson (Rademacher, diagonal field)")
    # Gaussian probes drawn on the GPU: reproducible from the seed, unbiased around the exact value
    net = _mlp(M.Euclidean(2), dtype).eval()
    x1 = torch.randn(400, 2, generator=_gen(2), dtype=dtype)
    exact = log_likelihood(net, x1, M.Euclidean(2), steps=4)
    net.to(CUDA)
    a = log_likelihood(net, x1.to(CUDA), M.Euclidean(2), steps=4, divergence="hutchinson",
                       generator=torch.Generator(device=CUDA).manual_seed(5))
    b = log_likelihood(net, x1.to(CUDA), M.Euclidean(2), steps=4, divergence="hutchinson",
                       generator=torch.Generator(device=CUDA).manual_seed(5))
    assert a.device == CUDA and torch.equal(a, b)
    diff = (a.cpu() - exact).double()
    assert float(diff.abs().max()) > 0  # it is an estimate ...
    assert abs(float(diff.mean())) <= 5 * float(diff.std()) / len(diff) ** 0.5 + 1e-6  # ... without bias


# ============================================================================ couplings
def test_ot_couplings_on_cuda(dtype):
    g = _gen(0)
    x0, x1 = torch.randn(64, 3, generator=g, dtype=dtype), torch.randn(64, 3, generator=g, dtype=dtype)
    s2 = M.Sphere(2)
    p0, p1 = s2.random_base(48, generator=g, dtype=dtype), s2.random_base(48, generator=g, dtype=dtype)
    labels = torch.randint(0, 3, (64,), generator=g)
    cases = {
        "exact": (lambda: OTCoupling("exact"), (x0, x1)),
        "exact, geodesic cost": (lambda: OTCoupling("exact", manifold=s2), (p0, p1)),
        "exact, by label": (lambda: OTCoupling("exact", by_label=True), (x0, x1, labels)),
        "sinkhorn conditional": (lambda: OTCoupling("sinkhorn", generator=_gen(9)), (x0, x1)),
        "sinkhorn joint": (lambda: OTCoupling("sinkhorn", sampling="joint", generator=_gen(9)), (x0, x1)),
        "sinkhorn argmax": (lambda: OTCoupling("sinkhorn", sampling="argmax"), (x0, x1)),
        "paired": (lambda: PairedCoupling(0.1, degrade=lambda x: 0.5 * x, generator=_gen(9)), (x0, x1)),
    }
    for what, (make, args) in cases.items():
        ref = make()(*args)
        got = make()(*[a.to(CUDA) for a in args])
        assert len(got) == len(ref)
        for a, b in zip(got, ref):
            if b.is_floating_point():
                _same(a, b, dtype, scale=10, what=f"OT coupling {what}")
            else:
                assert a.device == CUDA and torch.equal(a.cpu(), b), what


@pytest.mark.parametrize("shape,ot", [((4, 2), True), ((13, 3), True), ((13, 3), "plain"), ((13, 3), False)])
def test_alignment_coupling_on_cuda(shape, ot, dtype):
    g = _gen(0)
    base = M.CoMFree(*shape)
    x0 = base.random_base(12, generator=g, dtype=dtype)
    x1 = base.random_base(12, generator=g, dtype=dtype)
    cpu, gpu = AlignmentCoupling(reflections=True, ot=ot), AlignmentCoupling(reflections=True, ot=ot)
    ref = cpu(x0, x1)
    got = gpu(x0.to(CUDA), x1.to(CUDA))
    for a, b in zip(got, ref):
        _same(a, b, dtype, scale=100, what=f"AlignmentCoupling{shape} ot={ot}")
    if ot is not False:
        assert gpu.last_index.device == CUDA and torch.equal(gpu.last_index.cpu(), cpu.last_index)


# ============================================================================ equivariant networks
@pytest.mark.parametrize("kind", ["egnn", "egnn-cutoff", "tfn"])
def test_equivariant_networks_on_cuda(kind, dtype):
    torch.manual_seed(0)
    if kind == "egnn":
        net = EGNNVelocity(hidden=32, layers=3, time_dim=16)
    elif kind == "egnn-cutoff":
        net = EGNNVelocity(hidden=32, layers=3, time_dim=16, cutoff=2.0)
    else:
        net = TFNVelocity(layers=2)
    net = net.to(dtype).eval()
    x = 1.2 * torch.randn(5, 13, 3, generator=_gen(1), dtype=dtype)
    x = x - x.mean(1, keepdim=True)
    t = torch.rand(5, generator=_gen(2), dtype=dtype)

    def fwd_bwd(x, t):
        x = x.detach().clone().requires_grad_(True)
        v = net.to(x.device)(x, t)
        (gx,) = torch.autograd.grad((v * torch.sin(x)).sum(), x)
        return torch.cat([v.detach().reshape(-1), gx.reshape(-1)])

    ref = fwd_bwd(x, t)
    got = fwd_bwd(x.to(CUDA), t.to(CUDA))
    _same(got, ref, dtype, scale=100, what=f"{kind} forward + input gradient")
    errors = assert_equivariant(net.to(CUDA), dtype=dtype, n_particles=7, batch=4)  # runs on the model's device
    assert errors and all(v >= 0 for v in errors.values())


def test_unet_on_cuda_equals_the_cpu(dtype):
    from geoflow.nn import UNetVelocity

    torch.manual_seed(0)
    net = UNetVelocity(1, base=8, channel_mults=(1, 2), time_dim=16, num_classes=10).to(dtype)
    g = _gen(0)
    x = torch.randn(6, 1, 8, 8, generator=g, dtype=dtype)
    t = torch.rand(6, generator=g, dtype=dtype)
    y = torch.randint(0, 11, (6,), generator=g)

    def fwd_bwd(x, t, y):
        net.to(x.device).zero_grad(set_to_none=True)
        v = net(x, t, cond=y)
        (v * torch.cos(x)).sum().backward()
        return torch.cat([v.detach().reshape(-1)] + [p.grad.reshape(-1) for p in net.parameters()])

    got, ref = _both(fwd_bwd, x, t, y)
    _same(got, ref, dtype, scale=100, what="UNet forward + parameter gradients")


def test_egnn_on_a_pyg_batch_on_cuda():
    from torch_geometric.data import Batch, Data

    torch.manual_seed(0)
    net = EGNNVelocity(hidden=16, layers=2, time_dim=8, cond_dim=5, feature_out_dim=5).double()
    g = _gen(0)
    graphs = [Data(pos=torch.randn(n, 3, generator=g, dtype=torch.float64),
                   x=torch.randn(n, 5, generator=g, dtype=torch.float64)) for n in (3, 7, 5)]
    b = Batch.from_data_list(graphs)
    t = torch.rand(3, generator=g, dtype=torch.float64)
    ref_v, ref_h = net(b, t)
    got_v, got_h = net.to(CUDA)(b.to(CUDA), t.to(CUDA))
    _same(got_v, ref_v, scale=10, what="EGNN on a PyG batch: velocity")
    _same(got_h, ref_h, scale=10, what="EGNN on a PyG batch: features")


def test_particle_energies_on_cuda():
    from geoflow.data.particles import dw4_energy, lj_energy

    g = _gen(0)
    x4 = 2 * torch.randn(16, 4, 2, generator=g, dtype=torch.float64)
    x13 = 1.2 * torch.randn(16, 13, 3, generator=g, dtype=torch.float64)
    for what, fn, x in (("dw4", dw4_energy, x4), ("lj13", lj_energy, x13)):
        got, ref = _both(fn, x)
        _same(got, ref, scale=10, what=f"{what} energy")


# ============================================================================ the trainer
def _small_sphere_args(out: Path, steps: int = 30, **extra) -> list[str]:
    args = ["train", "volcano", "--steps", str(steps), "--batch-size", "64", "--hidden", "32", "--depth", "2",
            "--eval-every", "10", "--val-points", "64", "--nll-steps", "4", "--warmup", "5", "--seed", "1",
            "--out", str(out), "--quiet", "--no-plot"]
    for k, v in extra.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def _params(state_dict) -> torch.Tensor:
    return torch.cat([v.reshape(-1).double() for v in state_dict.values() if v.is_floating_point()])


def _all_on_cpu(obj) -> bool:
    if isinstance(obj, torch.Tensor):
        return obj.device.type == "cpu"
    if isinstance(obj, dict):
        return all(_all_on_cpu(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_all_on_cpu(v) for v in obj)
    return True


@pytest.fixture(scope="module")
def volcano_run(tmp_path_factory):
    from geoflow.cli import main

    out = tmp_path_factory.mktemp("cuda_train") / "volcano"
    assert main(_small_sphere_args(out, device="cuda")) == 0
    return out


def test_cli_train_on_cuda_writes_checkpoints_that_load_on_the_cpu(volcano_run):
    from geoflow.cli import _load_model
    from geoflow.train import load_checkpoint

    for f in ("last.pt", "best.pt", "metrics.json"):
        assert (volcano_run / f).exists(), f
    metrics = json.loads((volcano_run / "metrics.json").read_text())
    assert metrics["steps"] == 30 and metrics["config"]["device"] == "cuda"
    state = load_checkpoint(volcano_run / "best.pt")  # map_location="cpu": what a CPU-only machine does
    assert state["device"] == "cuda:0" and "cuda" in state["rng"]
    assert _all_on_cpu(state["model"]) and _all_on_cpu(state["ema"]) and _all_on_cpu(state["optimizer"])
    raw = torch.load(volcano_run / "best.pt", map_location="cpu", weights_only=False)
    assert _all_on_cpu(raw)
    # the same model evaluated on the CPU and on the GPU gives the same test NLL as the run reported
    model_cpu, config, data = _load_model(volcano_run / "best.pt", device="cpu")
    model_gpu, _, _ = _load_model(volcano_run / "best.pt", device="cuda")
    assert next(model_cpu.parameters()).device.type == "cpu" and next(model_gpu.parameters()).device == CUDA
    nll_cpu = -log_likelihood(model_cpu, data.test, data.manifold, steps=config.nll_steps, method=config.nll_method)
    nll_gpu = -log_likelihood(model_gpu, data.test.to(CUDA), data.manifold, steps=config.nll_steps,
                              method=config.nll_method)
    _same(nll_gpu, nll_cpu, scale=50, what="test NLL of the checkpoint")
    assert float(nll_cpu.mean()) == pytest.approx(metrics["test_nll"], rel=1e-4)


def test_cli_sample_nll_plot_on_cuda(volcano_run, tmp_path):
    import numpy as np

    from geoflow.cli import main

    ckpt = str(volcano_run / "best.pt")
    for dev in ("cpu", "cuda"):
        assert main(["sample", ckpt, "--n", "50", "--steps", "5", "--device", dev, "--out", str(tmp_path / f"{dev}.npy")]) == 0
        assert main(["sample", ckpt, "--n", "50", "--steps", "5", "--device", dev, "--out", str(tmp_path / f"{dev}.csv")]) == 0
    a, b = np.load(tmp_path / "cpu.npy"), np.load(tmp_path / "cuda.npy")
    assert a.shape == (50, 3)
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)  # same base points from --seed, float32 rounding apart
    assert main(["nll", ckpt, "--steps", "3", "--device", "cuda", "--json"]) == 0
    assert main(["plot", ckpt, "--grid", "6", "--steps", "3", "--device", "cuda", "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_trainer_resume_on_cuda_continues_the_run(tmp_path, monkeypatch):
    """Interrupted at step 13 and resumed (from step 10) on the GPU: the uninterrupted run's parameters and curve."""
    from geoflow.train import Trainer, TrainConfig

    def config(out):
        return TrainConfig(dataset="vmf_mixture", n_samples=400, steps=20, batch_size=32, hidden=16, depth=2,
                           time_dim=8, eval_every=10, val_points=16, nll_steps=3, warmup=5, seed=3, out=str(out),
                           device="cuda")

    full = Trainer(config(tmp_path / "a"), progress=False, log=lambda *_: None)
    assert full.device == CUDA and next(full.model.parameters()).device == CUDA
    m_full = full.fit()
    t1 = Trainer(config(tmp_path / "b"), progress=False, log=lambda *_: None)
    fit_interrupted(t1, 13, monkeypatch)
    t2 = Trainer(config(tmp_path / "b"), progress=False, log=lambda *_: None)
    m_resumed = t2.fit()
    assert t2.history[0]["step"] == 10 and len(t2.history) == 2
    p_full, p_res = _params(full.model.state_dict()), _params(t2.model.state_dict())
    torch.testing.assert_close(p_res, p_full, rtol=1e-5, atol=1e-6)
    assert m_resumed["test_nll"] == pytest.approx(m_full["test_nll"], rel=1e-4)
    # and the same run continues on the CPU from the GPU's checkpoint (a CPU-only machine)
    t3 = Trainer(TrainConfig(**{**config(tmp_path / "b").to_dict(), "steps": 24, "device": "cpu"}),
                 progress=False, log=lambda *_: None)
    with pytest.raises(ValueError, match="different config"):  # steps differ: refused, as on the CPU
        t3.fit()
    logs = []
    t4 = Trainer(TrainConfig(**{**config(tmp_path / "b").to_dict(), "device": "cpu"}), progress=False, log=logs.append)
    assert t4.maybe_resume() and t4.step == 20 and t4.device.type == "cpu"
    assert any("written on cuda:0, resuming on cpu" in str(m) for m in logs), logs
    torch.testing.assert_close(_params(t4.model.state_dict()), p_res.cpu(), rtol=0, atol=0)


def test_cpu_and_cuda_runs_agree(tmp_path):
    """Same seed, same batches (drawn on the CPU): the GPU run's loss curve follows the CPU run's."""
    from geoflow.train import Trainer, TrainConfig

    def run(dev):
        cfg = TrainConfig(dataset="vmf_mixture", n_samples=300, steps=10, batch_size=32, hidden=16, depth=2, time_dim=8,
                          eval_every=5, val_points=16, nll_steps=3, warmup=2, seed=2, out=str(tmp_path / dev), device=dev)
        t = Trainer(cfg, progress=False, log=lambda *_: None)
        return t, t.fit()

    (tc, mc), (tg, mg) = run("cpu"), run("cuda")
    for hc, hg in zip(tc.history, tg.history):
        assert hg["loss"] == pytest.approx(hc["loss"], rel=1e-4)
        assert hg["val_nll"] == pytest.approx(hc["val_nll"], rel=1e-4)
    assert mg["test_nll"] == pytest.approx(mc["test_nll"], rel=1e-4)


@pytest.mark.parametrize("coupling", ["independent", "alignment"])
def test_particle_training_on_cuda(tmp_path, coupling):
    from geoflow.train import Trainer, TrainConfig

    cfg = TrainConfig.for_dataset("dw4", steps=6, batch_size=32, hidden=16, depth=2, time_dim=8, eval_every=3,
                                  val_points=32, test_points=32, ess_samples=32, nll_steps=3, coupling=coupling,
                                  out=str(tmp_path / coupling), device="cuda")
    t = Trainer(cfg, progress=False, log=lambda *_: None)
    metrics = t.fit()
    assert next(t.model.parameters()).device == CUDA
    assert torch.isfinite(torch.tensor(metrics["test_nll"])) and 0 <= metrics["ess"] <= 1
    assert (tmp_path / coupling / "best.pt").exists()


def test_digits_training_on_cuda_and_resume(tmp_path, monkeypatch):
    """The conditional U-Net trains on the GPU; a resumed run follows the uninterrupted one.

    Not bit for bit: cuDNN's convolution gradients are not reproducible, and Adam turns last-bit
    differences of near-zero gradients into steps of about the learning rate (measured on an H100:
    32 of 32 929 parameters off by up to 1.6e-3 after 12 steps at lr 2e-3, the losses equal to 4
    digits).  So: the curves agree, and all but a few parameters agree tightly.
    """
    from geoflow.train import Trainer, TrainConfig

    tiny = dict(steps=12, batch_size=16, unet_channels=8, time_dim=16, eval_every=6, val_points=32, warmup=3, seed=1,
                device="cuda")
    full = Trainer(TrainConfig.for_dataset("digits", out=str(tmp_path / "a"), **tiny), progress=False,
                   log=lambda *_: None)
    m_full = full.fit()
    assert next(full.model.parameters()).device == CUDA
    cfg = TrainConfig.for_dataset("digits", out=str(tmp_path / "b"), **tiny)
    fit_interrupted(Trainer(cfg, progress=False, log=lambda *_: None), 9, monkeypatch)
    t2 = Trainer(cfg, progress=False, log=lambda *_: None)
    m_resumed = t2.fit()
    p_res, p_full = _params(t2.model.state_dict()), _params(full.model.state_dict())
    close = (p_res - p_full).abs() <= 1e-5 + 1e-4 * p_full.abs()
    assert float(close.double().mean()) >= 0.99, f"{int((~close).sum())} of {close.numel()} parameters differ"
    assert float((p_res - p_full).abs().max()) <= 12 * 2e-3  # at most about lr per Adam step
    for h1, h2 in zip(full.history, t2.history):
        assert h2["loss"] == pytest.approx(h1["loss"], rel=1e-4) and h2["val_loss"] == pytest.approx(h1["val_loss"], rel=1e-4)
    assert m_resumed["test_loss"] == pytest.approx(m_full["test_loss"], rel=1e-3)
    from geoflow.cli import main

    assert main(["sample", str(tmp_path / "a" / "best.pt"), "--label", "3", "--guidance", "2", "--n", "4", "--steps", "4",
                 "--device", "cuda", "--out", str(tmp_path / "threes.png")]) == 0
    assert (tmp_path / "threes.png").stat().st_size > 500


def test_hutchinson_validation_on_cuda(tmp_path):
    """Likelihoods with Hutchinson probes drawn on the GPU (what LJ55's 162 dimensions use), seeded."""
    from geoflow.train import Trainer, TrainConfig

    cfg = TrainConfig.for_dataset("dw4", steps=2, batch_size=8, hidden=8, depth=1, time_dim=8, eval_every=2,
                                  val_points=8, test_points=8, ess_samples=0, nll_steps=2, nll_divergence="hutchinson",
                                  out=str(tmp_path / "dw4h"), device="cuda")
    t = Trainer(cfg, progress=False, log=lambda *_: None)
    assert t.divergence == "hutchinson"
    metrics = t.fit()
    assert torch.isfinite(torch.tensor(metrics["test_nll"]))
    assert t.nll(t.data.test[:8], steps=2).tolist() == t.nll(t.data.test[:8], steps=2).tolist()  # seeded probes


def test_qm9_training_on_cuda(tmp_path):
    from geoflow.train import TrainConfig, load_checkpoint
    from geoflow.train.molecules import MoleculeTrainer, sample_molecules

    cfg = TrainConfig.for_dataset("qm9", steps=4, batch_size=8, hidden=16, depth=2, time_dim=8, eval_every=2,
                                  ess_samples=4, out=str(tmp_path / "qm9"), device="cuda")
    tr = MoleculeTrainer(cfg, progress=False, log=lambda *_: None)
    metrics = tr.fit()
    assert next(tr.model.parameters()).device == CUDA
    assert set(metrics["stability"]) == {"50", "200"}
    state = load_checkpoint(tmp_path / "qm9" / "last.pt")
    assert state["device"] == "cuda:0" and _all_on_cpu(state["model"])
    # sampling from CPU noise: the GPU model gives the CPU model's molecules
    model = tr.eval_model()
    pos_g, types_g = sample_molecules(model, [5, 9], steps=5, generator=_gen(0), dtype=torch.float32)
    pos_c, types_c = sample_molecules(model.to("cpu"), [5, 9], steps=5, generator=_gen(0), dtype=torch.float32)
    for a, b in zip(pos_g, pos_c):
        assert a.device.type == "cpu"
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_mesh_training_on_cuda(tmp_path):
    from geoflow.train import Trainer, TrainConfig

    cfg = TrainConfig.for_dataset("bunny_k10", steps=3, batch_size=16, hidden=16, depth=2, time_dim=8, eval_every=3,
                                  val_points=8, test_points=8, nll_steps=2, premetric_steps=2,
                                  out=str(tmp_path / "mesh"), device="cuda")
    t = Trainer(cfg, progress=False, log=lambda *_: None)
    metrics = t.fit()
    assert torch.isfinite(torch.tensor(metrics["test_nll"]))


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join([str(_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_nccl_available(),
                    reason="torch.distributed with nccl is not available")
def test_torchrun_one_process_chooses_nccl_on_the_gpu(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    args = ["-m", "geoflow.cli", "train", "vmf_mixture", "--n-samples", "200", "--steps", "6", "--batch-size", "16",
            "--hidden", "16", "--depth", "2", "--eval-every", "3", "--val-points", "8", "--nll-steps", "2", "--quiet",
            "--no-plot"]
    r = subprocess.run([*torchrun, *args, "--out", str(tmp_path / "ddp")], cwd=_ROOT, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    from geoflow.train import load_checkpoint

    state = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert state["backend"] == "nccl" and state["device"] == "cuda:0" and state["world_size"] == 1
    assert state["step"] == 6
    # --device cpu under nccl: refused, with the reason
    r = subprocess.run([*torchrun, *args, "--device", "cpu", "--out", str(tmp_path / "ddp-cpu")], cwd=_ROOT, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "TrainConfig.device 'cpu' differs from this process's device cuda:0 under torchrun (backend nccl" in r.stderr + r.stdout
