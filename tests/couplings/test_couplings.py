"""geoflow.couplings against scipy, brute force, closed forms and the solvers."""

import itertools
import math

import pytest
import torch
from scipy.optimize import linear_sum_assignment

import geoflow.couplings as couplings
from geoflow.couplings import (
    IndependentCoupling,
    OTCoupling,
    PairedCoupling,
    ReflowCoupling,
    downsample_upsample,
    exact_assignment,
    mask_half,
    pairwise_cost,
    path_energy,
    sinkhorn,
)
from geoflow.solvers import sample
from manifolds import FlatTorus, Sphere

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def scipy_optimum(C: torch.Tensor) -> float:
    r, c = linear_sum_assignment(C.double().numpy())
    return float(C.double().numpy()[r, c].sum())


def test_public_names():
    assert len(set(couplings.__all__)) == len(couplings.__all__)
    for name in couplings.__all__:
        assert getattr(couplings, name) is not None, name


def test_independent_and_return_convention():
    x0, x1, y = torch.randn(5, 2), torch.randn(5, 2), torch.arange(5)
    out = IndependentCoupling()(x0, x1)
    assert len(out) == 2 and out[0] is x0 and out[1] is x1
    out = IndependentCoupling()(x0, x1, y)
    assert len(out) == 3 and out[2] is y
    assert len(OTCoupling()(x0, x1)) == 2 and len(OTCoupling()(x0, x1, y)) == 3


