"""Symmetric positive definite matrices SPD(n) with the affine-invariant or the log-Euclidean metric.

Besides the manifold, this module provides symmetric matrix functions (``sym_expm``,
``sym_logm``, ``sym_sqrtm``) whose derivatives stay finite at repeated eigenvalues: the
eigendecomposition is never differentiated.  Derivatives come from the Daleckii-Krein
formula (first order) and its second-order analogue with divided differences evaluated
stably for equal and nearly equal eigenvalues.

Internal layout
---------------
Small matrices (n <= 4, the SPD(2)/SPD(3) of diffusion tensors and covariance flows)
arrive in large batches of tiny matrices, where per-matrix LAPACK calls and batched 3x3
``matmul`` are slow.  Internally every matrix is therefore stored *batch-last*,
``(n, n, *batch)``, so that each entry is a contiguous vector over the batch and every
kernel (Cholesky, triangular inverse, products, a cyclic Jacobi eigensolver) is a short
sequence of elementwise operations over the whole batch.  Larger matrices, or small
batches, go to ``torch.linalg``.  When PyTorch runs multi-threaded, the maps are evaluated
in chunks of the batch small enough for every operation to run inline (see ``_map_batch``).
"""

from __future__ import annotations

import math

import geoopt
import torch

from ._math import any_true as _any, log_sinhc, sqrt_safe
from .base import Manifold

__all__ = ["SPD", "sym_expm", "sym_logm", "sym_sqrtm"]

_METRICS = ("affine", "log-euclidean")

#: Matrices up to this size use the batch-vectorised kernels (Jacobi eigensolver, products) ...
_SMALL_N = 4
#: ... when at least this many matrices are processed together; otherwise torch.linalg.eigh.
_SMALL_BATCH = 64
#: PyTorch's parallel grain size: elementwise operations on fewer elements run inline.
_GRAIN = 32768
_LOG2E = 1.0 / math.log(2.0)
#: Cap on cyclic Jacobi sweeps (convergence is quadratic; random 3x3 need 4 in float64).
_JACOBI_MAX_SWEEPS = 12




def _floor(dtype: torch.dtype) -> float:
    """Eigenvalue floor before log / sqrt: tiny^(1/3), about 2e-13 in float32 and 6e-103 in float64.

    Far below any eigenvalue a matrix of that dtype can resolve, yet 1/floor^2 (second
    derivatives of log) is still finite.
    """
    return torch.finfo(dtype).tiny ** (1.0 / 3.0)


# --------------------------------------------------------------------------------------
# batch-last kernels: matrices are (n, n, *batch)
# --------------------------------------------------------------------------------------
def _bl(x: torch.Tensor, nb: int) -> torch.Tensor:
    """(..., n, n) -> (n, n, *batch) with the batch padded to ``nb`` dims (so batches broadcast)."""
    x = x.reshape((1,) * (nb + 2 - x.dim()) + tuple(x.shape))
    return x.movedim((-2, -1), (0, 1)).contiguous()


def _unbl(y: torch.Tensor) -> torch.Tensor:
    """(n, n, *batch) -> (*batch, n, n), contiguous."""
    return y.movedim((0, 1), (-2, -1)).contiguous()


def _t(a: torch.Tensor) -> torch.Tensor:
    return a.transpose(0, 1)


def _sym(a: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a + a.transpose(0, 1))


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Matrix product of batch-last matrices."""
    n = a.shape[0]
    if n <= _SMALL_N:
        out = a[:, :1] * b[:1]
        for k in range(1, n):
            out = out + a[:, k : k + 1] * b[k : k + 1]
        return out
    return torch.matmul(a.movedim((0, 1), (-2, -1)), b.movedim((0, 1), (-2, -1))).movedim((-2, -1), (0, 1))


def _congr(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Congruence a x a^T."""
    return _mm(_mm(a, x), _t(a))


def _frob2(a: torch.Tensor) -> torch.Tensor:
    return (a * a).sum((0, 1))


