"""Affine (Gaussian) conditional paths x_t = alpha_t x_1 + sigma_t x_0."""

from __future__ import annotations

import torch

from ._validate import check_pair
from .path_sample import PathSample
from .schedulers import CondOTScheduler, Scheduler

__all__ = ["AffinePath"]


class AffinePath:
    """Affine conditional path (Lipman et al. 2023; Albergo & Vanden-Eijnden 2023).

    .. math::
        x_t = \\alpha_t x_1 + \\sigma_t x_0, \\qquad
        \\dot x_t = \\dot\\alpha_t x_1 + \\dot\\sigma_t x_0

    With x_0 ~ N(0, I) the marginal velocity, the x_1-prediction E[x_1 | x_t], the
    epsilon-prediction E[x_0 | x_t] and the score grad log p_t(x_t) are affine functions of each
    other; the ``*_to_*`` methods convert between them (needed by guidance).  With
    D = alpha_t dsigma_t - sigma_t dalpha_t:

    .. math::
        x_1 = (\\dot\\sigma_t x_t - \\sigma_t u)/D, \\quad
        x_0 = (\\alpha_t u - \\dot\\alpha_t x_t)/D, \\quad
        \\nabla \\log p_t = -x_0 / \\sigma_t

    Conversions that divide by alpha_t (from epsilon at t = 0) or sigma_t (to/from the score
    at t = 1) are undefined at those endpoints.

    Args:
        scheduler: a :class:`~geoflow.paths.Scheduler` (default :class:`CondOTScheduler`).
        validate: check in :meth:`sample` that x0 and x1 hold no NaN or inf (default);
            ``validate=False`` skips that pass in hot loops.  Shapes, dtypes, devices and
            t in [0, 1] are always checked.

    Shapes: x0, x1 ``(batch, *dims)``; t ``(batch,)``.
    """

    def __init__(self, scheduler: Scheduler | None = None, *, validate: bool = True):
        scheduler = CondOTScheduler() if scheduler is None else scheduler
        if not isinstance(scheduler, Scheduler):
            raise TypeError(f"`scheduler` must be a geoflow.paths.Scheduler, got {type(scheduler).__name__}")
        if not isinstance(validate, bool):
            raise TypeError(f"`validate` must be a bool, got {validate!r}")
        self.scheduler = scheduler
        self.validate = validate

    def __repr__(self) -> str:
        return f"AffinePath({self.scheduler!r})"

    def _coeffs(self, t: torch.Tensor, like: torch.Tensor):
        out = self.scheduler(t)
        shape = t.shape + (1,) * (like.dim() - t.dim())
        return tuple(c.reshape(shape) for c in (out.alpha_t, out.sigma_t, out.d_alpha_t, out.d_sigma_t))

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
        """Draw x_t and its conditional velocity at times ``t`` for the pairs (x0, x1)."""
        t = check_pair(x0, x1, t, ndim=None, finite=self.validate)
        a, s, da, ds = self._coeffs(t, x1)
        return PathSample(x_t=a * x1 + s * x0, dx_t=da * x1 + ds * x0, t=t, x0=x0, x1=x1)

    # ------------------------------------------------------------ conversions
    def velocity_to_target(self, velocity, x_t, t):
        a, s, da, ds = self._coeffs(t, x_t)
        return (ds * x_t - s * velocity) / (a * ds - s * da)

    def velocity_to_epsilon(self, velocity, x_t, t):
        a, s, da, ds = self._coeffs(t, x_t)
        return (a * velocity - da * x_t) / (a * ds - s * da)

    def target_to_velocity(self, x1_pred, x_t, t):
        a, s, da, ds = self._coeffs(t, x_t)
        return da * x1_pred + ds * (x_t - a * x1_pred) / s

    def epsilon_to_velocity(self, eps_pred, x_t, t):
        a, s, da, ds = self._coeffs(t, x_t)
        return da * (x_t - s * eps_pred) / a + ds * eps_pred

    def target_to_epsilon(self, x1_pred, x_t, t):
        a, s, _, _ = self._coeffs(t, x_t)
        return (x_t - a * x1_pred) / s

    def epsilon_to_target(self, eps_pred, x_t, t):
        a, s, _, _ = self._coeffs(t, x_t)
        return (x_t - s * eps_pred) / a

    def velocity_to_score(self, velocity, x_t, t):
        _, s, _, _ = self._coeffs(t, x_t)
        return -self.velocity_to_epsilon(velocity, x_t, t) / s

    def score_to_velocity(self, score, x_t, t):
        _, s, _, _ = self._coeffs(t, x_t)
        return self.epsilon_to_velocity(-s * score, x_t, t)
