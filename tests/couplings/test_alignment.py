"""AlignmentCoupling, align and kabsch against brute force and independent numpy references."""

import itertools
import os

import numpy as np
import pytest
import torch

import geoflow.couplings as couplings
from geoflow.couplings import AlignmentCoupling, align, kabsch

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_rotation(D, g, *, proper=True):
    Q, R = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=F64))
    Q = Q * torch.sign(torch.diagonal(R))
    if proper and torch.linalg.det(Q) < 0:
        Q[:, 0] = -Q[:, 0]
    if not proper and torch.linalg.det(Q) > 0:
        Q[:, 0] = -Q[:, 0]
    return Q


def np_kabsch_cost(x, y, reflections):
    """Independent reference: min over R of sum |R x_k - y_k|^2 for centred numpy clouds."""
    H = x.T @ y
    U, S, Vt = np.linalg.svd(H)
    d = 1.0 if reflections else np.sign(np.linalg.det(Vt.T @ U.T))
    R = Vt.T @ np.diag([1.0] * (x.shape[1] - 1) + [d]) @ U.T
    return float(((x @ R.T - y) ** 2).sum())


def brute_force_cost(x, y, types=None, reflections=False):
    """min over within-type permutations (all n!) and rotations (exact Kabsch per permutation)."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    n = x.shape[0]
    types = np.zeros(n, int) if types is None else np.asarray(types)
    best = np.inf
    for p in itertools.permutations(range(n)):
        p = np.asarray(p)
        if (types[p] != types).any():
            continue
        best = min(best, np_kabsch_cost(x[p], y, reflections))
    return best


def centred(x):
    return x - x.mean(-2, keepdim=True)


def test_public_names():
    for name in ("AlignmentCoupling", "Alignment", "align", "kabsch"):
        assert name in couplings.__all__
        assert getattr(couplings, name) is not None


@pytest.mark.parametrize("D", [2, 3, 4])
def test_kabsch_recovers_rotation_exactly(D):
    g = gen(1)
    x = centred(torch.randn(5, 7, D, generator=g, dtype=F64))
    R_true = torch.stack([random_rotation(D, g) for _ in range(5)])
    y = x @ R_true.mT
    R = kabsch(x, y)
    torch.testing.assert_close(R, R_true, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(5, dtype=F64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("D", [2, 3])
def test_kabsch_never_reflects_unless_allowed(D):
    g = gen(2)
    x = centred(torch.randn(16, 6, D, generator=g, dtype=F64))
    F = torch.stack([random_rotation(D, g, proper=False) for _ in range(16)])
    y = x @ F.mT  # mirror images: the best orthogonal map is the reflection F
    R = kabsch(x, y)
    assert torch.allclose(torch.linalg.det(R), torch.ones(16, dtype=F64), atol=1e-12)
    cost = ((x @ R.mT - y) ** 2).sum((-2, -1))
    assert (cost > 1e-3).all()
    ref = torch.tensor([np_kabsch_cost(a.numpy(), b.numpy(), False) for a, b in zip(x, y)], dtype=F64)
    torch.testing.assert_close(cost, ref, atol=1e-10, rtol=1e-10)
    R2 = kabsch(x, y, reflections=True)
    torch.testing.assert_close(R2, F, atol=1e-12, rtol=0)


@pytest.mark.parametrize("D", [2, 3])
@pytest.mark.parametrize("reflections", [False, True])
def test_kabsch_optimal_against_numpy(D, reflections):
    g = gen(3)
    x = centred(torch.randn(32, 5, D, generator=g, dtype=F64))
    y = centred(torch.randn(32, 5, D, generator=g, dtype=F64))
    R = kabsch(x, y, reflections=reflections)
    cost = ((x @ R.mT - y) ** 2).sum((-2, -1))
    ref = torch.tensor([np_kabsch_cost(a.numpy(), b.numpy(), reflections) for a, b in zip(x, y)], dtype=F64)
    torch.testing.assert_close(cost, ref, atol=1e-10, rtol=1e-10)
    # align with one particle type per particle (no permutation) reports the same cost
    res = align(x, y, types=list(range(5)), reflections=reflections)
    torch.testing.assert_close(res.cost, ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("n, D", [(4, 2), (13, 3), (55, 3)])
def test_recovers_rotated_permuted_copy(n, D):
    g = gen(4)
    P = 6
    x = torch.randn(P, n, D, generator=g, dtype=F64)
    R_true = torch.stack([random_rotation(D, g) for _ in range(P)])
    perm_true = torch.stack([torch.randperm(n, generator=g) for _ in range(P)])
    shift = torch.randn(P, 1, D, generator=g, dtype=F64)
    y = torch.gather(x, 1, perm_true[..., None].expand_as(x)) @ R_true.mT + shift
    res = align(x, y, starts=1, n_iter=0)
    assert float(res.cost.max()) < 1e-18 * n or float(res.cost.max()) < 1e-9
    assert torch.equal(res.perm, perm_true)
    torch.testing.assert_close(res.x, centred(y), atol=1e-10, rtol=0)


def test_types_respected():
    g = gen(5)
    types = torch.tensor([0, 1, 1, 2, 0, 1, 2, 2, 0, 1, 1, 0, 2])
    x0 = torch.randn(12, 13, 3, generator=g, dtype=F64)
    x1 = torch.randn(12, 13, 3, generator=g, dtype=F64)
    coupling = AlignmentCoupling(types)
    C, perms, rots = coupling.pairwise(x0, x1)
    assert (types[perms] == types).all()
    # a swap across types would lower the cost: the untyped alignment must be strictly better somewhere
    C_free, perms_free, _ = AlignmentCoupling().pairwise(x0, x1)
    assert (types[perms_free] != types).any()
    # string labels give the same result; exhaustive path (4 particles, 2 types) too
    names = ["C" if int(t) == 0 else ("H" if int(t) == 1 else "O") for t in types]
    C2, perms2, _ = AlignmentCoupling(names).pairwise(x0, x1)
    torch.testing.assert_close(C2, C)
    t4 = [0, 1, 0, 1]
    res = align(x0[:, :4], x1[:, :4], t4)
    assert (torch.tensor(t4)[res.perm] == torch.tensor(t4)).all()
    ref = [brute_force_cost(a.numpy(), b.numpy(), t4) for a, b in zip(x0[:, :4], x1[:, :4])]
    torch.testing.assert_close(res.cost, torch.tensor(ref, dtype=F64), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("n, D", [(13, 3), (6, 2), (30, 3)])
def test_aligned_cost_below_unaligned(n, D):
    g = gen(6)
    x0 = torch.randn(64, n, D, generator=g, dtype=F64)
    x1 = 0.7 * torch.randn(64, n, D, generator=g, dtype=F64) + 3.0
    res = align(x0, x1, starts=1, n_iter=0)
    unaligned = ((centred(x0) - centred(x1)) ** 2).sum((-2, -1))
    assert (res.cost <= unaligned + 1e-10).all()
    assert float(res.cost.mean()) < 0.8 * float(unaligned.mean())
    # the reported cost is the cost of the returned cloud, and more effort never hurts
    torch.testing.assert_close(((res.x - centred(x1)) ** 2).sum((-2, -1)), res.cost)
    assert (align(x0, x1).cost <= res.cost + 1e-10).all()


@pytest.mark.parametrize("D", [2, 3])
@pytest.mark.parametrize("reflections", [False, True])
def test_n4_equals_brute_force(D, reflections):
    g = gen(7)
    x0 = torch.randn(20, 4, D, generator=g, dtype=F64)
    x1 = torch.randn(20, 4, D, generator=g, dtype=F64) + 1.0
    ref = torch.tensor(
        [brute_force_cost(a.numpy(), b.numpy(), reflections=reflections) for a, b in zip(x0, x1)], dtype=F64
    )
    exact = align(x0, x1, reflections=reflections)  # 4! = 24 permutations: enumerated
    torch.testing.assert_close(exact.cost, ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(((exact.x - centred(x1)) ** 2).sum((-2, -1)), ref, atol=1e-10, rtol=1e-10)
    assert (torch.linalg.det(exact.rotation) > 0).all() or reflections
    # the heuristic (forced by max_exhaustive=1) is a local search: never below the optimum
    # (its cost is that of a real alignment), at it on most of these small problems
    heur = align(x0, x1, reflections=reflections, max_exhaustive=1, starts=8, n_iter=20)
    assert (heur.cost >= ref - 1e-10).all()
    assert int(((heur.cost - ref).abs() < 1e-9).sum()) >= 16


def test_reflections_option_on_mirror_images():
    g = gen(8)
    x0 = torch.randn(5, 9, 3, generator=g, dtype=F64)
    F = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=F64))
    perm = torch.randperm(9, generator=g)
    x1 = x0[:, perm] @ F.T
    assert float(align(x0, x1, reflections=True).cost.max()) < 1e-9
    proper = align(x0, x1)
    assert float(proper.cost.min()) > 1e-3  # a chiral cloud cannot be rotated onto its mirror image
    assert torch.allclose(torch.linalg.det(proper.rotation), torch.ones(5, dtype=F64))


def test_batch_ot_picks_optimal_pairing_brute_force():
    g = gen(9)
    B = 4
    x0 = torch.randn(B, 4, 2, generator=g, dtype=F64)
    x1 = 0.5 * torch.randn(B, 4, 2, generator=g, dtype=F64) + 2.0
    C_ref = np.array([[brute_force_cost(x0[i].numpy(), x1[j].numpy()) for j in range(B)] for i in range(B)])
    best = min(sum(C_ref[p[j], j] for j in range(B)) for p in itertools.permutations(range(B)))
    coupling = AlignmentCoupling()
    y0, y1 = coupling(x0, x1)
    np.testing.assert_allclose(coupling.last_cost.numpy(), C_ref, atol=1e-10)
    per_pair = ((y0 - y1) ** 2).sum((-2, -1))
    assert abs(float(per_pair.sum()) - best) < 1e-9
    src = coupling.last_index
    assert sorted(src.tolist()) == list(range(B))
    np.testing.assert_allclose(per_pair.numpy(), C_ref[src.numpy(), np.arange(B)], atol=1e-10)
    torch.testing.assert_close(y1, centred(x1))
    # each returned x0 is a rotated, permuted copy of its (centred) source: same pair distances
    torch.testing.assert_close(
        torch.cdist(y0, y0).flatten(1).sort(-1).values, torch.cdist(x0[src], x0[src]).flatten(1).sort(-1).values
    )


def test_ot_on_rotated_permuted_copies_is_exact():
    g = gen(10)
    B, n = 8, 13
    x0 = torch.randn(B, n, 3, generator=g, dtype=F64)
    pi = torch.randperm(B, generator=g)
    R = torch.stack([random_rotation(3, g) for _ in range(B)])
    perm = torch.stack([torch.randperm(n, generator=g) for _ in range(B)])
    x1 = torch.gather(x0[pi], 1, perm[..., None].expand(B, n, 3)) @ R.mT + 5.0
    coupling = AlignmentCoupling()
    y0, y1, cond = coupling(x0, x1, torch.arange(B))
    assert torch.equal(coupling.last_index, pi)
    torch.testing.assert_close(y0, y1, atol=1e-10, rtol=0)
    assert torch.equal(cond, torch.arange(B))


def test_without_ot_keeps_pairs_and_float32():
    g = gen(11)
    x0 = torch.randn(10, 13, 3, generator=g)
    x1 = torch.randn(10, 13, 3, generator=g)
    y0, y1 = AlignmentCoupling(ot=False)(x0, x1)
    assert y0.dtype == torch.float32 and y0.shape == x0.shape
    ref = align(x0.double(), x1.double(), starts=2, n_iter=2)
    torch.testing.assert_close(y0.double(), ref.x, atol=1e-4, rtol=1e-4)
    assert torch.allclose(y0.mean(1), torch.zeros(10, 3), atol=1e-5)
    # gradients reach x0 through the (fixed) rotation and permutation
    x0g = x0.clone().requires_grad_(True)
    AlignmentCoupling(ot=False)(x0g, x1)[0].square().sum().backward()
    assert torch.isfinite(x0g.grad).all() and x0g.grad.abs().sum() > 0


def test_plain_ot_then_align_pairs_by_scipy_then_aligns_each_pair():
    """ot="plain": the pairing is scipy's optimum of the unaligned centred cost; each pair is then aligned."""
    from scipy.optimize import linear_sum_assignment

    g = gen(12)
    B, n = 12, 13
    x0 = torch.randn(B, n, 3, generator=g, dtype=F64)
    x1 = torch.randn(B, n, 3, generator=g, dtype=F64) * 0.7 + 3.0
    coupling = AlignmentCoupling(ot="plain")
    y0, y1 = coupling(x0, x1)
    a, b = centred(x0).flatten(1).numpy(), centred(x1).flatten(1).numpy()
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    src_ref = np.empty(B, dtype=np.int64)
    src_ref[cols] = rows
    assert coupling.last_index.tolist() == src_ref.tolist()
    ref = align(x0[coupling.last_index], x1, starts=2, n_iter=2)
    torch.testing.assert_close(y0, ref.x, atol=1e-10, rtol=0)
    torch.testing.assert_close(y1, centred(x1))
    aligned = ((y0 - y1) ** 2).sum((-2, -1))
    unaligned = torch.tensor(cost[src_ref, np.arange(B)])
    assert bool((aligned <= unaligned + 1e-9).all()) and float(aligned.sum()) < float(unaligned.sum())
    with pytest.raises(TypeError, match="`ot` must be True, False or 'plain'"):
        AlignmentCoupling(ot="fast")


