"""Discrete optimal transport numerics behind :mod:`geoflow.couplings.ot`.

* :func:`sinkhorn_potentials`: entropic OT by Sinkhorn scaling, stabilised by absorption into
  log-domain potentials, with epsilon scaling; batched over leading dimensions.
* :func:`assignment`: the exact minimum-cost permutation (scipy's ``linear_sum_assignment``)
  on a cost reduced by approximate dual potentials.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from scipy.optimize import linear_sum_assignment

#: Absorb the scaling vectors into the potentials once |log u| or |log v| exceeds this.
_ABSORB = 30.0
#: Warm start of :func:`assignment`: (smallest n, final eps / (mean(C) - min(C)), iterations).
#: Sinkhorn runs from eps = 0.1 (mean(C) - min(C)) down to the final eps, 10 iterations a stage;
#: larger batches need more accurate duals (measured on 2-D and 64-D Gaussian batches).
_WARM = ((1536, 1e-3, 120), (768, 3e-3, 60), (128, 1e-2, 20))


def _matvec(K: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.matmul(K, v.unsqueeze(-1)).squeeze(-1)


def _kernel(C, eps, f, g, out):
    """K_ij = exp((f_i + g_j - C_ij) / eps) written into ``out``, entries below e^floor set to 0.

    floor = -50 (float32) or -600 (float64).  Together with the absorption bound e^30 on the
    scalings this keeps every nonzero product K_ij v_j a normal float: subnormal floats (and
    exp of -inf) make ``exp`` and the matrix products up to 20x slower on x86 CPUs.  The dropped
    entries carry a relative mass below e^-50 m (under float32 resolution); a row whose entries
    are all dropped makes K v vanish there, which triggers an exact log-domain step.  Reusing
    ``out`` avoids the page faults of a fresh n x m buffer at every rebuild.
    """
    e = eps.squeeze(-1)
    if eps.numel() == 1:  # one fused pass for the common unbatched case
        X = torch.add((g / e).unsqueeze(-2), C, alpha=-1.0 / float(eps), out=out)
    else:
        X = torch.div(C, -eps, out=out).add_((g / e).unsqueeze(-2))
    X.add_((f / e).unsqueeze(-1))
    floor = -50.0 if X.dtype in (torch.float32, torch.float16, torch.bfloat16) else -600.0
    K = X.clamp_min_(floor).exp_()
    return torch.nn.functional.threshold_(K, 1.5 * math.exp(floor), 0.0)


def _log_step(C, eps, log_a, log_b, f, g):
    """One exact log-domain Sinkhorn iteration (f, then g)."""
    e = eps.squeeze(-1)
    f = -e * torch.logsumexp(log_b.unsqueeze(-2) + (g.unsqueeze(-2) - C) / eps, dim=-1)
    g = -e * torch.logsumexp(log_a.unsqueeze(-1) + (f.unsqueeze(-1) - C) / eps, dim=-2)
    return f, g


def _scaling(C, eps, a, b, log_a, log_b, f, g, it, cap, tol, work):
    """Scaling iterations at one eps from potentials (f, g); returns (f, g, it, err)."""
    e = eps.squeeze(-1)  # (..., 1): broadcasts over n and over m
    err = math.inf
    while it < cap:
        K = _kernel(C, eps, f, g, work)
        u, v = torch.ones_like(f), torch.ones_like(g)
        underflow = False
        while it < cap:
            Kv = _matvec(K, v * b)
            err = float((u * Kv - 1).mul_(a).abs_().sum(-1).amax())  # row marginals of P
            if err < tol:
                return f + e * u.log(), g + e * v.log(), it, err
            u_new = Kv.reciprocal_()
            v_new = _matvec(K.mT, u_new * a).reciprocal_()
            # one check for both: inf/NaN means a row or column underflowed (keep the last u, v
            # and take a log-domain step), a large value means absorb into the potentials
            size = float(torch.maximum(u_new.log().abs_().amax(), v_new.log().abs_().amax()))
            if not size < math.inf:
                underflow = True
                break
            u, v = u_new, v_new
            it += 1
            if size > _ABSORB:
                break
        f, g = f + e * u.log(), g + e * v.log()
        if underflow and it < cap:  # one exact log-domain iteration, then back to scaling
            f, g = _log_step(C, eps, log_a, log_b, f, g)
            it += 1
            err = math.inf
    return f, g, it, err


def sinkhorn_potentials(
    C: torch.Tensor,
    eps: torch.Tensor,
    log_a: torch.Tensor,
    log_b: torch.Tensor,
    *,
    max_iter: int,
    tol: float,
    eps_start: Optional[torch.Tensor] = None,
    eps_decay: float = 0.25,
    stage_iter: int = 20,
):
    """Dual potentials (f, g) of entropic OT; the plan is P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps).

    At the fixed point (Cuturi 2013, "Sinkhorn Distances", NeurIPS)

    .. math::
        f_i = -\\varepsilon \\log \\sum_j b_j e^{(g_j - C_{ij})/\\varepsilon},\\qquad
        g_j = -\\varepsilon \\log \\sum_i a_i e^{(f_i - C_{ij})/\\varepsilon}.

    Keeping the weights a, b outside the exponent puts the row maxima of (f_i + g_j - C_ij)/eps
    in [0, log m] at the fixed point, so a smaller eps of the next epsilon stage scales them up
    rather than down to underflow.  The iteration runs in scaling form, u <- 1 / (K (b v)),
    v <- 1 / (K^T (a u)), on the stabilised kernel K_ij = exp((f_i + g_j - C_ij) / eps) (one
    matrix-vector product a half step); u and v are moved into the potentials
    (f += eps log u, g += eps log v, K rebuilt) once they leave [e^-30, e^30] (Schmitzer 2019,
    "Stabilized sparse scaling algorithms for entropy regularized transport problems",
    SIAM J. Sci. Comput.).  When a scaling step would divide
    by an underflowed 0, an exact log-domain step (``logsumexp``) is taken instead, so every
    value stays finite: no NaN for any eps > 0.  With ``eps_start``, eps decreases
    geometrically from it (factor ``eps_decay``, at most ``stage_iter`` iterations a stage,
    warm-started) to ``eps`` (epsilon scaling, Schmitzer 2019, sec. 3.2).

    Stops once the row-marginal error sum_i |sum_j P_ij - a_i| is below ``tol`` for every
    problem of the batch (column marginals are exact after each full iteration), or after
    ``max_iter`` iterations in all.

    Shapes:
        C: (..., n, m); eps, eps_start: (...) or broadcastable to it; log_a: (..., n); log_b: (..., m).
        Returns f: (..., n), g: (..., m), the iteration count and the final error.
    """
    eps = eps.to(C.dtype)[..., None, None]
    a, b = log_a.exp(), log_b.exp()
    # start from the c-transforms f_i = min_j C_ij, g_j = min_i (C_ij - f_i): every row and every
    # column of the first kernel then has an entry 1, so nothing underflows at the start
    work = torch.empty_like(C)  # the kernel's buffer, reused by every rebuild
    f = C.amin(-1)
    g = torch.sub(C, f.unsqueeze(-1), out=work).amin(-2)
    stages = [eps]
    if eps_start is not None:
        e, stages = eps_start.to(C.dtype)[..., None, None], []
        while bool((e > eps).any()) and len(stages) < 50:
            stages.append(torch.maximum(e, eps))
            e = e * eps_decay
        stages.append(eps)
    it, err = 0, math.inf
    for k, e in enumerate(stages):
        cap = max_iter if k == len(stages) - 1 else min(max_iter, it + stage_iter)
        f, g, it, err = _scaling(C, e, a, b, log_a, log_b, f, g, it, cap, tol, work)
    return f, g, it, err


def plan_from_potentials(C, eps, log_a, log_b, f, g):
    """The plan P = diag(a u) K diag(b v) after one last scaling iteration from (f, g).

    Recomputing P from the potentials alone, P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps),
    loses the marginals in float32 at small eps (the exponent carries |C| / eps times the
    rounding error); one scaling iteration on the kernel makes the columns exact to rounding.
    Returns (P, f, g) with the potentials updated to match P.

    Shapes:
        C: (..., n, m); eps: (...); log_a: (..., n); log_b: (..., m).
    """
    eps = eps.to(C.dtype)[..., None, None]
    e = eps.squeeze(-1)
    a, b = log_a.exp(), log_b.exp()
    K = _kernel(C, eps, f, g, torch.empty_like(C))
    u = _matvec(K, b).reciprocal_()
    v = _matvec(K.mT, u * a).reciprocal_()
    if bool(torch.isfinite(u).all()) and bool(torch.isfinite(v).all()):
        return K.mul_((a * u).unsqueeze(-1)).mul_((b * v).unsqueeze(-2)), f + e * u.log(), g + e * v.log()
    X = (f.unsqueeze(-1) + g.unsqueeze(-2)).sub_(C).div_(eps)  # an underflowed row or column: exact formula
    return X.add_(log_a.unsqueeze(-1)).add_(log_b.unsqueeze(-2)).exp_(), f, g


def assignment(C: torch.Tensor, *, warm_start: Optional[bool] = None) -> torch.Tensor:
    """Exact minimum-cost permutation: ``col[i]`` is the column assigned to row i.

    Solves min_sigma sum_i C_{i, sigma(i)} over permutations of a square cost with scipy's
    ``linear_sum_assignment`` (shortest augmenting paths, Crouse 2016, "On implementing 2D
    rectangular assignment algorithms", IEEE TAES; O(n^3) worst case) in float64.  Warm start
    (default for n >= 128): the cost handed to scipy is the reduced cost
    R_ij = C_ij - f_i - g_j with (f, g) the dual potentials of a short eps-scaled Sinkhorn run
    in float32 (20 to 120 iterations of O(n^2), down to eps = 0.01 to 0.001 (mean(C) - min(C))
    as n grows, see ``_WARM``).  Adding a constant to a row or a column changes the total of
    *every* permutation by the same amount, so R has exactly the optimal permutations of C;
    near-optimal duals only make scipy's augmenting-path searches short (measured: about 10x
    faster in all on 2-D Gaussian batches of 1024 to 4096 points, where the searches are long,
    2-6x in 64-D).

    Shapes:
        C: (n, n), finite.  Returns a LongTensor (n,) on C's device.
    """
    n, device = C.shape[-1], C.device
    C = C.detach().cpu()
    C32 = C if C.dtype == torch.float32 else C.to(torch.float32)
    R = C.to(torch.float64, copy=True)  # reduced in place below; scipy works in float64
    schedule = next(((e, k) for n_min, e, k in _WARM if n >= n_min), None)
    if warm_start is None:
        warm_start = schedule is not None
    if warm_start and n > 1:
        rel, iters = schedule or _WARM[-1][1:]
        scale = C32.mean() - C32.amin()
        if float(scale) > 0:
            log_w = torch.full((n,), -math.log(n), dtype=torch.float32)
            f, g, _, _ = sinkhorn_potentials(
                C32, rel * scale, log_w, log_w, max_iter=iters, tol=1e-3, eps_start=0.1 * scale, stage_iter=10
            )
            if bool(torch.isfinite(f).all()) and bool(torch.isfinite(g).all()):
                R.sub_(f.to(torch.float64).unsqueeze(-1)).sub_(g.to(torch.float64).unsqueeze(-2))
    _, col = linear_sum_assignment(R.numpy())
    return torch.from_numpy(col).to(device)
