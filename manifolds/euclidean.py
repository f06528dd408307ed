"""Euclidean space R^n with a standard Gaussian base distribution."""

from __future__ import annotations

import math

import geoopt
import torch

from ._math import norm_safe, sqrt_safe
from .base import Manifold

__all__ = ["Euclidean"]


class Euclidean(Manifold, geoopt.Euclidean):
    """Flat space R^n, with points stored as vectors ``(n,)`` or as arrays of any ``shape``.

    Geometry: exp_x(u) = x + u, log_x(y) = y - x, d(x, y) = |y - x| (the Frobenius norm over
    all point dimensions when ``shape`` is given).
    Base distribution: N(0, std^2 I), log p(x) = -D/2 log(2 pi std^2) - |x|^2 / (2 std^2),
    D = n or prod(shape).

    Args:
        n: dimension (>= 1), for vector points.
        shape: the point shape instead of ``n``, e.g. ``(1, 8, 8)`` for 8x8 grey images, so that
            convolutional networks see images; every reduction (inner product, norm, distance,
            base log-density) runs over all point dimensions.
        std: standard deviation of the Gaussian base distribution (default 1).

    Shapes: points and tangent vectors ``(*batch, n)`` or ``(*batch, *shape)``.
    """

    def __init__(self, n: int | None = None, *, shape=None, std: float = 1.0):
        if (n is None) == (shape is None):
            raise TypeError(f"Euclidean takes exactly one of `n` and `shape`, got n={n!r}, shape={shape!r}")
        if shape is not None:
            if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) == 0:
                raise TypeError(f"`shape` must be a non-empty tuple of ints, got {shape!r}")
            shape = tuple(self._check_int("shape", s) for s in shape)
            n = math.prod(shape)
        else:
            n = self._check_int("n", n)
            shape = (n,)
        std = self._check_positive("std", std)
        geoopt.Euclidean.__init__(self, ndim=len(shape))
        self._set_shape(shape, n)
        self._vector = len(shape) == 1
        self._dims = tuple(range(-len(shape), 0))
        self.n = n
        self.std = std
        self.injectivity_radius = math.inf
        self.normalisation_chart = ("gaussian", 1.5 * std)

    def base_origin(self, dtype=None, device=None):
        """Centre of the base distribution."""
        return torch.zeros(self.point_shape, dtype=dtype, device=device)

    def extra_repr(self) -> str:
        size = f"n={self.n}" if self._vector else f"shape={self.point_shape}"
        return size + (f", std={self.std}" if self.std != 1.0 else "")

    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5):
        return True, None

    def _check_vector_on_tangent(self, x, u, *, atol=1e-5, rtol=1e-5):
        return True, None

    def projx(self, x):
        return x

    def proju(self, x, u):
        return u

    def egrad2rgrad(self, x, u):
        return u

    def expmap(self, x, u):
        return x + u

    def logmap(self, x, y):
        return y - x

    def geodesic(self, x0, x1, t):
        return torch.lerp(x0, x1, self._expand_t(t, x0))

    def geodesic_and_velocity(self, x0, x1, t):
        xt = torch.lerp(x0, x1, self._expand_t(t, x0))
        return xt, (x1 - x0).expand_as(xt)

    def inner(self, x, u, v=None, *, keepdim=False):
        if self._vector:
            return self._flat_inner(x, u, v, keepdim)
        out = (u * (u if v is None else v)).sum(self._dims, keepdim=keepdim)
        k = self.ndim
        target = torch.broadcast_shapes(x.shape[: x.dim() - k], out.shape[: out.dim() - (k if keepdim else 0)])
        return out.expand(target + ((1,) * k if keepdim else ()))

    def component_inner(self, x, u, v=None):
        return u * (u if v is None else v)

    def norm(self, x, u, *, keepdim=False):
        if self._vector:
            return norm_safe(u, keepdim=keepdim)
        return sqrt_safe(self.inner(x, u, keepdim=keepdim))

    def dist(self, x, y, *, keepdim=False):
        if self._vector:
            return norm_safe(y - x, keepdim=keepdim)
        return sqrt_safe(self.dist2(x, y, keepdim=keepdim))

    def dist2(self, x, y, *, keepdim=False):
        d = y - x
        return (d * d).sum(self._dims, keepdim=keepdim)

    def transp(self, x, y, v):
        return v

    def _random_base(self, size, *, generator, dtype, device):
        x = torch.randn(*size, *self.point_shape, generator=generator, dtype=dtype, device=device)
        return x * self.std if self.std != 1.0 else x

    def base_log_prob(self, x):
        z = x / self.std if self.std != 1.0 else x
        return -0.5 * (z * z).sum(self._dims) - self.n * (0.5 * math.log(2 * math.pi) + math.log(self.std))