def brute_force_order_cost(x, y, types=None):
    """min over within-type permutations (all n!) of sum |x_p(k) - y_k|^2, centred, no rotation."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    n = x.shape[0]
    types = np.zeros(n, int) if types is None else np.asarray(types)
    return min(
        float(((x[np.asarray(p)] - y) ** 2).sum())
        for p in itertools.permutations(range(n))
        if (types[np.asarray(p)] == types).all()
    )


@pytest.mark.parametrize("D", [2, 3])
@pytest.mark.parametrize("types", [None, [0, 1, 0, 1, 1, 2]])
def test_permutation_only_equals_brute_force(D, types):
    """rotations=False: the best within-type order with R = I, against all 6! orders."""
    g = gen(13)
    n = 6
    x0 = torch.randn(10, n, D, generator=g, dtype=F64)
    x1 = torch.randn(10, n, D, generator=g, dtype=F64) + 1.0
    ref = torch.tensor([brute_force_order_cost(a.numpy(), b.numpy(), types) for a, b in zip(x0, x1)], dtype=F64)
    out = align(x0, x1, types=types, rotations=False)
    torch.testing.assert_close(out.cost, ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out.rotation, torch.eye(D, dtype=F64).expand(10, D, D))
    # x is a within-type reordering of the centred x0, at the reported cost
    torch.testing.assert_close(((out.x - centred(x1)) ** 2).sum((-2, -1)), ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out.x, torch.gather(centred(x0), 1, out.perm[..., None].expand(-1, -1, D)))
    t = torch.as_tensor(types if types is not None else [0] * n)
    assert torch.equal(t[out.perm], t.expand(10, n))
    # never below the rotation-and-order optimum (brute force), which is over a larger set
    both = torch.tensor([brute_force_cost(a.numpy(), b.numpy(), types) for a, b in zip(x0, x1)], dtype=F64)
    assert (out.cost >= both - 1e-10).all() and (out.cost > both + 1e-6).any()


def test_permutation_only_coupling_picks_optimal_pairing_and_keeps_orientation():
    g = gen(14)
    B, n = 5, 5
    x0 = torch.randn(B, n, 3, generator=g, dtype=F64)
    x1 = 0.5 * torch.randn(B, n, 3, generator=g, dtype=F64) + 2.0
    C_ref = np.array([[brute_force_order_cost(x0[i].numpy(), x1[j].numpy()) for j in range(B)] for i in range(B)])
    best = min(sum(C_ref[p[j], j] for j in range(B)) for p in itertools.permutations(range(B)))
    coupling = AlignmentCoupling(rotations=False)
    assert "rotations=False" in repr(coupling)
    y0, y1 = coupling(x0, x1)
    np.testing.assert_allclose(coupling.last_cost.numpy(), C_ref, atol=1e-10)
    assert abs(float(((y0 - y1) ** 2).sum()) - best) < 1e-9
    # the same points as the chosen source cloud, only reordered: no rotation
    src = coupling.last_index
    torch.testing.assert_close(y0.sort(1).values, centred(x0[src]).sort(1).values)
    with pytest.raises(ValueError, match="`reflections=True` needs `rotations=True`"):
        AlignmentCoupling(rotations=False, reflections=True)
    with pytest.raises(TypeError, match="rotations"):
        AlignmentCoupling(rotations="no")


def test_bad_inputs():
    x = torch.randn(4, 5, 3)
    c = AlignmentCoupling()
    with pytest.raises(ValueError, match="x0"):
        c(torch.randn(4, 6, 3), x)
    with pytest.raises(ValueError, match="x0"):
        c(torch.randn(4, 15), x)
    with pytest.raises(ValueError, match="x0"):
        c(torch.randn(3, 5, 3), x)
    with pytest.raises(ValueError, match="types"):
        AlignmentCoupling([0, 1, 0])(x, x)
    with pytest.raises(ValueError, match="types"):
        AlignmentCoupling(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="types"):
        AlignmentCoupling([[0, 1]])
    with pytest.raises(ValueError, match="types"):
        align(x, x, types=[0, 1])
    with pytest.raises(TypeError, match="reflections"):
        AlignmentCoupling(reflections=1)
    with pytest.raises(ValueError, match="n_iter"):
        AlignmentCoupling(n_iter=-1)
    with pytest.raises(ValueError, match="cond"):
        c(x, x, torch.zeros(3))
    with pytest.raises(ValueError, match="x1"):
        c(x, torch.full((4, 5, 3), float("nan")))
    with pytest.raises(ValueError, match="x"):
        kabsch(torch.randn(4, 5, 3), torch.randn(4, 5, 2))


@pytest.fixture
def threads():
    """Set torch's thread count inside a test; restored afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_assignments_split_over_threads_equal_the_plain_loop(threads):
    from scipy.optimize import linear_sum_assignment

    from geoflow.couplings import alignment

    rng = np.random.default_rng(0)
    C = rng.normal(size=(301, 9, 9))  # not a multiple of the thread count
    ref = np.stack([linear_sum_assignment(c)[1] for c in C])
    for k in (1, 2, 3, 8):
        threads(k)
        np.testing.assert_array_equal(alignment._assign_each(C), ref)
    assert alignment._assign_each(C[:0]).shape == (0, 9)