def _trace_prod(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """tr(a b)."""
    return (a * _t(b)).sum((0, 1))


def _cholesky(p: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor of a symmetric batch-last matrix, column by column.

    Pivots are clamped to ``eps * |p_jj| + floor`` so that numerically semi-definite input
    (float32 round-off at condition ~1/eps) gives a finite factor instead of NaN.
    Differentiable by autograd (elementwise operations only).
    """
    n = p.shape[0]
    eps = torch.finfo(p.dtype).eps
    floor = _floor(p.dtype)
    cols = []
    for j in range(n):
        s = p[j:, j]
        for k in range(j):
            s = s - cols[k][j:] * cols[k][j]
        d = torch.maximum(s[0], eps * p[j, j].abs() + floor)
        rinv = torch.rsqrt(d)  # rsqrt, not sqrt: see _map_batch
        parts = [(d * rinv).unsqueeze(0), s[1:] * rinv]
        if j:
            parts.insert(0, torch.zeros_like(s[:1]).expand((j,) + tuple(s.shape[1:])))
        cols.append(torch.cat(parts, 0))
    return torch.stack(cols, 1)


def _tri_inv(low: torch.Tensor) -> torch.Tensor:
    """Inverse of a lower-triangular batch-last matrix by forward substitution, row by row."""
    n = low.shape[0]
    eye = torch.eye(n, dtype=low.dtype, device=low.device).reshape((n, n) + (1,) * (low.dim() - 2))
    rows = []
    for i in range(n):
        r = eye[i]
        for k in range(i):
            r = r - low[i, k] * rows[k]
        rows.append(r / low[i, i])
    return torch.stack(rows, 0)


def _jacobi_eigh(s: torch.Tensor):
    """Batched Jacobi eigendecomposition (see :func:`_jacobi_core`), in chunks of the flattened batch.

    Each chunk is small enough (fewer than 32768 elements per tensor) that PyTorch runs every
    elementwise operation inline instead of opening a parallel region: the solver is a few
    hundred tiny operations, and on a loaded machine each parallel region can stall for
    milliseconds waiting for its worker thread.
    """
    n = s.shape[0]
    batch = tuple(s.shape[2:])
    total = math.prod(batch)
    chunk = _GRAIN // (n + 1)
    if total <= chunk:
        return _jacobi_core(s)
    flat = s.reshape(n, n, total)
    parts = [_jacobi_core(flat[..., i : i + chunk]) for i in range(0, total, chunk)]
    w = torch.cat([p[0] for p in parts], -1).reshape((n,) + batch)
    v = torch.cat([p[1] for p in parts], -1).reshape((n, n) + batch)
    return w, v


def _jacobi_core(s: torch.Tensor):
    """Eigendecomposition of symmetric batch-last matrices by cyclic Jacobi rotations.

    Golub & Van Loan, Algorithm 8.5.2 (symmetric Schur decomposition of each 2x2 pivot
    block, rotation angle |theta| <= pi/4), on all matrices of the batch at once, after
    scaling each matrix to max |s_ij| = 1.  Sweeps stop when every off-diagonal entry satisfies
    a_pq^2 <= eps^2 |a_pp a_qq| + eps^4, the criterion under which Jacobi resolves the
    eigenvalues of positive definite matrices to high relative accuracy (Demmel & Veselic,
    1992).  Reads the upper triangle.

    Returns ``w`` (n, *batch) (unordered) and ``V`` (n, n, *batch) with S = V diag(w) V^T.
    """
    n = s.shape[0]
    batch = tuple(s.shape[2:])
    finfo = torch.finfo(s.dtype)
    eps2, tiny = finfo.eps**2, finfo.tiny
    # scale to max |s_ij| = 1: sqrt(d^2 + 4 a_pq^2) below cannot overflow (hypot is ~10x slower)
    scale = s.abs().amax((0, 1)).clamp_min(tiny)
    s = s / scale
    a = {(i, j): s[i, j] for i in range(n) for j in range(i, n)}
    eye = torch.eye(n, dtype=s.dtype, device=s.device)
    cols = [eye[:, j].reshape((n,) + (1,) * len(batch)).expand((n,) + batch) for j in range(n)]
    pairs = [(p, q) for p in range(n - 1) for q in range(p + 1, n)]
    fro_tol = eps2 * eps2

    def key(i, j):
        return (i, j) if i <= j else (j, i)

    for _ in range(_JACOBI_MAX_SWEEPS):
        if not pairs:
            break
        worst = None
        for p, q in pairs:
            x = torch.add(a[p, q] * a[p, q], (a[p, p] * a[q, q]).abs_(), alpha=-eps2)
            worst = x if worst is None else torch.maximum(worst, x)
        if not _any(worst > fro_tol):
            break
        for p, q in pairs:
            apq, app, aqq = a[p, q], a[p, p], a[q, q]
            d = aqq - app
            two = apq + apq
            # t = tan(theta) = 2 a_pq / (d + sign(d) sqrt(d^2 + 4 a_pq^2)): the root with |theta| <= pi/4
            r2 = torch.addcmul(d * d, two, two).clamp_min_(tiny)
            r = r2 * r2.rsqrt()  # sqrt without its multi-threaded kernel (see _map_batch)
            t = two / torch.copysign(r, d).add_(d)
            c = (t * t).add_(1.0).rsqrt_()
            sn = t * c
            ta = t * apq
            a[p, p] = app - ta
            a[q, q] = aqq + ta
            a[p, q] = torch.zeros_like(apq)
            for k in range(n):
                if k == p or k == q:
                    continue
                kp, kq = key(k, p), key(k, q)
                g, h = a[kp], a[kq]
                a[kp] = torch.addcmul(c * g, sn, h, value=-1.0)
                a[kq] = torch.addcmul(sn * g, c, h)
            vp, vq = cols[p], cols[q]
            cols[p] = torch.addcmul(c * vp, sn, vq, value=-1.0)
            cols[q] = torch.addcmul(sn * vp, c, vq)
    w = torch.stack([a[i, i] for i in range(n)], 0) * scale
    return w, torch.stack(cols, 1).expand((n, n) + batch)


def _eigh(s: torch.Tensor):
    """(w, V) of symmetric batch-last ``s``: Jacobi for small matrices in big batches, else LAPACK.

    LAPACK's eigh is accurate to eps |S| in absolute terms only, so the logarithm of a small
    eigenvalue loses eps cond(S) (5e-4 at condition 3000 in float32); single-precision input
    is therefore decomposed in float64.  Jacobi is accurate relative to each eigenvalue.
    """
    n = s.shape[0]
    if n <= _SMALL_N and s[0, 0].numel() >= _SMALL_BATCH:
        return _jacobi_eigh(s)
    work = torch.float64 if torch.finfo(s.dtype).bits < 64 else s.dtype
    w, v = torch.linalg.eigh(s.movedim((0, 1), (-2, -1)).to(work))
    return w.movedim(-1, 0).to(s.dtype), v.movedim((-2, -1), (0, 1)).to(s.dtype)


# --------------------------------------------------------------------------------------
# scalar functions and their divided differences
# --------------------------------------------------------------------------------------
# kinds: "exp"; "log", "sqrt" (argument clamped to ``floor``); "clamp" (max(x, floor)).
def _f(kind: str, w: torch.Tensor, floor: float) -> torch.Tensor:
    """f(w) for the kinds above.

    exp, log and sqrt are evaluated as exp2(w log2(e)), xlogy(1, w) and w rsqrt(w): torch.exp,
    torch.log and torch.sqrt go multi-threaded from 2048 elements on, which costs milliseconds
    per call on a busy machine (see :func:`_map_batch`); exp2 adds a relative error |w| eps.
    """
    if kind == "exp":
        return torch.exp2(w * _LOG2E)
    wc = torch.clamp(w, min=floor)
    if kind == "log":
        return torch.xlogy(1.0, wc)
    if kind == "sqrt":
        return wc * torch.rsqrt(wc)
    return wc


def _dd1(kind: str, a: torch.Tensor, b: torch.Tensor, floor: float) -> torch.Tensor:
    """First divided difference f[a, b] = (f(a) - f(b)) / (a - b), f'(a) at a == b, stable for a ~ b.

    exp: e^hi (1 - e^{-h}) / h with h = |a - b| (= e^{(a+b)/2} sinhc(h/2), without overflow of sinh);
    log: log1p(h / lo) / h (= 2 atanh(z) / z / (a + b), z = (a - b)/(a + b), accurate also for a >> b);
    sqrt: 1 / (sqrt(a) + sqrt(b)).  With a clamped argument, the divided difference of the
    clamped function (0 where both are below the floor, the secant where one is).
    """
    if kind == "exp":
        h = (a - b).abs()
        pos = h > 0
        return torch.exp(torch.maximum(a, b)) * torch.where(pos, -torch.expm1(-h) / torch.where(pos, h, 1.0), 1.0)
    ac, bc = torch.clamp(a, min=floor), torch.clamp(b, min=floor)
    if kind == "log":
        lo = torch.minimum(ac, bc)
        h = torch.maximum(ac, bc) - lo
        pos = h > 0
        inner = torch.where(pos, torch.log1p(h / lo) / torch.where(pos, h, 1.0), 1.0 / lo)
    elif kind == "sqrt":
        inner = 1.0 / (torch.sqrt(ac) + torch.sqrt(bc))
    else:
        inner = torch.ones_like(ac)
    above_a, above_b = a >= floor, b >= floor
    both = above_a & above_b
    if not _any(~both):
        return inner
    mixed = above_a ^ above_b
    secant = (_f(kind, a, floor) - _f(kind, b, floor)) / torch.where(mixed, a - b, 1.0)
    return torch.where(both, inner, torch.where(mixed, secant, 0.0))


def _taylor2(kind: str, m: torch.Tensor):
    """(f''(m) / 2, f''''(m) / 48): f[a, b, c] ~ f''(m)/2 + f''''(m)/48 sum_i (x_i - m)^2 at the mean m."""
    if kind == "exp":
        e = torch.exp(m)
        return 0.5 * e, e / 48.0
    if kind == "log":
        r = 1.0 / (m * m)
        return -0.5 * r, -0.125 * r * r
    if kind == "sqrt":
        r = torch.rsqrt(m) / m
        return -0.125 * r, (-5.0 / 256.0) * r / (m * m)
    z = torch.zeros_like(m)
    return z, z


def _dd2(kind: str, w: torch.Tensor, floor: float) -> torch.Tensor:
    """Second divided differences F[i, j, k] = f[w_i, w_j, w_k], shape (n, n, n, *batch).

    With lo <= mid <= hi the sorted arguments, F = (f[mid, hi] - f[lo, mid]) / (hi - lo);
    when hi - lo < eps^(1/4) (times hi for log and sqrt) the Hermite-Genocchi expansion about
    the mean m is used instead: f''(m)/2 + f''''(m)/48 sum (x - m)^2 (the first-order term
    vanishes at the mean), error O(gap^3).
    """
    a, b, c = w[:, None, None], w[None, :, None], w[None, None, :]
    lo = torch.minimum(torch.minimum(a, b), c)
    hi = torch.maximum(torch.maximum(a, b), c)
    mid = torch.maximum(torch.minimum(a, b), torch.minimum(torch.maximum(a, b), c))
    gap = hi - lo
    delta = torch.finfo(w.dtype).eps ** 0.25
    scale = 1.0 if kind == "exp" else torch.clamp(hi, min=floor)
    close = gap <= delta * scale
    pivot = (_dd1(kind, mid, hi, floor) - _dd1(kind, lo, mid, floor)) / torch.where(close, 1.0, gap)
    m = (a + b + c) / 3.0
    s2 = (a - m) ** 2 + (b - m) ** 2 + (c - m) ** 2
    f2, f4 = _taylor2(kind, m if kind == "exp" else torch.clamp(m, min=floor))
    taylor = f2 + f4 * s2
    if kind != "exp":
        taylor = torch.where(lo >= floor, taylor, 0.0)
    return torch.where(close, taylor, pivot)


def _t3(x: torch.Tensor, f3: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(x F y)_pq = sum_r x_pr F_prq y_rq."""
    return (x.unsqueeze(2) * f3 * y.unsqueeze(0)).sum(1)


def _frechet2(kind, w, v, e, h, floor):
    """Second Frechet derivative D^2 f(S)[E, H] = V (sum_k F_ikj (E_ik H_kj + H_ik E_kj)) V^T (hats: eigenbasis)."""
    f3 = _dd2(kind, w, floor)
    vt = _t(v)
    eh, hh = _mm(_mm(vt, e), v), _mm(_mm(vt, h), v)
    return _mm(_mm(v, _t3(eh, f3, hh) + _t3(hh, f3, eh)), vt)


def _frechet2_adjoint(kind, w, v, e, g, floor):
    """Gradient over symmetric S of <G, L_f(S, E)>: V sym(T(E^T, G) + T(G, E^T)) V^T in the eigenbasis."""
    f3 = _dd2(kind, w, floor)
    vt = _t(v)
    eht, gh = _t(_mm(_mm(vt, e), v)), _mm(_mm(vt, g), v)
    return _mm(_mm(v, _sym(_t3(eht, f3, gh) + _t3(gh, f3, eht))), vt)


# --------------------------------------------------------------------------------------
# autograd functions
# --------------------------------------------------------------------------------------
class _NoHigherOrder(torch.autograd.Function):
    """Identity whose derivative raises: marks where the derivative tower stops (instead of a silent zero)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, *inputs):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(
            "manifolds.spd: this derivative order is not implemented (symmetric matrix functions are "
            "differentiable twice; Frechet derivatives and eigenvalues once)"
        )


def _stop_here(x: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs if isinstance(t, torch.Tensor)):
        return _NoHigherOrder.apply(x, *inputs)
    return x


class _SymFrechet(torch.autograd.Function):
    """Frechet derivative L_f(S, E) = V (Gamma o (V^T E V)) V^T (Daleckii & Krein, 1965).

    Gamma_ij = f[lambda_i, lambda_j] (first divided differences, f'(lambda_i) on the diagonal).
    Inputs: S (symmetric, batch-last), E, and S's eigendecomposition (w, V), which is not
    differentiated.  Backward: L_f(S, G) for E (L_f is self-adjoint) and the second-order
    Daleckii-Krein term for S.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(s, e, w, v, kind, floor):
        gamma = _dd1(kind, w.unsqueeze(1), w.unsqueeze(0), floor)
        vt = _t(v)
        return _mm(_mm(v, gamma * _mm(_mm(vt, e), v)), vt)

    @staticmethod
    def setup_context(ctx, inputs, output):
        s, e, w, v, kind, floor = inputs
        ctx.kind, ctx.floor = kind, floor
        ctx.save_for_backward(s, e, w, v)
        ctx.save_for_forward(s, e, w, v)

    @staticmethod
    def backward(ctx, g):
        s, e, w, v = ctx.saved_tensors
        gs = ge = None
        if ctx.needs_input_grad[1]:
            ge = _SymFrechet.apply(s, g, w, v, ctx.kind, ctx.floor)
        if ctx.needs_input_grad[0]:
            with torch.no_grad():
                gs = _frechet2_adjoint(ctx.kind, w, v, e, g, ctx.floor)
            gs = _stop_here(gs, s, e, g)
        return gs, ge, None, None, None, None

    @staticmethod
    def jvp(ctx, ds, de, dw, dv, dkind, dfloor):
        s, e, w, v = ctx.saved_tensors
        out = None
        if de is not None:
            out = _SymFrechet.apply(s, de, w, v, ctx.kind, ctx.floor)
        if ds is not None:
            term = _frechet2(ctx.kind, w, v, e, ds, ctx.floor)
            out = term if out is None else out + term
        return out if out is not None else torch.zeros_like(e)


class _SymMatrixFunction(torch.autograd.Function):
    """f(S) = V f(Lambda) V^T for symmetric batch-last S; returns (f(S), Lambda, V).

    Backward and forward-mode derivatives are Frechet derivatives L_f(S, .) through
    :class:`_SymFrechet` (never the derivative of the eigendecomposition), so they are finite
    at repeated eigenvalues; second derivatives come from :class:`_SymFrechet`'s own backward.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(s, kind, floor):
        w, v = _eigh(s)
        y = _mm(v * _f(kind, w, floor).unsqueeze(0), _t(v))
        return y, w, v

    @staticmethod
    def setup_context(ctx, inputs, output):
        s, kind, floor = inputs
        _, w, v = output
        ctx.mark_non_differentiable(w, v)
        ctx.kind, ctx.floor = kind, floor
        ctx.save_for_backward(s, w, v)
        ctx.save_for_forward(s, w, v)

    @staticmethod
    def backward(ctx, gy, gw, gv):
        s, w, v = ctx.saved_tensors
        return _SymFrechet.apply(s, _sym(gy), w, v, ctx.kind, ctx.floor), None, None

    @staticmethod
    def jvp(ctx, ds, dkind, dfloor):
        s, w, v = ctx.saved_tensors
        return _SymFrechet.apply(s, ds, w, v, ctx.kind, ctx.floor), None, None


class _SymEigvals(torch.autograd.Function):
    """Eigenvalues of symmetric batch-last S with gradient V diag(g) V^T (finite at repeated eigenvalues)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(s):
        return _eigh(s)

    @staticmethod
    def setup_context(ctx, inputs, output):
        (s,) = inputs
        _, v = output
        ctx.mark_non_differentiable(v)
        ctx.save_for_backward(s, v)
        ctx.save_for_forward(v)

    @staticmethod
    def backward(ctx, gw, gv):
        s, v = ctx.saved_tensors
        with torch.no_grad():
            gs = _mm(v * gw.unsqueeze(0), _t(v))
        return _stop_here(gs, s, gw)

    @staticmethod
    def jvp(ctx, ds):
        (v,) = ctx.saved_tensors
        return (v * _mm(ds, v)).sum(0), None


def _map_batch(fn, *xs: torch.Tensor) -> torch.Tensor:
    """``fn(*xs)`` on batch-last inputs, evaluated chunk by chunk when PyTorch runs multi-threaded.

    The maps are a few hundred elementwise operations on tiny matrices.  With more than one
    thread, every operation on more than 32768 elements opens an OpenMP parallel region, and
    on a machine with other work each region can stall for milliseconds waiting for its
    worker; chunks of fewer than 32768 / n^2 matrices keep every operation inline.  ``fn``
    must act independently on each batch element and return (*batch) or (n, n, *batch).
    """
    batch = torch.broadcast_shapes(*(x.shape[2:] for x in xs))
    total = math.prod(batch)
    n = max(x.shape[0] for x in xs)
    chunk = max(1, (_GRAIN - 1) // (n * n))
    if total <= chunk or torch.get_num_threads() == 1:
        return fn(*xs)
    flat = [x.expand(tuple(x.shape[:2]) + batch).reshape(tuple(x.shape[:2]) + (total,)) for x in xs]
    out = torch.cat([fn(*(f[..., i : i + chunk] for f in flat)) for i in range(0, total, chunk)], -1)
    return out.reshape(tuple(out.shape[:-1]) + batch)


def _funm(s: torch.Tensor, kind: str):
    """(f(S), eigenvalues, eigenvectors) of symmetric batch-last S; f(S) differentiable."""
    floor = 0.0 if kind == "exp" else _floor(s.dtype)
    return _SymMatrixFunction.apply(s, kind, floor)


def _sym_apply(s: torch.Tensor, kind: str, name: str) -> torch.Tensor:
    if not isinstance(s, torch.Tensor) or s.dim() < 2 or s.shape[-1] != s.shape[-2]:
        shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        raise ValueError(f"{name}: expected a tensor of square matrices (..., n, n), got {shape}")
    if not s.is_floating_point():
        raise TypeError(f"{name}: expected a floating dtype, got {s.dtype}")
    y, _, _ = _funm(_sym(_bl(s, s.dim() - 2)), kind)
    return _unbl(y)


def sym_expm(s: torch.Tensor) -> torch.Tensor:
    """Matrix exponential of symmetric matrices, expm(S) = V diag(exp(lambda)) V^T.

    The input is symmetrised, (S + S^T)/2.  Gradients (and forward-mode derivatives) are the
    Frechet derivative V (Gamma o V^T G V) V^T with Gamma_ij = e^{lambda_i}[lambda_i, lambda_j]
    (Daleckii-Krein), finite at repeated eigenvalues; twice differentiable.

    Shapes: ``(..., n, n)`` -> ``(..., n, n)``.
    """
    return _sym_apply(s, "exp", "sym_expm")


def sym_logm(s: torch.Tensor) -> torch.Tensor:
    """Principal logarithm of symmetric positive definite matrices, V diag(log(max(lambda, floor))) V^T.

    Eigenvalues are clamped to a dtype-dependent floor (tiny^(1/3): 2e-13 in float32, 6e-103 in
    float64) so that numerically singular input gives finite values and gradients.  Derivatives
    as in :func:`sym_expm`, with log divided differences log1p(h / lo) / h.

    Shapes: ``(..., n, n)`` -> ``(..., n, n)``.
    """
    return _sym_apply(s, "log", "sym_logm")


def sym_sqrtm(s: torch.Tensor) -> torch.Tensor:
    """Principal square root of symmetric positive (semi-)definite matrices, eigenvalues clamped as in :func:`sym_logm`.

    Shapes: ``(..., n, n)`` -> ``(..., n, n)``.
    """
    return _sym_apply(s, "sqrt", "sym_sqrtm")


# --------------------------------------------------------------------------------------
# the manifold
# --------------------------------------------------------------------------------------
class SPD(Manifold, geoopt.SymmetricPositiveDefinite):
    """Symmetric positive definite n x n matrices, with the affine-invariant or the log-Euclidean metric.

    Affine-invariant metric (Pennec, Fillard & Ayache, "A Riemannian framework for tensor
    computing", IJCV 2006), with P = L L^T the Cholesky factorisation (any square root of P
    gives the same maps):

    .. math::
        \\langle U, V \\rangle_P = \\mathrm{tr}(P^{-1} U P^{-1} V), \\qquad
        \\exp_P(U) = L \\,\\mathrm{expm}(L^{-1} U L^{-T}) L^T, \\qquad
        \\log_P(Q) = L \\,\\mathrm{logm}(L^{-1} Q L^{-T}) L^T, \\qquad
        d(P, Q) = \\|\\mathrm{logm}(L^{-1} Q L^{-T})\\|_F

    Log-Euclidean metric (Arsigny, Fillard, Pennec & Ayache, "Log-Euclidean metrics for fast
    and simple calculus on diffusion tensors", MRM 2006): logm is an isometry onto Sym(n),

    .. math::
        \\langle U, V \\rangle_P = \\mathrm{tr}(D\\log_P(U)\\, D\\log_P(V)), \\qquad
        \\exp_P(U) = \\mathrm{expm}(\\mathrm{logm} P + D\\log_P(U)), \\qquad
        \\log_P(Q) = D\\exp_{\\mathrm{logm} P}(\\mathrm{logm} Q - \\mathrm{logm} P), \\qquad
        d(P, Q) = \\|\\mathrm{logm} P - \\mathrm{logm} Q\\|_F

    where D log_P(U) = V (Gamma o V^T U V) V^T, Gamma_ij = log[lambda_i, lambda_j] (Daleckii-Krein
    with stable divided differences) and D exp_{logm P} is its inverse.  Geodesics are in
    closed form: gamma(t) = L expm(t logm(L^{-1} P_1 L^{-T})) L^T (affine) and
    expm((1 - t) logm P_0 + t logm P_1) (log-Euclidean).

    Base distribution: wrapped normal at the identity, P = expm(S) with S symmetric,
    N(0, 1) diagonal and N(0, 1/2) off-diagonal (standard normal for the Frobenius inner
    product on Sym(n), dimension d = n(n+1)/2).  With lambda the eigenvalues of S = logm P,

    .. math::
        \\log p(P) = -\\frac{d}{2}\\log 2\\pi - \\frac{\\|S\\|_F^2}{2}
        - \\sum_{i<j} \\log \\frac{\\sinh(\\delta_{ij}/2)}{\\delta_{ij}/2}, \\qquad \\delta_{ij} = \\lambda_i - \\lambda_j

    for the affine metric (the volume element of exp_I; Said et al., "Riemannian Gaussian
    distributions on the space of symmetric positive definite matrices", IEEE TIT 2017), and
    without the last sum for the log-Euclidean metric.

    Numerics: no eigendecomposition is differentiated (see :func:`sym_logm`); eigenvalues are
    clamped before log; Cholesky pivots are clamped.  A point Q is whitened as
    I + L^{-1} (Q - P) L^{-T}, so d(P, P) = 0 and log_P(P) = 0 exactly at any condition number.
    Expmap, logmap, dist, geodesic, inner and the matrix functions are twice differentiable for
    the affine metric; the log-Euclidean maps and inner product, which differentiate a Frechet
    derivative, and base_log_prob (eigenvalues) once in P (the next derivative raises instead
    of returning something wrong).  Forward mode (``torch.func.jvp``/``jacfwd``) and ``torch.func.vmap``
    work.  Inputs are symmetrised, (X + X^T)/2.

    Args:
        n: matrix size (>= 1); dim = n(n+1)/2.
        metric: ``"affine"`` (default) or ``"log-euclidean"``.

    Shapes: points and tangent vectors (symmetric matrices) ``(*batch, n, n)``.
    """

    def __init__(self, n: int, *, metric: str = "affine"):
        n = self._check_int("n", n)
        if not isinstance(metric, str) or metric not in _METRICS:
            raise ValueError(f"`metric` must be one of {', '.join(repr(m) for m in _METRICS)}, got {metric!r}")
        # geoopt warns for non-AIM metrics at construction; every metric-dependent method is overridden here.
        geoopt.SymmetricPositiveDefinite.__init__(self, default_metric="AIM")
        if metric == "log-euclidean":
            self.default_metric = type(self.default_metric)("LEM")
        self._set_shape((n, n), n * (n + 1) // 2)
        self.n = n
        self.metric = metric
        self._affine = metric == "affine"
        self.injectivity_radius = math.inf
        self.normalisation_chart = ("gaussian", 1.5)

    def extra_repr(self) -> str:
        return f"n={self.n}, metric={self.metric!r}"

    def base_origin(self, dtype=None, device=None) -> torch.Tensor:
        """Centre of the base distribution: the identity matrix."""
        return torch.eye(self.n, dtype=self._default_dtype(dtype), device=device)

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _bl_all(*xs):
        nb = max(x.dim() for x in xs) - 2
        return [_bl(x, nb) for x in xs]

    @staticmethod
    def _keep(v: torch.Tensor, keepdim: bool) -> torch.Tensor:
        return v[..., None, None] if keepdim else v

    # ----------------------------------------------------------------- checks
    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5):
        if x.numel() == 0:
            return True, None
        tol = atol + rtol * float(x.abs().max())
        asym = float((x - x.transpose(-1, -2)).abs().max())
        lam_min = float(torch.linalg.eigvalsh(0.5 * (x + x.transpose(-1, -2))).min())
        if asym > tol or not lam_min > 0:
            n = self.n
            return False, (
                f"expected symmetric positive definite matrices of shape (..., {n}, {n}), but max |x - x^T| = "
                f"{asym:.3g} (tolerance {tol:.3g}) and the smallest eigenvalue of (x + x^T)/2 is {lam_min:.3g} "
                f"(must be > 0); use projx to project"
            )
        return True, None

    def _check_vector_on_tangent(self, x, u, *, atol=1e-5, rtol=1e-5):
        if u.numel() == 0:
            return True, None
        scale = float(u.abs().max())
        asym = float((u - u.transpose(-1, -2)).abs().max())
        if asym > atol + rtol * scale:
            return False, (
                f"tangent vectors are symmetric matrices (..., {self.n}, {self.n}), but max |u - u^T| = "
                f"{asym:.3g} > tolerance {atol + rtol * scale:.3g}; use proju to project"
            )
        return True, None

    # --------------------------------------------------------------- geometry
    def projx(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest SPD matrix: symmetrise, then clamp eigenvalues at 4 n eps |x|_F (the floor is not differentiated)."""
        xb = _sym(_bl(x, x.dim() - 2))
        scale = torch.sqrt(_frob2(xb)).detach().clamp_min(_floor(x.dtype))
        c = 4.0 * self.n * torch.finfo(x.dtype).eps
        y, _, _ = _SymMatrixFunction.apply(xb / scale, "clamp", c)
        return _unbl(y * scale)

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Tangent vectors are symmetric matrices: (u + u^T) / 2."""
        u = u.expand(torch.broadcast_shapes(x.shape, u.shape))
        return 0.5 * (u + u.transpose(-1, -2))

    def egrad2rgrad(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Riemannian gradient: P sym(G) P (affine); Dexp_{logm P}^2 sym(G) (log-Euclidean)."""
        xb, gb = self._bl_all(x, u)
        xb, gb = _sym(xb), _sym(gb)
        if self._affine:
            return _unbl(_mm(_mm(xb, gb), xb))
        lx, w, v = _funm(xb, "log")
        mu = _f("log", w, _floor(x.dtype))
        once = _SymFrechet.apply(lx, gb, mu, v, "exp", 0.0)
        return _unbl(_SymFrechet.apply(lx, once, mu, v, "exp", 0.0))

    @staticmethod
    def _whiten(pb: torch.Tensor, *, points=(), vectors=()):
        """Cholesky P = L L^T and whitened matrices: I + L^-1 (Y - P) L^-T for points Y, L^-1 U L^-T for vectors U.

        For a point Y near P, W - I is of the order of d(P, Y).  Written as I + L^-1 (Y - P) L^-T
        (equal to L^-1 Y L^-T since L L^T = P) it is exactly I at Y == P, so d(P, P) = 0 and
        log_P(P) = 0 at any condition number; the direct form leaves an error eps cond(P)
        there (0.2 at condition 1e6 in float32).  Returns L and the whitened matrices, points first.
        """
        low = _cholesky(pb)
        m = _tri_inv(low)
        eye = torch.eye(pb.shape[0], dtype=pb.dtype, device=pb.device).reshape(pb.shape[:2] + (1,) * (pb.dim() - 2))
        out = [_congr(m, y - pb) + eye for y in points]
        out += [_congr(m, u) for u in vectors]
        return low, out

    def inner(self, x, u, v=None, *, keepdim=False):
        """tr(P^-1 U P^-1 V) (affine) or tr(Dlog_P(U) Dlog_P(V)) (log-Euclidean), shape (*batch,)."""
        xs = (x, u) if v is None else (x, u, v)
        return self._keep(_map_batch(self._inner_bl, *self._bl_all(*xs)), keepdim)

    def _inner_bl(self, xb, ub, vb=None):
        xb = _sym(xb)
        if self._affine:
            _, ws = self._whiten(xb, vectors=(ub,) if vb is None else (ub, vb))
            return _trace_prod(ws[0], ws[-1])
        w, vec = _eigh(xb.detach())
        floor = _floor(xb.dtype)
        du = _SymFrechet.apply(xb, ub, w, vec, "log", floor)
        dv = du if vb is None else _SymFrechet.apply(xb, vb, w, vec, "log", floor)
        return _trace_prod(du, dv)

    def component_inner(self, x, u, v=None):
        return self.inner(x, u, v, keepdim=True)

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return _unbl(_map_batch(self._expmap_bl, *self._bl_all(x, u)))

    def _expmap_bl(self, xb, ub):
        xb, ub = _sym(xb), _sym(ub)
        if self._affine:
            low, (w,) = self._whiten(xb, vectors=(ub,))
            e, _, _ = _funm(w, "exp")
            return _congr(low, e)
        lx, w, v = _funm(xb, "log")
        z = lx + _SymFrechet.apply(xb, ub, w, v, "log", _floor(xb.dtype))
        return _funm(z, "exp")[0]

    def logmap(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _unbl(_map_batch(self._logmap_bl, *self._bl_all(x, y)))

    def _logmap_bl(self, xb, yb):
        xb, yb = _sym(xb), _sym(yb)
        if self._affine:
            low, (w,) = self._whiten(xb, points=(yb,))
            s, _, _ = _funm(w, "log")
            return _congr(low, s)
        lx, w, v = _funm(xb, "log")
        ly, _, _ = _funm(yb, "log")
        mu = _f("log", w, _floor(xb.dtype))
        return _SymFrechet.apply(lx, ly - lx, mu, v, "exp", 0.0)

    def dist(self, x: torch.Tensor, y: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
        return self._keep(sqrt_safe(_map_batch(self._dist2_bl, *self._bl_all(x, y))), keepdim)

    def _dist2_bl(self, xb, yb):
        xb, yb = _sym(xb), _sym(yb)
        if self._affine:
            _, (w,) = self._whiten(xb, points=(yb,))
            s, _, _ = _funm(w, "log")
        else:
            s = _funm(xb, "log")[0] - _funm(yb, "log")[0]
        return _frob2(s)

    def geodesic(self, x0: torch.Tensor, x1: torch.Tensor, t) -> torch.Tensor:
        """Closed form: L expm(t logm(L^-1 P_1 L^-T)) L^T, or expm((1-t) logm P_0 + t logm P_1)."""
        t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
        nb = max(x0.dim() - 2, x1.dim() - 2, t.dim())
        tb = t.reshape((1, 1) + (1,) * (nb - t.dim()) + tuple(t.shape))
        return _unbl(_map_batch(self._geodesic_bl, _bl(x0, nb), _bl(x1, nb), tb))

    def _geodesic_bl(self, xb, yb, tb):
        xb, yb = _sym(xb), _sym(yb)
        if self._affine:
            # From the nearer end: gamma(t) = L_0 expm(t logm W_0) L_0^T for t <= 1/2 and
            # L_1 expm((1 - t) logm W_1) L_1^T beyond (W_i: the other point whitened by L_i).
            # Near t = 1 the first form rebuilds Y from x0's frame, whose rounding (eps cond) can
            # exceed Y's smallest eigenvalue in float32 (Y with eigenvalues 1e-6 came back
            # indefinite at t = 1 and the RCFM loss's gradients overflowed); the second is a
            # congruence of Y's own factor with a matrix near I, positive definite by construction.
            far = tb > 0.5  # per batch element: swap the ends (one batched evaluation, no split)
            return self._geodesic_from(torch.where(far, yb, xb), torch.where(far, xb, yb), torch.where(far, 1 - tb, tb))
        lx, ly = _funm(xb, "log")[0], _funm(yb, "log")[0]
        return _funm(lx + tb * (ly - lx), "exp")[0]

    def _geodesic_from(self, xb, yb, tb):
        """L expm(t logm(I + L^-1 (Y - X) L^-T)) L^T, X = L L^T (affine-invariant geodesic, batch-last)."""
        low, (w,) = self._whiten(xb, points=(yb,))
        s, _, _ = _funm(w, "log")
        e, _, _ = _funm(tb * s, "exp")
        return _congr(low, e)

    # ----------------------------------------------------------- distribution
    def _random_base(self, size, *, generator, dtype, device):
        g = torch.randn(*size, self.n, self.n, generator=generator, dtype=dtype, device=device)
        return sym_expm(g)  # sym_expm symmetrises: N(0, 1) diagonal, N(0, 1/2) off-diagonal

    def base_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        xb = _sym(_bl(x, x.dim() - 2))
        w, _ = _SymEigvals.apply(xb)
        lam = torch.log(torch.clamp(w, min=_floor(x.dtype)))  # eigenvalues of S = logm P
        out = -0.5 * self.dim * math.log(2 * math.pi) - 0.5 * (lam * lam).sum(0)
        if self._affine:
            delta = lam.unsqueeze(1) - lam.unsqueeze(0)
            out = out - 0.5 * log_sinhc(0.5 * delta).sum((0, 1))
        return out

    def log_volume_density(self, x: torch.Tensor) -> torch.Tensor:
        """log of the Riemannian volume's density w.r.t. the Frobenius (Lebesgue) volume of Sym(n).

        Affine-invariant: G = P^-1 (x) P^-1 on Sym(n), sqrt(det G) = det(P)^(-(n+1)/2).
        Log-Euclidean: G = Dlog_P^T Dlog_P, whose eigenvalues on Sym(n) are the divided
        differences Gamma_ij = (log l_i - log l_j) / (l_i - l_j) (i <= j, Gamma_ii = 1 / l_i),
        so log sqrt(det G) = sum_{i <= j} log Gamma_ij.  Solvers use its gradient for the
        Riemannian divergence.  Shape ``(*batch,)``.
        """
        xb = _sym(_bl(x, x.dim() - 2))
        w, _ = _SymEigvals.apply(xb)  # eigenvalues along dim 0: (n, *batch)
        w = torch.clamp(w, min=_floor(x.dtype))
        logw = torch.log(w)
        if self._affine:
            return -0.5 * (self.n + 1) * logw.sum(0)
        lo = torch.minimum(w.unsqueeze(1), w.unsqueeze(0))
        hi = torch.maximum(w.unsqueeze(1), w.unsqueeze(0))
        r = (hi - lo) / lo
        small = r < 1e-4
        r_safe = torch.where(small, torch.ones_like(r), r)
        phi = torch.where(small, r * (-0.5 + r * (5.0 / 24.0 - r / 8.0)), torch.log(torch.log1p(r_safe) / r_safe))
        pair = phi - torch.log(lo)  # log Gamma_ij, symmetric, Gamma_ii = 1 / l_i
        return 0.5 * (pair.sum((0, 1)) + torch.diagonal(pair, dim1=0, dim2=1).sum(-1))
