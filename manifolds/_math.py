"""Numerically safe elementary functions shared by the manifolds.

Every function here is finite, with finite gradients, at the points where the
naive formula divides by zero (``|u| = 0``, ``theta = 0``).  The pattern is the
"double where": the unsafe branch is evaluated on a sanitised input, so that
its gradient is finite, and a Taylor series is selected where the argument is
small.  Series are truncated where the first neglected term is below float64
round-off at the switch point (|x| < 1e-2 gives x^6 / 5040 < 3e-16).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "EPS",
    "TINY",
    "sqrt_safe",
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
    """sqrt(s) for s >= 0 with gradient 0 (not inf/NaN) at s == 0; negatives clamp to 0."""
    pos = s > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, s, torch.ones_like(s))), torch.zeros_like(s))


def norm_safe(u: torch.Tensor, dim: int | tuple[int, ...] = -1, keepdim: bool = False) -> torch.Tensor:
    """Euclidean norm over ``dim`` whose gradient at u == 0 is 0 instead of NaN."""
    return sqrt_safe((u * u).sum(dim=dim, keepdim=keepdim))


def _series_or(x: torch.Tensor, exact, series) -> torch.Tensor:
    small = x.abs() < _SERIES
    x_safe = torch.where(small, torch.ones_like(x), x)
    return torch.where(small, series(x), exact(x_safe))


def sinc(x: torch.Tensor) -> torch.Tensor:
    """sin(x) / x, equal to 1 at 0, smooth to all orders."""
    return _series_or(x, lambda z: torch.sin(z) / z, lambda z: 1 - z * z / 6 + z**4 / 120)


def cosc(x: torch.Tensor) -> torch.Tensor:
    """(1 - cos(x)) / x^2, equal to 1/2 at 0."""
    return _series_or(
        x,
        lambda z: 2 * torch.sin(0.5 * z) ** 2 / (z * z),
        lambda z: 0.5 - z * z / 24 + z**4 / 720,
    )


def sinhc(x: torch.Tensor) -> torch.Tensor:
    """sinh(x) / x, equal to 1 at 0."""
    return _series_or(x, lambda z: torch.sinh(z) / z, lambda z: 1 + z * z / 6 + z**4 / 120)


def log_sinhc(x: torch.Tensor) -> torch.Tensor:
    """log(sinh(x) / x) for real x, stable for large |x| (no overflow) and near 0."""
    a = x.abs()

    def exact(z):
        z = z.abs()
        # log(sinh z) = z + log1p(-exp(-2z)) - log 2
        return z + torch.log1p(-torch.exp(-2 * z)) - math.log(2.0) - torch.log(z)

    return _series_or(a, exact, lambda z: z * z / 6 - z**4 / 180)


def x_over_sin(x: torch.Tensor) -> torch.Tensor:
    """x / sin(x) for |x| < pi, equal to 1 at 0."""
    return _series_or(x, lambda z: z / torch.sin(z), lambda z: 1 + z * z / 6 + 7 * z**4 / 360)


def atan2_over(s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """atan2(s, c) / s for s >= 0: the factor that turns a sine-scaled vector into an angle-scaled one.

    Equal to 1 / c in the limit s -> 0 with c > 0.  Where s == 0 and c <= 0 (antipodal
    points) the ratio is unbounded; callers must handle that case themselves, here it is
    replaced by ``pi / TINY`` free of NaN and the caller's fallback is expected to apply.
    """
    tiny = TINY.get(s.dtype, 1e-30)
    ok = s > tiny
    s_safe = torch.where(ok, s, torch.ones_like(s))
    exact = torch.atan2(s_safe, c) / s_safe
    # Series of atan(s/c)/s for c > 0: (1/c)(1 - (s/c)^2/3), valid when s << c.
    c_safe = torch.where(c > 0, c, torch.ones_like(c))
    series = 1.0 / c_safe
    return torch.where(ok, exact, series)


def wrap_angle(x: torch.Tensor) -> torch.Tensor:
    """Wrap angles to [-pi, pi).

    ``torch.remainder`` can return exactly 2*pi for inputs a hair below a multiple of
    2*pi after rounding; that case is mapped back into the half-open interval.
    """
    y = torch.remainder(x + math.pi, TWO_PI)
    y = torch.where(y >= TWO_PI, y - TWO_PI, y)
    return y - math.pi