def test_alignment_does_not_depend_on_the_thread_count(threads):
    """Typed and untyped heuristic paths (more than max_exhaustive permutations), batch^2 = 144 pairs."""
    g = gen(11)
    x0 = torch.randn(12, 13, 3, generator=g, dtype=F64)
    x1 = torch.randn(12, 13, 3, generator=g, dtype=F64)
    types = [0, 1, 1, 2, 0, 1, 2, 2, 0, 1, 1, 0, 2]
    for t in (None, types):
        out = []
        for k in (1, 2):
            threads(k)
            out.append(AlignmentCoupling(t).pairwise(x0, x1))
        for a, b in zip(*out):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_lapx_assignments_are_optimal_and_equal_scipy(threads):
    """lapx's batched solver against scipy (the oracle): same columns without ties, same optimal total with ties,
    float32 and float64, several thread counts; empty batches and empty problems."""
    from geoflow.couplings import alignment

    if alignment._lapjvr_batch is None:
        pytest.skip("lapx's lap.lapjvr_batch is not importable (the older `lap` package shadows it); the scipy "
                    "fallback the coupling then uses is tested in test_scipy_fallback_warns_once_...")
    rng = np.random.default_rng(3)
    rows = np.arange(20)
    for dtype in (np.float64, np.float32):
        C = rng.normal(size=(97, 20, 20)).astype(dtype)
        ref = alignment._assign_each_scipy(C.astype(np.float64))
        for k in (1, 3):
            threads(k)
            np.testing.assert_array_equal(alignment._assign_each(C), ref)
    ties = rng.integers(0, 3, size=(64, 20, 20)).astype(np.float64)  # many optimal assignments
    got, ref = alignment._assign_each(ties), alignment._assign_each_scipy(ties)
    assert all(sorted(c) == list(range(20)) for c in got.tolist())  # permutations
    p = np.arange(64)[:, None]
    np.testing.assert_array_equal(ties[p, rows, got].sum(-1), ties[p, rows, ref].sum(-1))
    assert alignment._assign_each(np.zeros((0, 5, 5))).shape == (0, 5)
    assert alignment._assign_each(np.zeros((3, 0, 0))).shape == (3, 0)


