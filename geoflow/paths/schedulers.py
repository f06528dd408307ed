"""Schedulers: the coefficients (alpha_t, sigma_t) of a conditional path and their time derivatives.

Convention (Lipman et al. 2023): t = 0 is noise, t = 1 is data, x_t = alpha_t x_1 + sigma_t x_0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "SchedulerOutput",
    "Scheduler",
    "CondOTScheduler",
    "CosineScheduler",
    "PolynomialScheduler",
    "VPScheduler",
    "VEScheduler",
]


@dataclass
class SchedulerOutput:
    """alpha_t, sigma_t and their derivatives d/dt, each shaped like ``t``."""

    alpha_t: torch.Tensor
    sigma_t: torch.Tensor
    d_alpha_t: torch.Tensor
    d_sigma_t: torch.Tensor


def _check_float(name, value, *, positive=False, nonneg=False, below_one=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a float, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"`{name}` must be > 0, got {value}")
    if nonneg and value < 0:
        raise ValueError(f"`{name}` must be >= 0, got {value}")
    if below_one and value >= 1:
        raise ValueError(f"`{name}` must be < 1, got {value}")
    return value


class Scheduler:
    """Base class: call with ``t`` (tensor) to get a :class:`SchedulerOutput`."""

    def __call__(self, t: torch.Tensor) -> SchedulerOutput:
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t, dtype=torch.get_default_dtype())
        return self._coeffs(t)

    def _coeffs(self, t: torch.Tensor) -> SchedulerOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def kappa(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Interpolation fraction kappa_t = alpha_t and its derivative, used by geodesic paths."""
        out = self(t)
        return out.alpha_t, out.d_alpha_t

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class CondOTScheduler(Scheduler):
    """Conditional optimal-transport path: alpha_t = t, sigma_t = 1 - (1 - sigma_min) t.

    Lipman et al. 2023, "Flow Matching for Generative Modeling", eq. (20).  With
    ``sigma_min = 0`` this is the rectified-flow / linear interpolation path.
    """

    def __init__(self, sigma_min: float = 0.0):
        self.sigma_min = _check_float("sigma_min", sigma_min, nonneg=True, below_one=True)

    def _coeffs(self, t):
        one = torch.ones_like(t)
        return SchedulerOutput(t, 1 - (1 - self.sigma_min) * t, one, -(1 - self.sigma_min) * one)


class CosineScheduler(Scheduler):
    """alpha_t = sin(pi t / 2), sigma_t = cos(pi t / 2) (Nichol & Dhariwal 2021, in flow-matching time)."""

    def _coeffs(self, t):
        a = 0.5 * math.pi * t
        return SchedulerOutput(torch.sin(a), torch.cos(a), 0.5 * math.pi * torch.cos(a), -0.5 * math.pi * torch.sin(a))


class PolynomialScheduler(Scheduler):
    """alpha_t = t^n, sigma_t = 1 - t^n (n > 0)."""

    def __init__(self, n: float = 2.0):
        self.n = _check_float("n", n, positive=True)

    def _coeffs(self, t):
        n = self.n
        tn = t**n
        # d/dt t^n = n t^(n-1), written so that it is finite at t = 0 for n < 1 too (clamped).
        dt = n * t.clamp_min(torch.finfo(t.dtype).tiny) ** (n - 1) if n < 1 else n * t ** (n - 1)
        return SchedulerOutput(tn, 1 - tn, dt, -dt)


class VPScheduler(Scheduler):
    """Variance-preserving (DDPM / score-SDE) path in flow-matching time.

    With T(s) = 1/2 s^2 (beta_max - beta_min) + s beta_min and s = 1 - t:
    alpha_t = exp(-T/2), sigma_t = sqrt(1 - exp(-T))  (Song et al. 2021; Lipman et al. 2023, eq. 19).

    sigma_t vanishes like sqrt(1 - t) at t = 1, so d sigma_t / dt is unbounded there; the
    coefficients are evaluated at min(t, 1 - 1e-5) to stay finite.
    """

    T_MAX = 1.0 - 1e-5

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = _check_float("beta_min", beta_min, positive=True)
        self.beta_max = _check_float("beta_max", beta_max, positive=True)
        if self.beta_max < self.beta_min:
            raise ValueError(f"`beta_max` ({beta_max}) must be >= `beta_min` ({beta_min})")

    def _coeffs(self, t):
        s = 1 - t.clamp(max=self.T_MAX)
        b, B = self.beta_min, self.beta_max
        T = 0.5 * s * s * (B - b) + s * b
        dT = -(s * (B - b) + b)  # dT/dt = -dT/ds
        alpha = torch.exp(-0.5 * T)
        one_m = -torch.expm1(-T)  # 1 - exp(-T), accurate for small T
        sigma = torch.sqrt(one_m)
        return SchedulerOutput(alpha, sigma, -0.5 * dT * alpha, 0.5 * dT * torch.exp(-T) / sigma)

    def kappa(self, t):
        raise ValueError("VPScheduler has alpha_0 > 0; geodesic paths need a scheduler with alpha_0 = 0 and alpha_1 = 1")


class VEScheduler(Scheduler):
    """Variance-exploding path: alpha_t = 1, sigma_t = sigma_min (sigma_max / sigma_min)^(1 - t).

    Song et al. 2021 (SMLD), in flow-matching time (Lipman et al. 2023, eq. 18).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.sigma_min = _check_float("sigma_min", sigma_min, positive=True)
        self.sigma_max = _check_float("sigma_max", sigma_max, positive=True)
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"`sigma_max` ({sigma_max}) must be > `sigma_min` ({sigma_min})")

    def _coeffs(self, t):
        r = math.log(self.sigma_max / self.sigma_min)
        sigma = self.sigma_min * torch.exp(r * (1 - t))
        return SchedulerOutput(torch.ones_like(t), sigma, torch.zeros_like(t), -r * sigma)

    def kappa(self, t):
        raise ValueError("VEScheduler has alpha_t = 1; geodesic paths need a scheduler with alpha_0 = 0 and alpha_1 = 1")
