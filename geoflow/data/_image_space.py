"""Flat space of images: R^(C x H x W) with a standard normal base distribution (private).

``manifolds.Euclidean(n)`` stores points as vectors of shape ``(n,)``; image datasets keep
their ``(C, H, W)`` layout so that convolutional velocity networks see images.  This subclass
only changes the point shape: every reduction (inner product, norm, distance, base
log-density) runs over all point dimensions instead of the last one.  It is an
``isinstance`` of :class:`manifolds.Euclidean`, so the solvers take their flat-space path.

(Should ``manifolds.Euclidean`` grow a ``shape=`` option, this class becomes that; its
``repr`` ``Euclidean(shape=(1, 8, 8))`` is what checkpoints record.)
"""

from __future__ import annotations

import math

import geoopt
import torch

from manifolds._math import sqrt_safe
from manifolds.euclidean import Euclidean

__all__: list[str] = []  # private module


class ImageSpace(Euclidean):
    """R^(C x H x W) with points of shape ``shape`` and base N(0, I).

    Geometry: exp_x(u) = x + u, log_x(y) = y - x, d(x, y) = |y - x| (Frobenius over all point
    dimensions); base log p(x) = -D/2 log(2 pi) - |x|^2 / 2 with D = C H W.

    Args:
        shape: the point shape, e.g. ``(1, 8, 8)``.
    """

    def __init__(self, shape: tuple[int, ...]):
        if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) == 0:
            raise TypeError(f"`shape` must be a non-empty tuple of ints, got {shape!r}")
        shape = tuple(self._check_int("shape", s) for s in shape)
        n = math.prod(shape)
        geoopt.Euclidean.__init__(self, ndim=len(shape))
        self._set_shape(shape, n)
        self.n = n
        self.std = 1.0
        self.injectivity_radius = math.inf
        self.normalisation_chart = ("gaussian", 1.5)

    def extra_repr(self) -> str:
        return f"shape={self.point_shape}"

    def __repr__(self) -> str:
        return f"Euclidean({self.extra_repr()})"

    def base_origin(self, dtype=None, device=None):
        return torch.zeros(self.point_shape, dtype=dtype, device=device)

    def _dims(self) -> tuple[int, ...]:
        return tuple(range(-self.ndim, 0))

    def inner(self, x, u, v=None, *, keepdim=False):
        out = (u * (u if v is None else v)).sum(self._dims(), keepdim=keepdim)
        k = self.ndim
        target = torch.broadcast_shapes(x.shape[: x.dim() - k], out.shape[: out.dim() - (k if keepdim else 0)])
        return out.expand(target + ((1,) * k if keepdim else ()))

    def norm(self, x, u, *, keepdim=False):
        return sqrt_safe(self.inner(x, u, keepdim=keepdim))

    def dist2(self, x, y, *, keepdim=False):
        d = y - x
        return (d * d).sum(self._dims(), keepdim=keepdim)

    def dist(self, x, y, *, keepdim=False):
        return sqrt_safe(self.dist2(x, y, keepdim=keepdim))

    def _random_base(self, size, *, generator, dtype, device):
        return torch.randn(*size, *self.point_shape, generator=generator, dtype=dtype, device=device)

    def base_log_prob(self, x):
        return -0.5 * (x * x).sum(self._dims()) - self.n * 0.5 * math.log(2 * math.pi)