def test_scipy_fallback_warns_once_and_gives_the_same_alignment(monkeypatch):
    """Without lapx's batch solver (the older `lap` package shadows it) the coupling falls back to scipy on the
    column-reduced cost, says so once, and aligns exactly as with lapx."""
    from geoflow.couplings import alignment

    g = gen(5)
    x0 = torch.randn(6, 14, 3, generator=g, dtype=F64)
    x1 = torch.randn(6, 14, 3, generator=g, dtype=F64)
    types = [0, 1] * 7
    want = [AlignmentCoupling(t).pairwise(x0, x1) for t in (None, types)]
    monkeypatch.setattr(alignment, "_lapjvr_batch", None)
    monkeypatch.setattr(alignment, "_warned_no_lapx", False)
    with pytest.warns(RuntimeWarning, match="lapx"):
        got = [AlignmentCoupling(t).pairwise(x0, x1) for t in (None, types)]
    for w, o in zip(want, got):
        for a, b in zip(w, o):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time: silent
        AlignmentCoupling().pairwise(x0, x1)


def test_principal_axes_proxy_equals_sorting_each_sign_pattern():
    """_frames reads both signs of an axis off one sort; reference: sort every sign-flipped copy (the formula)."""
    g = gen(8)
    for D, reflections in ((3, False), (3, True), (2, False)):
        a = torch.randn(40, 9, D, generator=g, dtype=F64)
        b = torch.randn(40, 9, D, generator=g, dtype=F64)
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        aligner = AlignmentCoupling(reflections=reflections, starts=2 ** D)._aligner(9)
        got = aligner._frames(a, b)  # (P, S, D, D), all sign patterns ranked by the proxy
        Va = torch.stack([aligner_axes(x) for x in a])
        Vb = torch.stack([aligner_axes(x) for x in b])
        signs = torch.tensor(list(itertools.product((1.0, -1.0), repeat=D)), dtype=F64)
        if not reflections:
            signs = signs[signs.prod(-1) > 0]
        pa = (a @ Va)[:, None] * signs[None, :, None, :]
        proxy = (pa.sort(-2).values - (b @ Vb)[:, None].sort(-2).values).square().sum((-2, -1))
        order = proxy.argsort(-1)
        want = Vb[:, None] @ torch.diag_embed(signs[order]) @ Va[:, None].mT
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def aligner_axes(x):
    """Principal axes of one centred cloud as _frames takes them (eigh of x^T x, last column flipped to det +1)."""
    V = torch.linalg.eigh(x.T @ x).eigenvectors
    if torch.linalg.det(V) < 0:
        V[:, -1] = -V[:, -1]
    return V


def _solve_in_child(C, q):
    from geoflow.couplings import alignment

    torch.set_num_threads(2)
    q.put(alignment._assign_each(C))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform (Windows): workers are spawned there, "
                    "so no child inherits the parent's threads")
def test_assignments_work_in_a_forked_child_after_the_parent_used_threads(threads):
    """A DataLoader worker forked after the parent aligned on several threads must not hang (lapx's own
    worker pool would: it does not survive a fork)."""
    import multiprocessing as mp

    from geoflow.couplings import alignment

    C = np.random.default_rng(4).normal(size=(200, 12, 12))
    threads(2)
    want = alignment._assign_each(C)  # the parent uses its threads first
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    child = ctx.Process(target=_solve_in_child, args=(C, q))
    child.start()
    try:
        got = q.get(timeout=60)
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    np.testing.assert_array_equal(got, want)
