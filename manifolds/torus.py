"""The flat torus T^n = (R / 2 pi Z)^n with angles stored in [-pi, pi)."""

from __future__ import annotations

import math

import torch

import geoopt

from ._math import norm_safe, wrap_angle
from .base import Manifold

__all__ = ["FlatTorus"]


class FlatTorus(Manifold, geoopt.Manifold):
    """Flat torus T^n: n angles, each in [-pi, pi), with the flat metric.

    .. math::
        \\exp_x(u) = \\mathrm{wrap}(x + u), \\qquad
        \\log_x(y) = \\mathrm{wrap}(y - x), \\qquad
        d(x, y) = |\\mathrm{wrap}(y - x)|

    where wrap maps to [-pi, pi).  Geodesics cross the seam: the path from pi - 0.1 to
    -pi + 0.1 has length 0.2.  Base distribution: uniform, log p = -n log(2 pi).

    Args:
        n: number of angles.

    Shapes: points and tangent vectors ``(*batch, n)``.
    """

    name = "FlatTorus"
    reversible = True

    def __init__(self, n: int):
        n = self._check_int("n", n)
        geoopt.Manifold.__init__(self)
        self._set_shape((n,), n)
        self.n = n
        self.injectivity_radius = math.pi
        self.normalisation_chart = ("cube", math.pi)

    def extra_repr(self) -> str:
        return f"n={self.n}"

    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5):
        over = (x.abs() - math.pi).clamp_min(0)
        worst = float(over.max()) if over.numel() else 0.0
        if worst > atol:
            return False, (
                f"expected angles in [-pi, pi) (points of shape (..., {self.n})), but an angle "
                f"lies {worst:.3g} outside; use projx to wrap angles"
            )
        return True, None

    def _check_vector_on_tangent(self, x, u, *, atol=1e-5, rtol=1e-5):
        return True, None

    def projx(self, x):
        return wrap_angle(x)

    def proju(self, x, u):
        return u

    def egrad2rgrad(self, x, u):
        return u

    def inner(self, x, u, v=None, *, keepdim=False):
        return self._flat_inner(x, u, v, keepdim)

    def component_inner(self, x, u, v=None):
        return u * (u if v is None else v)

    def expmap(self, x, u):
        return wrap_angle(x + u)

    def logmap(self, x, y):
        return wrap_angle(y - x)

    def dist(self, x, y, *, keepdim=False):
        return norm_safe(wrap_angle(y - x), keepdim=keepdim)

    def geodesic(self, x0, x1, t):
        return wrap_angle(x0 + self._expand_t(t, x0) * wrap_angle(x1 - x0))

    def geodesic_and_velocity(self, x0, x1, t):
        d = wrap_angle(x1 - x0)
        xt = wrap_angle(x0 + self._expand_t(t, x0) * d)
        return xt, d.expand_as(xt)

    def transp(self, x, y, v):
        return v

    def _random_base(self, size, *, generator, dtype, device):
        u = torch.rand(*size, self.n, generator=generator, dtype=dtype, device=device)
        return wrap_angle(u * (2 * math.pi) - math.pi)

    def base_log_prob(self, x):
        return torch.full(x.shape[:-1], -self.n * math.log(2 * math.pi), dtype=x.dtype, device=x.device)
