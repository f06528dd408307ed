"""The sample a path returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PathSample"]


@dataclass
class PathSample:
    """A draw from a conditional path.

    Attributes:
        x_t: points at time t, shape ``(batch, *point_shape)``.
        dx_t: conditional velocity d x_t / dt (tangent at x_t), same shape.
        t: times, shape ``(batch,)``.
        x0: source (noise) points.
        x1: target (data) points.
    """

    x_t: torch.Tensor
    dx_t: torch.Tensor
    t: torch.Tensor
    x0: torch.Tensor
    x1: torch.Tensor
