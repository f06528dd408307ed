"""Numerically safe elementary functions shared by the manifolds.

Every function here is finite, with finite gradients, at the points where the
naive formula divides by zero (``|u| = 0``, ``theta = 0``).  The pattern is the
"double where": the unsafe branch is evaluated on a sanitised input, so that
its gradient is finite, and a Taylor series is selected where the argument is
small.  Series are truncated where the first neglected term is below float64
round-off at the switch point (|x| < 1e-2 gives x^6 / 5040 < 3e-16).

Performance (CPU, 10^6 points): every elementwise kernel allocates and touches a full
batch, so the helpers keep the kernel count low: ``torch.where`` takes Python scalars
(no ``ones_like``/``zeros_like`` buffers, and the scalar form is about twice as fast),
series are evaluated by Horner's rule, and sums over a short last dimension go through a
matrix product with a ones vector (:func:`dot`), about 1.6x faster than ``(x * y).sum(-1)``
(torch's reduction over a contiguous dimension of size 3 is slow).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "any_true",
    "EPS",
    "TINY",
    "sqrt_safe",
    "dot",
    "norm_safe",
    "sinc",
    "cosc",
    "sinhc",
    "x_over_sin",
    "log_sinhc",
    "atan2_over",
    "wrap_angle",
]

#: Tolerances for checks and clamps, per dtype (geoopt keeps the same kind of table).
EPS = {torch.float16: 1e-3, torch.bfloat16: 1e-2, torch.float32: 1e-5, torch.float64: 1e-10}
#: Smallest positive numbers safe to divide by, per dtype.
TINY = {torch.float16: 1e-4, torch.bfloat16: 1e-4, torch.float32: 1e-30, torch.float64: 1e-300}

_SERIES = 1e-2  # |x| below this uses the Taylor series
TWO_PI = 2.0 * math.pi


def sqrt_safe(s: torch.Tensor) -> torch.Tensor:
    """sqrt(s) for s >= 0 with gradient 0 (not inf/NaN) at s == 0; negatives clamp to 0.

    Second derivatives are finite too (the sqrt branch is evaluated at 1 where s <= 0).
    """
    pos = s > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, s, 1.0)), 0.0)


def dot(x: torch.Tensor, y: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
    """<x, y> over the last dimension (broadcasting), as ``(x * y) @ ones``.

    Same value as ``(x * y).sum(-1)`` up to summation order, about 1.6x faster on CPU for
    short last dimensions.  Shapes: (..., n), (..., n) -> (...) or (..., 1) with ``keepdim``.
    """
    p = x * y
    out = p @ torch.ones(p.shape[-1], 1, dtype=p.dtype, device=p.device)
    return out if keepdim else out.squeeze(-1)


def norm_safe(u: torch.Tensor, dim: int | tuple[int, ...] = -1, keepdim: bool = False) -> torch.Tensor:
    """Euclidean norm over ``dim`` whose gradient at u == 0 is 0 instead of NaN."""
    if dim == -1 or (isinstance(dim, int) and u.dim() > 0 and dim == u.dim() - 1):
        s = dot(u, u, keepdim=keepdim)
    else:
        s = (u * u).sum(dim=dim, keepdim=keepdim)
    return sqrt_safe(s)


def _series_or(x: torch.Tensor, exact, series) -> torch.Tensor:
    small = x.abs() < _SERIES
    x_safe = torch.where(small, 1.0, x)
    return torch.where(small, series(x), exact(x_safe))


def _even_series(c0: float, c2: float, c4: float):
    """z -> c0 + c2 z^2 + c4 z^4 by Horner's rule in z^2."""
    return lambda z: (z * z).mul(c4).add_(c2).mul_(z * z).add_(c0)


def sinc(x: torch.Tensor) -> torch.Tensor:
    """sin(x) / x, equal to 1 at 0, smooth to all orders."""
    return _series_or(x, lambda z: torch.sin(z) / z, _even_series(1.0, -1.0 / 6, 1.0 / 120))


def cosc(x: torch.Tensor) -> torch.Tensor:
    """(1 - cos(x)) / x^2, equal to 1/2 at 0."""
    return _series_or(
        x,
        lambda z: 2 * torch.sin(0.5 * z) ** 2 / (z * z),
        _even_series(0.5, -1.0 / 24, 1.0 / 720),
    )


def sinhc(x: torch.Tensor) -> torch.Tensor:
    """sinh(x) / x, equal to 1 at 0."""
    return _series_or(x, lambda z: torch.sinh(z) / z, _even_series(1.0, 1.0 / 6, 1.0 / 120))


def log_sinhc(x: torch.Tensor) -> torch.Tensor:
    """log(sinh(x) / x) for real x, stable for large |x| (no overflow) and near 0."""
    a = x.abs()

    def exact(z):
        z = z.abs()
        # log(sinh z) = z + log1p(-exp(-2z)) - log 2
        return z + torch.log1p(-torch.exp(-2 * z)) - math.log(2.0) - torch.log(z)

    return _series_or(a, exact, _even_series(0.0, 1.0 / 6, -1.0 / 180))


def x_over_sin(x: torch.Tensor) -> torch.Tensor:
    """x / sin(x) for |x| < pi, equal to 1 at 0."""
    return _series_or(x, lambda z: z / torch.sin(z), _even_series(1.0, 1.0 / 6, 7.0 / 360))


def atan2_over(s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """atan2(s, c) / s for s >= 0: the factor that turns a sine-scaled vector into an angle-scaled one.

    Equal to 1 / c in the limit s -> 0 with c > 0.  Where s == 0 and c <= 0 (antipodal
    points) the ratio is unbounded; callers must handle that case themselves, here it is
    replaced by ``pi / TINY`` free of NaN and the caller's fallback is expected to apply.
    """
    tiny = TINY.get(s.dtype, 1e-30)
    ok = s > tiny
    s_safe = torch.where(ok, s, 1.0)
    exact = torch.atan2(s_safe, c) / s_safe
    # Series of atan(s/c)/s for c > 0: (1/c)(1 - (s/c)^2/3), valid when s << c.
    series = 1.0 / torch.where(c > 0, c, 1.0)
    return torch.where(ok, exact, series)


def wrap_angle(x: torch.Tensor) -> torch.Tensor:
    """Wrap angles to [-pi, pi).

    ``torch.remainder`` can return exactly 2*pi for inputs a hair below a multiple of
    2*pi after rounding; that case is mapped back into the half-open interval.
    The in-place subtractions act on the fresh output of ``remainder`` (their gradient is
    the identity and nothing is saved), which saves two full-size allocations.
    """
    y = torch.remainder(x + math.pi, TWO_PI)
    return y.sub_((y >= TWO_PI).to(y.dtype), alpha=TWO_PI).sub_(math.pi)


def any_true(mask: torch.Tensor) -> bool:
    """``mask.any()`` as a Python bool; True under ``torch.func`` transforms such as vmap.

    Lets a manifold patch the rare badly conditioned rows only when there are some, while staying
    correct (all rows take the patched branch) where data-dependent branching is impossible.
    """
    try:
        return bool(mask.any())
    except RuntimeError:
        return True
