"""Alignment couplings for point clouds: Kabsch rotation, Hungarian permutation, then minibatch OT.

A density of identical particles (Lennard-Jones clusters, molecules with atom types) is
invariant under rotations, translations and permutations of particles of one type.  Pairing a
base sample with a data sample in the orientation and particle order that makes them closest
shortens the conditional paths (Klein, Kraemer & Noe 2023, "Equivariant flow matching",
NeurIPS; Song et al. 2023, "Equivariant Flow Matching with Hybrid Probability Transport",
NeurIPS).

* :func:`kabsch`: the optimal rotation of one centred cloud onto another (batched SVD).
* :func:`align`: the optimal rotation and within-type permutation of pairs of clouds.
* :class:`AlignmentCoupling`: align every (x0_i, x1_j) pair, then exact minibatch OT on the
  aligned cost.
"""

from __future__ import annotations

import itertools
import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

try:  # lapx >= 0.11 (module name `lap`): batched Jonker-Volgenant
    from lap import lapjvr_batch as _lapjvr_batch
except ImportError:  # no lap module, or the older `lap` package of the same module name
    _lapjvr_batch = None

from ._solve import assignment
from .base import Coupling, check_cond, check_int, check_points, pack

__all__ = ["AlignmentCoupling", "Alignment", "align", "kabsch"]

TypesLike = Union[Sequence, torch.Tensor, np.ndarray]
#: Pairs of clouds aligned together in one block of :meth:`AlignmentCoupling.pairwise`
#: (bounds memory: a block holds ~ pairs * n_particles^2 assignment costs in the clouds' dtype).
_PAIR_BLOCK = 2048
#: Fewest assignment problems a thread gets when they are split (a thread pool costs ~0.1 ms to start).
_PER_THREAD = 32
#: Assignment solver of the alignment: "lapx" (default) or "scipy" (the fallback; benchmarks compare them).
_SOLVER = "lapx"