# --------------------------------------------------------------------- exact
@pytest.mark.parametrize("n", [1, 7, 60, 300, 900])  # 300 and 900 take the Sinkhorn warm start
def test_exact_assignment_matches_scipy_optimum(n):
    C = torch.rand(n, n, generator=gen(n), dtype=F64) * 10
    col = exact_assignment(C)
    assert sorted(col.tolist()) == list(range(n))  # a permutation
    total = float(C[torch.arange(n), col].sum())
    assert total == pytest.approx(scipy_optimum(C), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("d", [2, 16])
def test_exact_coupling_is_optimal_permutation(d):
    g = gen(d)
    x0 = torch.randn(400, d, generator=g, dtype=F64)
    x1 = 2.0 + 0.5 * torch.randn(400, d, generator=g, dtype=F64)
    y = torch.arange(400)
    a, b, c = OTCoupling("exact")(x0, x1, y)
    assert torch.equal(b, x1) and torch.equal(c, y)  # data and labels stay in place
    # x0 is permuted: every row used exactly once
    idx = torch.cdist(a, x0).argmin(1)
    assert sorted(idx.tolist()) == list(range(400)) and torch.equal(x0[idx], a)
    total = float((a - b).pow(2).sum())
    assert total == pytest.approx(scipy_optimum(torch.cdist(x0, x1) ** 2), rel=1e-10)


def test_exact_on_1d_gives_monotone_pairing():
    g = gen(1)
    x0, x1 = torch.randn(200, 1, generator=g, dtype=F64), 3 * torch.rand(200, 1, generator=g, dtype=F64)
    a, b = OTCoupling("exact")(x0, x1)
    order = torch.argsort(b[:, 0])
    assert torch.equal(a[order, 0], torch.sort(x0[:, 0]).values)


def test_exact_on_sphere_uses_geodesic_cost_brute_force():
    S2 = Sphere(2)
    g = gen(3)
    x0, x1 = S2.random_base(6, generator=g, dtype=F64), S2.random_base(6, generator=g, dtype=F64)
    D2 = S2.dist(x0[:, None], x1[None]) ** 2
    torch.testing.assert_close(pairwise_cost(x0, x1, S2), D2)
    best = min(sum(float(D2[p[j], j]) for j in range(6)) for p in itertools.permutations(range(6)))
    a, b = OTCoupling("exact", manifold=S2)(x0, x1)
    assert torch.equal(b, x1)
    assert float((S2.dist(a, b) ** 2).sum()) == pytest.approx(best, rel=1e-12)


def test_exact_on_torus_pairs_across_the_seam():
    # angles near +pi and -pi are close on the torus, far apart as numbers
    T = FlatTorus(1)
    x0 = torch.tensor([[3.0], [0.1]], dtype=F64)
    x1 = torch.tensor([[0.2], [-3.0]], dtype=F64)
    a, _ = OTCoupling("exact", manifold=T)(x0, x1)
    assert a[:, 0].tolist() == [0.1, 3.0]  # 3.0 -> -3.0 across the seam (distance 0.28)
    a, _ = OTCoupling("exact")(x0, x1)  # the flat cost pairs them the other way
    assert a[:, 0].tolist() == [3.0, 0.1]


def test_custom_cost_callable():
    x0, x1 = torch.randn(30, 2, generator=gen(4), dtype=F64), torch.randn(30, 2, generator=gen(5), dtype=F64)

    def l1(a, b):
        return torch.cdist(a, b, p=1)

    a, b = OTCoupling("exact", cost=l1)(x0, x1)
    assert float((a - b).abs().sum()) == pytest.approx(scipy_optimum(l1(x0, x1)), rel=1e-12)


# ------------------------------------------------------------------ sinkhorn
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("reg", [0.5, 0.05, 0.005])
def test_sinkhorn_marginals(dtype, reg):
    g = gen(7)
    x0, x1 = torch.randn(80, 3, generator=g, dtype=dtype), 1 + torch.randn(50, 3, generator=g, dtype=dtype)
    res = sinkhorn(pairwise_cost(x0, x1), reg, tol=1e-6 if dtype == F64 else 1e-5)
    assert res.converged and res.plan.dtype == dtype and bool((res.plan >= 0).all())
    tol = 1e-5 if dtype == F64 else 2e-5
    assert float((res.plan.sum(1) - 1 / 80).abs().sum()) < tol
    assert float((res.plan.sum(0) - 1 / 50).abs().sum()) < tol
    # potentials reproduce the plan: P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)
    C = pairwise_cost(x0, x1)
    P = torch.exp((res.f[:, None] + res.g[None] - C) / res.eps) / (80 * 50)
    torch.testing.assert_close(P, res.plan, rtol=1e-4, atol=1e-10)


def test_sinkhorn_converges_to_exact_plan():
    g = gen(8)
    n = 40
    C = pairwise_cost(torch.randn(n, 2, generator=g, dtype=F64), 1 + torch.randn(n, 2, generator=g, dtype=F64))
    opt = scipy_optimum(C) / n
    col = exact_assignment(C)
    exact_plan = torch.zeros(n, n, dtype=F64)
    exact_plan[torch.arange(n), col] = 1 / n
    gaps, dists = [], []
    for reg in [0.3, 0.03, 0.003, 3e-4]:
        P = sinkhorn(C, reg, max_iter=2000, tol=1e-5).plan
        gaps.append(float((P * C).sum()) - opt)
        dists.append(float((P - exact_plan).abs().sum()))
    assert all(x >= -1e-9 for x in gaps)
    assert gaps == sorted(gaps, reverse=True) and dists == sorted(dists, reverse=True)
    assert gaps[-1] < 1e-3 * opt and dists[-1] < 0.05


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_sinkhorn_tiny_reg_has_no_nan(dtype):
    g = gen(9)
    x0, x1 = 5 * torch.randn(64, 2, generator=g, dtype=dtype), torch.randn(64, 2, generator=g, dtype=dtype)
    x1[0] = 40.0  # an outlier far from every x0
    for reg in [1e-4, 1e-7]:
        res = sinkhorn(pairwise_cost(x0, x1), reg, max_iter=300)
        assert bool(torch.isfinite(res.plan).all()) and bool(torch.isfinite(res.f).all())
        assert bool(torch.isfinite(res.g).all())
        assert float((res.plan.sum(0) - 1 / 64).abs().max()) < 1e-4  # columns exact after each iteration
        a, b = OTCoupling("sinkhorn", reg=reg, max_iter=300, generator=gen())(x0, x1)
        assert bool(torch.isfinite(a).all())


def test_sinkhorn_batched_equals_single():
    C = torch.rand(3, 20, 30, generator=gen(10), dtype=F64)
    C[1] *= 50
    res = sinkhorn(C, 0.05, tol=1e-10)
    for k in range(3):
        torch.testing.assert_close(res.plan[k], sinkhorn(C[k], 0.05, tol=1e-10).plan, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("sampling", ["conditional", "joint", "argmax"])
def test_sinkhorn_coupling_sampling(sampling):
    g = gen(11)
    x0, x1 = torch.randn(100, 2, generator=g, dtype=F64), 0.3 * torch.randn(100, 2, generator=g, dtype=F64)
    y = torch.arange(100)
    ot = OTCoupling("sinkhorn", reg=0.01, sampling=sampling, generator=gen(1))
    a, b, c = ot(x0, x1, y)
    assert torch.equal(x1[c], b)  # cond follows x1
    if sampling != "joint":
        assert torch.equal(b, x1) and torch.equal(c, y)
    assert bool((a[:, None] == x0[None]).all(-1).any(1).all())  # pairs are drawn from the batch
    indep = float((x0 - x1).pow(2).sum(-1).mean())
    assert float((a - b).pow(2).sum(-1).mean()) < 0.6 * indep  # OT: about 0.45 of the independent cost
    a2, _, _ = OTCoupling("sinkhorn", reg=0.01, sampling=sampling, generator=gen(1))(x0, x1, y)
    assert torch.equal(a, a2)  # reproducible with a generator


# ------------------------------------------------------------------ by label
@pytest.mark.parametrize("method,sampling", [("exact", "conditional"), ("sinkhorn", "conditional"),
                                             ("sinkhorn", "joint"), ("sinkhorn", "argmax")])  # fmt: skip
def test_by_label_never_pairs_across_labels(method, sampling):
    g = gen(12)
    n = 90
    labels = torch.randint(0, 4, (n,), generator=g)
    x1 = torch.randn(n, 2, generator=g, dtype=F64) + 3 * labels[:, None].to(F64)
    x0 = torch.randn(n, 2, generator=g, dtype=F64)
    # x0 chunk k (consecutive, sizes = label counts in sorted label order) belongs to label k
    counts = torch.bincount(labels, minlength=4)
    chunk_label = torch.repeat_interleave(torch.arange(4), counts)
    a, b, c = OTCoupling(method, reg=0.05, by_label=True, sampling=sampling, generator=gen())(x0, x1, labels)
    src = torch.cdist(a, x0).argmin(1)
    assert torch.equal(chunk_label[src], c)  # every x0 used for label k comes from chunk k
    assert torch.equal(x1[torch.cdist(b, x1).argmin(1)], b) and torch.equal(c, labels[torch.cdist(b, x1).argmin(1)])
    if method == "exact":
        assert sorted(src.tolist()) == list(range(n))
        for k in range(4):
            rows, cols = (chunk_label == k).nonzero()[:, 0], (labels == k).nonzero()[:, 0]
            sub = torch.cdist(x0[rows], x1[cols]) ** 2
            got = float((a[cols] - x1[cols]).pow(2).sum())
            assert got == pytest.approx(scipy_optimum(sub), rel=1e-10)


# -------------------------------------------------------------------- paired
def test_downsample_upsample_and_mask_half():
    x = torch.arange(2 * 64, dtype=F64).reshape(2, 1, 8, 8)
    y = downsample_upsample(x, 2)
    block = x.reshape(2, 1, 4, 2, 4, 2).mean((3, 5))
    torch.testing.assert_close(y, block.repeat_interleave(2, -2).repeat_interleave(2, -1))
    yb = downsample_upsample(x, 2, mode="bilinear")
    assert yb.shape == x.shape and torch.allclose(yb.mean((-2, -1)), x.mean((-2, -1)))
    m = mask_half(x, "bottom")
    assert torch.equal(m[..., :4, :], x[..., :4, :]) and bool((m[..., 4:, :] == 0).all())
    m = mask_half(x, "left", fill=-1.0)
    assert torch.equal(m[..., :, 4:], x[..., :, 4:]) and bool((m[..., :, :4] == -1).all())
    assert mask_half(torch.ones(3, 5, 5), "top")[..., :3, :].sum() == 0


def test_paired_coupling_is_observation_plus_sigma_eps():
    x1 = torch.randn(16, 1, 8, 8, generator=gen(13), dtype=F64)
    eps = torch.randn(16, 1, 8, 8, generator=gen(5), dtype=F64)
    pc = PairedCoupling(0.1, degrade=downsample_upsample, generator=gen(5))
    x0, b = pc(None, x1)
    assert torch.equal(b, x1)
    assert torch.equal(x0, downsample_upsample(x1) + 0.1 * eps)
    y = mask_half(x1)
    x0, b, c = PairedCoupling(0.3, generator=gen(5))(y, x1, torch.arange(16))
    assert torch.equal(x0, y + 0.3 * eps) and torch.equal(c, torch.arange(16))
    assert torch.equal(PairedCoupling(0.0)(y, x1)[0], y)


# -------------------------------------------------------------------- reflow
class Rotation2D(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.3, dtype=F64))

    def forward(self, x, t, cond=None):
        v = self.w * torch.stack([-x[:, 1], x[:, 0]], -1) * (1 + t[:, None])
        return v if cond is None else v + cond[:, None].to(x.dtype)


class SphereSpin:
    def __init__(self, w=(0.0, 0.0, 2.0)):
        self.w = torch.tensor(w, dtype=F64)

    def __call__(self, x, t):
        return torch.cross(self.w.expand_as(x), x, dim=-1)


def test_reflow_endpoints_equal_solver_output():
    model = Rotation2D()
    x0 = torch.randn(50, 2, generator=gen(14), dtype=F64)
    cond = torch.arange(50) % 3
    rc = ReflowCoupling(model, steps=20, method="rk4", batch_size=16)
    a, b, c = rc(x0, None, cond)
    assert a is x0 and c is cond and not b.requires_grad
    with torch.no_grad():
        ref = sample(model, x0, method="rk4", steps=20, cond=cond)
    torch.testing.assert_close(b, ref, rtol=0, atol=1e-14)
    S2 = Sphere(2)
    rs = ReflowCoupling(SphereSpin(), S2, steps=10, method="midpoint")
    p0, p1 = rs.generate(20, generator=gen(2), dtype=F64)
    torch.testing.assert_close(p0, S2.random_base(20, generator=gen(2), dtype=F64))
    torch.testing.assert_close(p1, sample(SphereSpin(), p0, S2, method="midpoint", steps=10), rtol=0, atol=1e-14)
    q0, q1 = ReflowCoupling(model, steps=5).generate(8, shape=(2,), generator=gen(3), dtype=F64)
    torch.testing.assert_close(q0, torch.randn(8, 2, generator=gen(3), dtype=F64))


# ---------------------------------------------------------------- path energy
def test_path_energy_closed_forms():
    x0 = torch.randn(40, 2, generator=gen(15), dtype=F64)
    c = torch.tensor([3.0, -4.0], dtype=F64)
    const = path_energy(lambda x, t: c.expand_as(x), x0, steps=4)
    assert const.energy == pytest.approx(25.0, rel=1e-12) and const.straightness == pytest.approx(0, abs=1e-12)
    assert const.w2_sq == pytest.approx(25.0, rel=1e-12) and const.normalized == pytest.approx(0, abs=1e-12)
    # v = t c: x1 = x0 + c/2, PE = |c|^2/3, D = W2^2 = |c|^2/4, straightness = NPE = 1/3
    lin = path_energy(lambda x, t: t[:, None] * c, x0, steps=4)
    assert lin.energy == pytest.approx(25 / 3, rel=1e-12) and lin.displacement == pytest.approx(25 / 4, rel=1e-12)
    assert lin.straightness == pytest.approx(1 / 3, rel=1e-10) and lin.normalized == pytest.approx(1 / 3, rel=1e-10)
    x1 = x0 + c  # against target samples: the OT cost between x0 and its translate is |c|^2
    assert path_energy(lambda x, t: t[:, None] * c, x0, x1=x1, steps=4).w2_sq == pytest.approx(25.0, rel=1e-12)


def test_path_energy_on_sphere():
    S2 = Sphere(2)
    phi = torch.linspace(0, 2 * math.pi, 13, dtype=F64)[:-1]
    x0 = torch.stack([phi.cos(), phi.sin(), torch.zeros_like(phi)], -1)  # the equator of the spin axis
    pe = path_energy(SphereSpin(), x0, S2, steps=40)
    assert pe.energy == pytest.approx(4.0, rel=1e-10)  # |w x x|^2 = 4 on the equator
    assert pe.straightness == pytest.approx(0, abs=1e-8)  # rotation by 2 rad < pi: a minimising geodesic
    tilted = S2.projx(x0 + torch.tensor([0.0, 0.0, 0.5], dtype=F64))
    assert path_energy(SphereSpin(), tilted, S2, steps=40).straightness > 0.01  # circles of latitude curve


# -------------------------------------------------------------------- errors
def test_bad_inputs_name_the_argument():
    x = torch.randn(4, 2)
    cases = [
        (lambda: OTCoupling("hungarian"), ValueError, "`method`"),
        (lambda: OTCoupling(reg=0), ValueError, "`reg`"),
        (lambda: OTCoupling(sampling="best"), ValueError, "`sampling`"),
        (lambda: OTCoupling(cost=3), TypeError, "`cost`"),
        (lambda: OTCoupling(manifold=Sphere(2), cost=torch.cdist), ValueError, "`cost`"),
        (lambda: OTCoupling(max_iter=0), ValueError, "`max_iter`"),
        (lambda: OTCoupling()(x, torch.randn(5, 2)), ValueError, "`x1`"),
        (lambda: OTCoupling()(x, torch.randn(4, 3)), ValueError, "point shape"),
        (lambda: OTCoupling()(x.double(), x), TypeError, "dtype"),
        (lambda: OTCoupling()(x.numpy(), x), TypeError, "`x0`"),
        (lambda: OTCoupling()(torch.full((4, 2), math.nan), x), ValueError, "`x0`"),
        (lambda: OTCoupling()(x, x, torch.arange(3)), ValueError, "`cond`"),
        (lambda: OTCoupling(by_label=True)(x, x), ValueError, "`cond`"),
        (lambda: OTCoupling(by_label=True)(x, x, torch.rand(4)), TypeError, "`cond`"),
        (lambda: OTCoupling(cost=lambda a, b: torch.zeros(3, 3))(x, x), ValueError, "`cost`"),
        (lambda: sinkhorn(torch.full((3, 3), math.inf)), ValueError, "`cost`"),
        (lambda: exact_assignment(torch.rand(3, 4)), ValueError, "`cost`"),
        (lambda: PairedCoupling(-1.0), ValueError, "`sigma`"),
        (lambda: PairedCoupling(0.1, degrade=lambda z: z[:, :1])(None, x), ValueError, "`degrade`"),
        (lambda: PairedCoupling(0.1)(None, x), TypeError, "`x0`"),
        (lambda: downsample_upsample(torch.rand(2, 7, 7), 2), ValueError, "`factor`"),
        (lambda: mask_half(torch.rand(2, 4, 4), "middle"), ValueError, "`side`"),
        (lambda: ReflowCoupling(Rotation2D(), steps=0), ValueError, "`steps`"),
        (lambda: ReflowCoupling(Rotation2D(), method="leapfrog"), ValueError, "`method`"),
        (lambda: ReflowCoupling(Rotation2D()).generate(3), ValueError, "`shape`"),
        (lambda: path_energy(Rotation2D(), x.double(), x1=torch.randn(3, 2, dtype=F64)), ValueError, "`x1`"),
    ]
    for fn, exc, text in cases:
        with pytest.raises(exc, match=text.replace("(", r"\(")):
            fn()
