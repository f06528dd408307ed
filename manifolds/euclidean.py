"""Euclidean space R^n with a standard Gaussian base distribution."""

from __future__ import annotations

import math

import geoopt
import torch

from ._math import norm_safe
from .base import Manifold

__all__ = ["Euclidean"]


class Euclidean(Manifold, geoopt.Euclidean):
    """Flat space R^n.

    Geometry: exp_x(u) = x + u, log_x(y) = y - x, d(x, y) = |y - x|.
    Base distribution: N(0, std^2 I), log p(x) = -n/2 log(2 pi std^2) - |x|^2 / (2 std^2).

    Args:
        n: dimension (>= 1).
        std: standard deviation of the Gaussian base distribution (default 1).

    Shapes: points and tangent vectors ``(*batch, n)``.
    """

    def __init__(self, n: int, *, std: float = 1.0):
        n = self._check_int("n", n)
        std = self._check_positive("std", std)
        geoopt.Euclidean.__init__(self, ndim=1)
        self._set_shape((n,), n)
        self.n = n
        self.std = std
        self.injectivity_radius = math.inf
        self.normalisation_chart = ("gaussian", 1.5 * std)

    def base_origin(self, dtype=None, device=None):
        """Centre of the base distribution."""
        return torch.zeros(self.n, dtype=dtype, device=device)

    def extra_repr(self) -> str:
        return f"n={self.n}" + (f", std={self.std}" if self.std != 1.0 else "")

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
        return self._flat_inner(x, u, v, keepdim)

    def component_inner(self, x, u, v=None):
        return u * (u if v is None else v)

    def norm(self, x, u, *, keepdim=False):
        return norm_safe(u, keepdim=keepdim)

    def dist(self, x, y, *, keepdim=False):
        return norm_safe(y - x, keepdim=keepdim)

    def dist2(self, x, y, *, keepdim=False):
        d = y - x
        return (d * d).sum(-1, keepdim=keepdim)

    def transp(self, x, y, v):
        return v

    def _random_base(self, size, *, generator, dtype, device):
        x = torch.randn(*size, self.n, generator=generator, dtype=dtype, device=device)
        return x * self.std if self.std != 1.0 else x

    def base_log_prob(self, x):
        z = x / self.std if self.std != 1.0 else x
        return -0.5 * (z * z).sum(-1) - self.n * (0.5 * math.log(2 * math.pi) + math.log(self.std))