def _in_threads(P: int, solve) -> None:
    """Run ``solve(lo, hi)`` over [0, P) split into ``torch.get_num_threads()`` contiguous chunks of at
    least ``_PER_THREAD`` problems, each on a Python thread (the solvers release the GIL).

    Python threads rather than lapx's own worker pool: that pool does not survive a fork (a forked
    child that calls it after the parent did hangs, e.g. a DataLoader worker), new threads do.
    """
    workers = min(torch.get_num_threads(), P // _PER_THREAD)
    if workers <= 1:
        solve(0, P)
        return
    bounds = np.linspace(0, P, workers + 1).astype(int)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for f in [pool.submit(solve, int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]:
            f.result()


def _assign_each_scipy(C: np.ndarray) -> np.ndarray:
    """scipy's ``linear_sum_assignment`` of every square problem C[p] (P, m, m) -> columns (P, m), int64.

    The fallback of :func:`_assign_each` and its test oracle; each problem is solved exactly as
    in a loop, so the result does not depend on the thread count.
    """
    P, m = C.shape[0], C.shape[-1]
    out = np.empty((P, m), dtype=np.int64)

    def solve(lo: int, hi: int) -> None:
        for p in range(lo, hi):
            out[p] = linear_sum_assignment(C[p])[1]

    _in_threads(P, solve)
    return out


def _assign_each(C: np.ndarray) -> np.ndarray:
    """Exact minimum-cost assignment of every square problem C[p] (P, m, m) -> columns (P, m), int64.

    Solved by lapx's batched Jonker-Volgenant solver (``lap.lapjvr_batch``, one native thread per
    chunk of problems, the chunks on ``torch.get_num_threads()`` threads) in C's own precision; both
    it and scipy are exact, so the columns equal scipy's except where two assignments tie, and do
    not depend on the thread count.  Measured on the LJ55 alignment problems (one core,
    ``benchmarks/alignment_cost.py --solver-table``): 28.9 us per problem, against 68.9 us for
    scipy's ``linear_sum_assignment`` on the column-reduced cost and 166 us on the raw one.  Falls
    back to scipy (column-reduced), with a warning, when the installed ``lap`` module is the older
    package of that name without the batch solver: the whole LJ55 alignment then takes 1.6x as long.
    """
    P, m = C.shape[0], C.shape[-1]
    if P == 0 or m == 0:
        return np.zeros((P, m), dtype=np.int64)
    if _SOLVER == "lapx" and _lapjvr_batch is None:
        _warn_no_lapx()
    if _SOLVER == "scipy" or _lapjvr_batch is None:
        # scipy starts from zero duals: reduced columns make its searches short (2.4x on LJ55 problems)
        return _assign_each_scipy(C - C.min(axis=1, keepdims=True))
    out = np.empty((P, m), dtype=np.int64)

    def solve(lo: int, hi: int) -> None:
        out[lo:hi] = np.stack(_lapjvr_batch(C[lo:hi], n_threads=1, return_cost=False)[1])

    _in_threads(P, solve)
    return out


_warned_no_lapx = False


def _warn_no_lapx() -> None:
    global _warned_no_lapx
    if not _warned_no_lapx:
        _warned_no_lapx = True
        warnings.warn(
            "the installed `lap` module has no `lapjvr_batch` (the older `lap` package shadows lapx's): "
            "AlignmentCoupling falls back to scipy's linear_sum_assignment, about 1.6x slower. "
            "Fix: pip uninstall -y lap lapx && pip install 'lapx>=0.11.1'",
            RuntimeWarning,
            stacklevel=3,
        )


def _assignment_cost(a: torch.Tensor, b: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """The cost of the Hungarian step, C[p, k, l] = |b_k|^2 - 2 <b_k, R a_l> for (P, n, D) clouds, (P, D, D) R.

    Equal to |b_k - R a_l|^2 - |a_l|^2: the same optimal orders as the squared distance and as
    -<b_k, R a_l> (they differ by constants per row or column), but lapx's Jonker-Volgenant column
    reduction then starts each x0 particle at its nearest x1 particle: measured 2.3x faster than on
    -<b_k, R a_l> on LJ55 problems (``benchmarks/alignment_cost.py --solver-table``).
    """
    return (b @ (a @ R.mT).mT).mul_(-2).add_((b * b).sum(-1).unsqueeze(-1))


# --------------------------------------------------------------------------- helpers
def _check_clouds(name: str, x) -> torch.Tensor:
    check_points(name, x)
    if x.dim() != 3 or x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(
            f"`{name}` must be a batch of point clouds of shape (batch, n_particles, dim), got {tuple(x.shape)}"
        )
    return x


def _centre(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=-2, keepdim=True)


def _type_groups(types: Optional[np.ndarray], n: int) -> list[np.ndarray]:
    """Index arrays of the particles of each type (one group of all particles when untyped)."""
    if types is None:
        return [np.arange(n)]
    if types.shape != (n,):
        raise ValueError(
            f"`types` must give one type per particle: length {n} (n_particles of x0 and x1), "
            f"got {types.shape[0]} entries"
        )
    return [np.flatnonzero(types == t) for t in np.unique(types)]


def _as_types(types) -> Optional[np.ndarray]:
    """Validate ``types``: None, or a 1-D sequence / tensor of hashable labels -> int codes."""
    if types is None:
        return None
    if isinstance(types, torch.Tensor):
        if types.is_floating_point() or types.is_complex() or types.dim() != 1:
            raise ValueError(
                f"`types` must be a 1-D integer tensor (one type per particle), got {types.dtype} "
                f"of shape {tuple(types.shape)}"
            )
        labels = types.detach().cpu().tolist()
    elif isinstance(types, (str, bytes)) or not isinstance(types, (Sequence, np.ndarray)):
        raise ValueError(f"`types` must be None or a sequence with one type per particle, got {type(types).__name__}")
    else:
        labels = list(np.asarray(types).tolist()) if isinstance(types, np.ndarray) else list(types)
        if isinstance(types, np.ndarray) and types.ndim != 1:
            raise ValueError(f"`types` must be 1-D (one type per particle), got shape {types.shape}")
    if len(labels) == 0:
        raise ValueError("`types` must have one entry per particle, got an empty sequence")
    for v in labels:
        if isinstance(v, (float, complex)) or not isinstance(v, (int, str, np.integer)):
            raise ValueError(f"`types` entries must be ints or strings (type labels), got {v!r}")
    codes = {v: k for k, v in enumerate(sorted(set(labels), key=lambda v: (isinstance(v, str), v)))}
    return np.asarray([codes[v] for v in labels], dtype=np.int64)


def kabsch(x: torch.Tensor, y: torch.Tensor, *, reflections: bool = False) -> torch.Tensor:
    """The orthogonal matrix R minimising sum_k |R x_k - y_k|^2 (Kabsch 1976; Umeyama 1991).

    .. math::
        H = \\sum_k x_k y_k^T = U S V^T,\\qquad
        R = V \\,\\mathrm{diag}(1, \\dots, 1, d)\\, U^T,\\qquad
        d = \\mathrm{sign}\\det(V U^T)

    with d = 1 when ``reflections=True`` (R in O(D), E(D) alignment); otherwise R is a proper
    rotation (det R = +1, SE(D) alignment) even when the best orthogonal map is a reflection.
    The points are taken as given: centre both clouds first (the optimal translation maps the
    centroids onto each other).  Points are rows: the aligned cloud is ``x @ R.mT``.
    D = 2 uses the closed form R = [[c, -s], [s, c]] with (c, s) proportional to
    (H00 + H11, H01 - H10) (and the reflection [[c, s], [s, -c]] with (c, s) proportional to
    (H00 - H11, H01 + H10) when it is better and allowed); a degenerate H (all zeros) gives
    R = I.

    Args:
        x, y: point clouds, shape (..., n_particles, D) (leading dims broadcast).
        reflections: allow improper R (det R = -1).

    Returns:
        R, shape (..., D, D).
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or x.dim() < 2 or y.dim() < 2:
        raise ValueError("`x` and `y` must be tensors of shape (..., n_particles, dim)")
    if x.shape[-2:] != y.shape[-2:]:
        raise ValueError(
            f"`x` and `y` must have the same (n_particles, dim), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return _kabsch_from_h(x.mT @ y, reflections)[0]


def _rot2(a: torch.Tensor, b: torch.Tensor, reflect: bool):
    """2-D: the (c, s) maximising c a + s b is (a, b) / r with r = hypot(a, b) (R = I when r = 0)."""
    r = torch.hypot(a, b)
    ok = r > 0
    safe = torch.where(ok, r, torch.ones_like(r))
    c = torch.where(ok, a / safe, torch.ones_like(a))
    s = torch.where(ok, b / safe, torch.zeros_like(b))
    if reflect:
        return torch.stack((torch.stack((c, s), -1), torch.stack((s, -c), -1)), -2), r
    return torch.stack((torch.stack((c, -s), -1), torch.stack((s, c), -1)), -2), r


def _kabsch_from_h(H: torch.Tensor, reflections: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, tr(R H)) with R the maximiser of tr(R H) over SO(D), or O(D) with reflections.

    max tr(R H) = s_1 + ... + s_{D-1} + d s_D with s the singular values of H and
    d = sign det(H) (d = 1 with reflections: the nuclear norm) (Umeyama 1991).
    D = 2 in closed form: tr(R H) = c (H00 + H11) + s (H01 - H10) for R = [[c, -s], [s, c]] and
    c (H00 - H11) + s (H01 + H10) for the reflection [[c, s], [s, -c]].
    """
    D = H.shape[-1]
    if D == 2:
        R, t = _rot2(H[..., 0, 0] + H[..., 1, 1], H[..., 0, 1] - H[..., 1, 0], False)
        if reflections:
            F, t2 = _rot2(H[..., 0, 0] - H[..., 1, 1], H[..., 0, 1] + H[..., 1, 0], True)
            R = torch.where((t2 > t)[..., None, None], F, R)
            t = torch.maximum(t, t2)
        return R, t
    U, S, Vh = torch.linalg.svd(H)
    if reflections:
        return Vh.mT @ U.mT, S.sum(-1)
    d = torch.where(torch.linalg.det(U) * torch.linalg.det(Vh) < 0, -1.0, 1.0).to(H.dtype)
    V = torch.cat((Vh.mT[..., :-1], Vh.mT[..., -1:] * d[..., None, None]), dim=-1)
    return V @ U.mT, S[..., :-1].sum(-1) + d * S[..., -1]


def _max_trace(H: torch.Tensor, reflections: bool) -> torch.Tensor:
    """max tr(R H) only (singular values, no vectors)."""
    if H.shape[-1] == 2:
        return _kabsch_from_h(H, reflections)[1]
    S = torch.linalg.svdvals(H)
    if reflections:
        return S.sum(-1)
    d = torch.where(torch.linalg.det(H) < 0, -1.0, 1.0).to(H.dtype)
    return S[..., :-1].sum(-1) + d * S[..., -1]


@dataclass
class Alignment:
    """Result of :func:`align`: x (centred) rotated and permuted onto y (centred).

    Attributes:
        x: the aligned clouds, ``x_aligned[..., k, :] = R x_c[..., perm[k], :]``, shape (P, n, D).
        rotation: R, shape (P, D, D) (proper unless reflections were allowed).
        perm: the within-type permutation, shape (P, n) (int64).
        cost: the aligned squared distance sum_k |R x_c[perm[k]] - y_c[k]|^2, shape (P,).
    """

    x: torch.Tensor
    rotation: torch.Tensor
    perm: torch.Tensor
    cost: torch.Tensor


class _Aligner:
    """Optimal rotation and within-type permutation of paired, centred clouds (a, b).

    Exhaustive when the within-type permutations number at most ``max_exhaustive``; otherwise
    the alternating heuristic described in :class:`AlignmentCoupling`.
    """

    def __init__(self, groups, n, reflections, n_iter, max_exhaustive, starts, rotations=True):
        self.groups, self.n, self.reflections, self.n_iter = groups, n, reflections, n_iter
        self.starts, self.rotations = starts, rotations
        count = 1
        for g in groups:
            count *= math.factorial(len(g))
            if count > max_exhaustive:
                break
        # the permutation table serves the exhaustive rotation search only; rotations=False never reads it
        self.perms = self._all_perms(groups, n) if rotations and count <= max_exhaustive else None
        self._perm_mats: dict = {}  # (dtype, device) -> the (n^2, Q) 0/1 matrices of the permutations (2-D)

    @staticmethod
    def _all_perms(groups, n) -> torch.Tensor:
        per_group = [list(itertools.permutations(g.tolist())) for g in groups]
        out = []
        for choice in itertools.product(*per_group):
            p = np.empty(n, dtype=np.int64)
            for g, c in zip(groups, choice):
                p[g] = c
            out.append(p)
        return torch.as_tensor(np.stack(out))

    def __call__(self, a: torch.Tensor, b: torch.Tensor):
        """(perm (P, n), R (P, D, D), cost (P,)) for centred a, b of shape (P, n, D)."""
        sq = (a * a).sum((-2, -1)) + (b * b).sum((-2, -1))
        if not self.rotations:
            return self._permute_only(a, b, sq)
        if self.perms is not None:
            return self._exhaustive(a, b, sq)
        return self._alternate(a, b, sq)

    def _exhaustive(self, a, b, sq):
        perms = self.perms.to(a.device)
        if a.shape[-1] == 2:
            return self._exhaustive_2d(a, b, sq, perms)
        H = torch.einsum("pqkd,pke->pqde", a[:, perms], b)  # (P, Q, D, D)
        best = _max_trace(H, self.reflections).argmax(-1)
        idx = torch.arange(a.shape[0], device=a.device)
        R, tr = _kabsch_from_h(H[idx, best], self.reflections)
        return perms[best], R, sq - 2 * tr

    def _exhaustive_2d(self, a, b, sq, perms):
        """D = 2: max tr(R H_q) over the Q permutations from four bilinear sums, one matmul each.

        For R = [[c, -s], [s, c]] the trace is c (H00 + H11) + s (H01 - H10), maximised at
        hypot(H00 + H11, H01 - H10); for the reflection [[c, s], [s, -c]] at hypot(H00 - H11,
        H01 + H10) (see :func:`_kabsch_from_h`).  H_q = sum_k a_{q(k)} b_k^T, so each of the four
        combinations is sum_k f(a_{q(k)}, b_k) = <F, M_q> with F[l, k] = f(a_l, b_k) the n x n table
        of a pair and M_q the 0/1 matrix of permutation q: (P, n^2) @ (n^2, Q) instead of building
        the (P, Q, 2, 2) matrices H_q.
        """
        P, n, _ = a.shape
        Q = perms.shape[0]
        key = (a.dtype, a.device)
        M = self._perm_mats.get(key)
        if M is None:
            M = torch.zeros(Q, n, n, dtype=a.dtype, device=a.device)
            M[torch.arange(Q, device=a.device)[:, None], perms, torch.arange(n, device=a.device)[None, :]] = 1.0
            M = self._perm_mats[key] = M.reshape(Q, n * n).T.contiguous()  # (n^2, Q)
        ax, ay = a[..., 0].unsqueeze(-1), a[..., 1].unsqueeze(-1)  # (P, n, 1): index l
        bx, by = b[..., 0].unsqueeze(-2), b[..., 1].unsqueeze(-2)  # (P, 1, n): index k

        def total(F):
            return F.reshape(P, n * n) @ M  # (P, Q)

        tr = torch.hypot(total(ax * bx + ay * by), total(ax * by - ay * bx))  # |(H00 + H11, H01 - H10)|
        if self.reflections:
            tr = torch.maximum(tr, torch.hypot(total(ax * bx - ay * by), total(ax * by + ay * bx)))
        perm = perms[tr.argmax(-1)]
        R, cost = self._fit(a, b, perm, sq)  # the rotation of the winner only
        return perm, R, cost

    def _permute_only(self, a, b, sq):
        """R = I: one exact assignment per pair (the within-type order alone, no rotation)."""
        P, n, D = a.shape
        eye = torch.eye(D, dtype=a.dtype, device=a.device).expand(P, D, D)
        perm = self._hungarian(a, b, eye, torch.arange(n, device=a.device).expand(P, n))
        cost = sq - 2 * (self._gather(a, perm) * b).sum((-2, -1))
        return perm, eye.clone(), cost

    def _gather(self, a, perm):
        return torch.gather(a, 1, perm[..., None].expand_as(a))

    def _fit(self, a, b, perm, sq):
        R, tr = _kabsch_from_h(self._gather(a, perm).mT @ b, self.reflections)
        return R, sq - 2 * tr

    def _hungarian(self, a, b, R, perm):
        """Within-type order minimising sum_k |R a_perm(k) - b_k|^2 (the assignment on squared distances)."""
        C = np.ascontiguousarray(_assignment_cost(a, b, R).cpu().numpy())
        if len(self.groups) == 1:  # untyped: one assignment per pair, no sub-blocks to copy
            return torch.from_numpy(_assign_each(C)).to(a.device)
        new = perm.cpu().numpy().copy()
        for g in self.groups:
            if len(g) == 1:
                continue
            new[:, g] = g[_assign_each(np.ascontiguousarray(C[:, g][:, :, g]))]
        return torch.from_numpy(new).to(a.device)

    def _frames(self, a, b):
        """Rotations R = V_b diag(s) V_a^T between principal-axes frames, ranked by a proxy.

        V_a, V_b: eigenvectors of the 2nd-moment matrices (made proper); s runs over the sign
        patterns with prod(s) = +1 (all 2^D with reflections).  Proxy of each R: the 1-D OT cost
        of the coordinates along each principal axis, sum_axes sum_k (sort(s a V_a)_k - sort(b V_b)_k)^2.
        Returns the ``starts`` best rotations, shape (P, starts, D, D).
        """
        D = a.shape[-1]

        def axes(x):
            V = torch.linalg.eigh(x.mT @ x).eigenvectors
            d = torch.where(torch.linalg.det(V) < 0, -1.0, 1.0).to(V.dtype)
            return torch.cat((V[..., :-1], V[..., -1:] * d[..., None, None]), dim=-1)

        Va, Vb = axes(a), axes(b)
        signs = torch.tensor(list(itertools.product((1.0, -1.0), repeat=D)), dtype=a.dtype, device=a.device)
        if not self.reflections:
            signs = signs[signs.prod(-1) > 0]
        # sort(-x) = -reversed(sort(x)): each axis is sorted once and the 1-D OT cost of both of its
        # signs is read off, instead of sorting one copy per sign pattern (same values up to rounding)
        sa = (a @ Va).sort(-2).values  # (P, n, D)
        sb = (b @ Vb).sort(-2).values
        per_axis = torch.stack(((sa - sb).square().sum(-2), (sa.flip(-2) + sb).square().sum(-2)), -1)  # (P, D, 2)
        pick = (signs < 0).long().T  # (D, S): 0 for +1, 1 for -1
        proxy = per_axis.gather(-1, pick.expand(per_axis.shape[0], -1, -1)).sum(-2)  # (P, S)
        k = min(self.starts, signs.shape[0])
        best = proxy.topk(k, dim=-1, largest=False).indices  # (P, k)
        S = torch.diag_embed(signs[best])  # (P, k, D, D)
        return Vb[:, None] @ S @ Va[:, None].mT

    def _alternate(self, a, b, sq):
        P, n, D = a.shape
        dev = a.device
        # candidate 0: the given order, Kabsch-rotated: the result is never worse than it
        perm = torch.arange(n, device=dev).expand(P, n).clone()
        R, cost = self._fit(a, b, perm, sq)
        # principal-axes starts: one Hungarian + Kabsch round each, keep the best
        starts = self._frames(a, b)
        k = starts.shape[1]
        rep = lambda x: x.repeat_interleave(k, 0)  # noqa: E731
        ak, bk = rep(a), rep(b)
        pk = self._hungarian(ak, bk, starts.reshape(P * k, D, D), rep(perm))
        Rk, ck = self._fit(ak, bk, pk, rep(sq))
        ck = ck.reshape(P, k)
        j = ck.argmin(-1)
        idx = torch.arange(P, device=dev) * k + j
        cj = ck[torch.arange(P, device=dev), j]
        take = cj < cost
        perm = torch.where(take[:, None], pk[idx], perm)
        R = torch.where(take[:, None, None], Rk[idx], R)
        cost = torch.where(take, cj, cost)
        # alternate: Hungarian at the current R, Kabsch for the new order, while it improves
        active = torch.ones(P, dtype=torch.bool, device=dev)
        for _ in range(self.n_iter):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            new = self._hungarian(a[idx], b[idx], R[idx], perm[idx])
            changed = (new != perm[idx]).any(-1)
            Rn, cn = self._fit(a[idx], b[idx], new, sq[idx])
            take = changed & (cn < cost[idx])
            perm[idx] = torch.where(take[:, None], new, perm[idx])
            R[idx] = torch.where(take[:, None, None], Rn, R[idx])
            cost[idx] = torch.where(take, cn, cost[idx])
            active[idx] = take
        return perm, R, cost


def _check_options(reflections, n_iter, max_exhaustive, starts, rotations=True):
    if not isinstance(reflections, bool):
        raise TypeError(f"`reflections` must be a bool, got {reflections!r}")
    if not isinstance(rotations, bool):
        raise TypeError(f"`rotations` must be a bool, got {rotations!r}")
    if reflections and not rotations:
        raise ValueError("`reflections=True` needs `rotations=True` (a reflection is an orthogonal map too); "
                         "with `rotations=False` only the particle order is aligned")
    return (
        check_int("n_iter", n_iter, minimum=0),
        check_int("max_exhaustive", max_exhaustive),
        check_int("starts", starts),
    )


def align(
    x: torch.Tensor,
    y: torch.Tensor,
    types: Optional[TypesLike] = None,
    *,
    reflections: bool = False,
    n_iter: int = 10,
    max_exhaustive: int = 24,
    starts: int = 4,
    rotations: bool = True,
) -> Alignment:
    """Rotate and permute each cloud x_p onto y_p: min over R and within-type sigma.

    .. math::
        \\min_{R \\in SO(D),\\ \\sigma \\in S_{types}} \\sum_k |R\\, \\bar x_{\\sigma(k)} - \\bar y_k|^2,
        \\qquad \\bar x = x - \\tfrac1n \\sum_k x_k

    (O(D) with ``reflections=True``).  The translation is removed by centring both clouds.
    Exact by enumeration when the within-type permutations number at most ``max_exhaustive``
    (e.g. DW4: 4! = 24, with the rotation in closed form per permutation); otherwise the
    alternating heuristic of :class:`AlignmentCoupling` (a local optimum, never worse than
    the given order after Kabsch).  The defaults here are more thorough than the coupling's
    (all principal-axes starts of 3-D, 10 rounds): this is the tool for a few pairs.

    Args:
        x, y: clouds, shape (P, n_particles, D) each (pairs p = 0..P-1).
        types: one label per particle (shared by all clouds), or None (all identical).
        reflections: allow improper rotations (E(D) instead of SE(D) alignment).
        n_iter: extra Hungarian/Kabsch rounds of the heuristic (>= 0).
        max_exhaustive: enumerate permutations up to this count.
        starts: principal-axes starting rotations tried (>= 1; at most 2^(D-1), 2^D with
            reflections, are distinct).
        rotations: False: R = I, only the within-type order is optimised (one exact assignment
            per pair; ``n_iter``, ``max_exhaustive`` and ``starts`` are then unused).

    Returns:
        :class:`Alignment` (computed without gradient).
    """
    _check_clouds("x", x)
    _check_clouds("y", y)
    if x.shape != y.shape:
        raise ValueError(
            f"`x` and `y` must have the same shape (P, n_particles, dim), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.dtype != y.dtype or x.device != y.device:
        raise TypeError(f"`x` and `y` must share dtype and device, got {x.dtype}/{x.device} and {y.dtype}/{y.device}")
    n_iter, max_exhaustive, starts = _check_options(reflections, n_iter, max_exhaustive, starts, rotations)
    groups = _type_groups(_as_types(types), x.shape[1])
    aligner = _Aligner(groups, x.shape[1], reflections, n_iter, max_exhaustive, starts, rotations)
    with torch.no_grad():
        a, b = _centre(x.detach()).double(), _centre(y.detach()).double()
        perm, R, cost = aligner(a, b)
    xc = _centre(x)
    xa = torch.gather(xc, 1, perm[..., None].expand_as(xc)) @ R.to(x.dtype).mT
    return Alignment(xa, R.to(x.dtype), perm, cost.clamp_min(0.0).to(x.dtype))


class AlignmentCoupling(Coupling):
    """Equivariant OT coupling of point clouds: per pair Kabsch + Hungarian, then minibatch OT.

    For every pair (x0_i, x1_j) of the batch (after centring both: the CoM-free subspace) the
    aligned cost is

    .. math::
        C_{ij} = \\min_{R,\\ \\sigma} \\sum_k |R\\, x_{0,i,\\sigma(k)} - x_{1,j,k}|^2

    over rotations R in SO(D) (O(D) with ``reflections=True``: E(D) instead of SE(D), use it
    when the density is also reflection invariant, i.e. no chirality) and permutations sigma
    of particles within each type.  Then the exact minibatch OT permutation pi on C pairs
    x1_j with x0_pi(j), and x0_pi(j) is returned rotated and permuted onto x1_j
    (Klein, Kraemer & Noe 2023, "Equivariant flow matching", NeurIPS: equivariant OT;
    Song et al. 2023, EquiFM).  Because the base density is rotation and permutation
    invariant, the returned x0 still has the base distribution, and the conditional paths
    are shorter (lower transport cost, straighter learned flow).

    How the inner problem is solved (joint minimisation over a rotation and a permutation is
    non-convex; what follows is documented so that its cost and quality can be judged):

    * at most ``max_exhaustive`` within-type permutations (DW4: 4! = 24): enumerate them all
      with the optimal rotation of each in closed form (max tr(R H) from the singular values
      of H = sum_k x_k y_k^T, in 2-D from two numbers): the exact optimum.
    * otherwise alternate from principal-axes starts.  The usual recipe, "Hungarian on the
      centred distances of the unrotated clouds, then Kabsch" (Klein et al. 2023), depends on
      the arbitrary relative orientation of x0 and x1 (it cannot even recover a rotated copy).
      Here the starting rotations map the principal axes of x0 onto those of x1,
      R = V_1 diag(s) V_0^T, one per sign pattern s (4 proper ones in 3-D), ranked by the 1-D
      OT cost of the sorted coordinates along each axis; the best ``starts`` of them get one
      Hungarian step (an exact assignment on |R x0_k - x1_l|^2 within each type, see Cost)
      and a Kabsch step, the best result is kept (also against the given order after Kabsch,
      so the result is never worse than the unaligned cost), then Hungarian at the current R
      and Kabsch for the new order alternate up to ``n_iter`` more times; each half step
      cannot increase the cost and a pair stops once its order no longer changes.  A rotated
      and permuted copy is recovered exactly (one frame is the true rotation when the
      principal moments are distinct).  Measured on LJ13 (test data against CoM-free
      Gaussian noise, 200 pairs): mean aligned cost 14.0 for the Klein recipe, 11.3 with
      ``starts=1, n_iter=0``, 10.5 with ``starts=2, n_iter=2``, 10.2 with 4 starts, 10.0 for
      the best of 30 random restarts; unaligned 53.5.

    Cost: n_pairs = batch^2 alignments with ``ot=True`` (batch with ``ot=False``); each
    heuristic round is one Hungarian of size n_particles per pair (the dominant cost: e.g.
    LJ55 with batch 256 is 65536 assignment problems of size 55 per round, see
    ``benchmarks/alignment_cost.py``), Kabsch is one batched SVD of 3x3 matrices.  The
    assignment problems are solved by lapx's batched Jonker-Volgenant solver on
    ``torch.get_num_threads()`` threads (the result does not depend on the thread count), on
    the cost |x1_k|^2 - 2 <x1_k, R x0_l>, where it is 2.3x faster than on -<x1_k, R x0_l> and
    2.4x faster than scipy.  Measured on LJ55 at batch 256 (one quiet CPU core): 63 us per pair
    (4.2 s per call) with ``starts=1, n_iter=0`` and 174 us (11.4 s) with the defaults; 196 and
    664 us with scipy on the unshifted cost before (commit decd445).  A much
    cheaper variant is ``OTCoupling("exact")`` on the unaligned clouds followed by
    ``AlignmentCoupling(ot=False)``, built in as ``ot="plain"`` (batch alignments instead of batch^2): at batch 32 its
    transport cost was 30.3 against 28.2 for this coupling (independent: 325, OT alone: 275).

    Args:
        types: one label per particle (ints or strings, shared by every cloud, e.g. atom
            types in a fixed order), or None when all particles are identical.  Particles of
            different types are never swapped.
        reflections: allow improper rotations (E(D) alignment) instead of proper ones (SE(D)).
        ot: True: align all batch^2 pairs and solve minibatch OT on the aligned cost;
            ``"plain"``: pair by minibatch OT on the centred, unaligned clouds (squared
            Euclidean cost, exact), then align only the batch chosen pairs (batch instead of
            batch^2 alignments: the cheap variant above, for large systems);
            False: keep the given pairs (x0_j, x1_j) and only align each.
        n_iter: extra Hungarian/Kabsch rounds of the heuristic after the starts (>= 0).
        max_exhaustive: enumerate the within-type permutations when there are at most this
            many (>= 1).
        starts: principal-axes starting rotations that get a Hungarian step (>= 1; each
            costs one assignment problem per pair).
        rotations: False: permutation-only alignment, R = I (one exact assignment per pair;
            ``starts``, ``n_iter`` and ``max_exhaustive`` unused, ``reflections`` must be False):
            for densities invariant under permutations but not rotations (an external field, a
            fixed frame), and to separate the effect of the particle order from that of the
            rotation (benchmarks/README.md, LJ13 and minibatch OT).

    Call:
        ``coupling(x0, x1, cond=None)`` returns ``(x0', x1')`` or ``(x0', x1', cond)`` where
        x1' = x1 centred (same order; ``cond`` unchanged) and x0'_j is the centred base sample
        paired with x1_j, rotated and permuted onto it.  x0 and x1 must have equal shapes.
        The alignment is computed without gradient; x0' is a differentiable function of x0
        given it.  The last call's cost matrix and chosen pairs are kept in ``last_cost``
        (batch, batch) (None with ``ot=False``) and ``last_index`` (x0 index per x1).

    Shapes:
        x0, x1: (batch, n_particles, D); cond: (batch, ...) or None.
    """

    def __init__(
        self,
        types: Optional[TypesLike] = None,
        *,
        reflections: bool = False,
        ot: Union[bool, str] = True,
        n_iter: int = 2,
        max_exhaustive: int = 24,
        starts: int = 2,
        rotations: bool = True,
    ):
        self.types = _as_types(types)
        self.n_iter, self.max_exhaustive, self.starts = _check_options(
            reflections, n_iter, max_exhaustive, starts, rotations
        )
        self.reflections, self.rotations = reflections, rotations
        if not isinstance(ot, bool) and ot != "plain":
            raise TypeError(f"`ot` must be True, False or 'plain', got {ot!r}")
        self.ot = ot
        self.last_cost: Optional[torch.Tensor] = None
        self.last_index: Optional[torch.Tensor] = None
        self._cache: dict[int, _Aligner] = {}

    def extra_repr(self) -> str:
        parts = []
        if self.types is not None:
            parts.append(f"types={len(np.unique(self.types))} types of {len(self.types)} particles")
        if not self.rotations:
            parts.append("rotations=False")
        parts.append(f"reflections={self.reflections}, ot={self.ot}, n_iter={self.n_iter}")
        return ", ".join(parts)

    def _aligner(self, n: int) -> _Aligner:
        if n not in self._cache:
            groups = _type_groups(self.types, n)
            self._cache[n] = _Aligner(
                groups, n, self.reflections, self.n_iter, self.max_exhaustive, self.starts, self.rotations
            )
        return self._cache[n]

    def _check(self, x0, x1, cond):
        _check_clouds("x0", x0)
        _check_clouds("x1", x1)
        if x0.shape != x1.shape:
            raise ValueError(
                f"`x0` and `x1` must have the same shape (batch, n_particles, dim), got {tuple(x0.shape)} and "
                f"{tuple(x1.shape)}"
            )
        if x0.dtype != x1.dtype or x0.device != x1.device:
            raise TypeError(
                f"`x0` and `x1` must share dtype and device, got {x0.dtype}/{x0.device} and {x1.dtype}/{x1.device}"
            )
        check_cond(cond, x1.shape[0])
        return self._aligner(x0.shape[1])

    @torch.no_grad()
    def pairwise(self, x0: torch.Tensor, x1: torch.Tensor):
        """Align every pair (x0_i, x1_j): (cost (B, B), perm (B, B, n), rotation (B, B, D, D)).

        Both clouds are centred first; computed in float64, in blocks of pairs.
        """
        aligner = self._check(x0, x1, None)
        a, b = _centre(x0.detach()).double(), _centre(x1.detach()).double()
        B, n, D = a.shape
        ii, jj = torch.meshgrid(torch.arange(B, device=a.device), torch.arange(B, device=a.device), indexing="ij")
        ii, jj = ii.reshape(-1), jj.reshape(-1)
        perms, rots, costs = [], [], []
        for s in range(0, B * B, _PAIR_BLOCK):
            i, j = ii[s : s + _PAIR_BLOCK], jj[s : s + _PAIR_BLOCK]
            p, R, c = aligner(a[i], b[j])
            perms.append(p), rots.append(R), costs.append(c)
        return (
            torch.cat(costs).clamp_min(0.0).reshape(B, B),
            torch.cat(perms).reshape(B, B, n),
            torch.cat(rots).reshape(B, B, D, D),
        )

    def __call__(self, x0, x1, cond=None):
        aligner = self._check(x0, x1, cond)
        B = x0.shape[0]
        if self.ot is True:
            C, perms, rots = self.pairwise(x0, x1)
            col = assignment(C)  # x0 row i -> x1 column col[i]
            src = torch.empty_like(col).scatter_(0, col, torch.arange(B, device=col.device)).to(x0.device)
            j = torch.arange(B, device=x0.device)
            perm, R = perms[src, j], rots[src, j]
            self.last_cost, self.last_index = C, src
        else:
            src = torch.arange(B, device=x0.device)
            if self.ot == "plain":  # x1_j is paired with x0_src[j] by OT on the unaligned clouds
                with torch.no_grad():
                    a, b = _centre(x0.detach()).double().flatten(1), _centre(x1.detach()).double().flatten(1)
                    C = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
                    col = assignment(C)
                src = torch.empty_like(col).scatter_(0, col, torch.arange(B, device=col.device)).to(x0.device)
            with torch.no_grad():
                a, b = _centre(x0.detach()[src]).double(), _centre(x1.detach()).double()
                perm, R, _ = aligner(a, b)
            self.last_cost, self.last_index = None, src
        xc = _centre(x0)[src]
        x0a = torch.gather(xc, 1, perm[..., None].expand_as(xc)) @ R.to(x0.dtype).mT
        return pack(x0a, _centre(x1), cond)
