"""Products of manifolds, points concatenated (flattened) on the last axis."""

from __future__ import annotations

import math

import geoopt
import torch

from ._math import sqrt_safe
from .base import Manifold

__all__ = ["Product"]


class Product(Manifold, geoopt.ProductManifold):
    """Riemannian product M_1 x ... x M_k.

    A point is the concatenation of the factors' points, each flattened, on the last axis:
    ``Product(Sphere(2), FlatTorus(1))`` has points of shape ``(*batch, 4)``.  Every operation acts
    factor-wise; the metric is the sum of the factors' metrics, so

    .. math:: d(x, y)^2 = \\sum_i d_i(x_i, y_i)^2, \\qquad
              \\log p(x) = \\sum_i \\log p_i(x_i)

    (the base distribution is the product of the factors' base distributions).

    Args:
        *manifolds: the factors, each a :class:`manifolds.Manifold`.

    Shapes: points and tangent vectors ``(*batch, sum_i prod(point_shape_i))``.
    """

    def __init__(self, *manifolds: Manifold):
        if len(manifolds) == 1 and isinstance(manifolds[0], (list, tuple)):
            manifolds = tuple(manifolds[0])
        if len(manifolds) < 1:
            raise ValueError("Product needs at least one factor manifold, got none")
        for i, m in enumerate(manifolds):
            if not isinstance(m, Manifold):
                raise TypeError(f"Product: factor {i} must be a manifolds.Manifold, got {type(m).__name__}")
        geoopt.ProductManifold.__init__(self, *[(m, tuple(m.point_shape)) for m in manifolds])
        self._set_shape((self.n_elements,), sum(m.dim for m in manifolds))
        self.injectivity_radius = min(float(getattr(m, "injectivity_radius", math.inf)) for m in manifolds)

    def extra_repr(self) -> str:
        return ", ".join(repr(m) for m in self.manifolds)

    # ---------------------------------------------------------------- helpers
    def _split(self, x: torch.Tensor) -> list[torch.Tensor]:
        batch = x.shape[:-1]
        return [x[..., sl].reshape(batch + tuple(shape)) for sl, shape in zip(self.slices, self.shapes)]

    def _join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        flat = []
        for p, m in zip(parts, self.manifolds):
            flat.append(p.reshape(p.shape[: p.dim() - m.ndim] + (math.prod(m.point_shape),)))
        batch = torch.broadcast_shapes(*[f.shape[:-1] for f in flat])
        flat = [f.expand(batch + f.shape[-1:]) for f in flat]
        return torch.cat(flat, dim=-1)

    def _map(self, fn_name: str, *tensors: torch.Tensor) -> torch.Tensor:
        split = [self._split(t) for t in tensors]
        return self._join([getattr(m, fn_name)(*args) for m, *args in zip(self.manifolds, *split)])

    def _reduce(self, fn, *tensors: torch.Tensor) -> torch.Tensor:
        split = [self._split(t) for t in tensors]
        out = None
        for m, *args in zip(self.manifolds, *split):
            r = fn(m, *args)
            out = r if out is None else out + r
        return out

    def _check_shape(self, shape, name):
        return Manifold._check_shape(self, shape, name)

    # ----------------------------------------------------------------- checks
    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5):
        for i, (m, xi) in enumerate(zip(self.manifolds, self._split(x))):
            ok, reason = m._check_point_on_manifold(xi, atol=atol, rtol=rtol)
            if not ok:
                return False, f"factor {i} ({m!r}, slice {self.slices[i].start}:{self.slices[i].stop}): {reason}"
        return True, None

    def _check_vector_on_tangent(self, x, u, *, atol=1e-5, rtol=1e-5):
        for i, (m, xi, ui) in enumerate(zip(self.manifolds, self._split(x), self._split(u))):
            ok, reason = m._check_vector_on_tangent(xi, ui, atol=atol, rtol=rtol)
            if not ok:
                return False, f"factor {i} ({m!r}, slice {self.slices[i].start}:{self.slices[i].stop}): {reason}"
        return True, None

    # --------------------------------------------------------------- geometry
    def projx(self, x):
        return self._map("projx", x)

    def proju(self, x, u):
        return self._map("proju", x, u)

    def egrad2rgrad(self, x, u):
        return self._map("egrad2rgrad", x, u)

    def expmap(self, x, u):
        return self._map("expmap", x, u)

    def retr(self, x, u):
        return self._map("retr", x, u)

    def logmap(self, x, y):
        return self._map("logmap", x, y)

    def transp(self, x, y, v):
        return self._map("transp", x, y, v)

    def geodesic(self, x0, x1, t):
        t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
        return self._join([m.geodesic(a, b, t) for m, a, b in zip(self.manifolds, self._split(x0), self._split(x1))])

    def geodesic_and_velocity(self, x0, x1, t):
        t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
        outs = [m.geodesic_and_velocity(a, b, t) for m, a, b in zip(self.manifolds, self._split(x0), self._split(x1))]
        return self._join([o[0] for o in outs]), self._join([o[1] for o in outs])

    def inner(self, x, u, v=None, *, keepdim=False):
        if v is None:
            v = u
        out = self._reduce(lambda m, xi, ui, vi: m.inner(xi, ui, vi), x, u, v)
        return out.unsqueeze(-1) if keepdim else out

    def component_inner(self, x, u, v=None):
        return geoopt.ProductManifold.component_inner(self, x, u, v)

    def dist2(self, x, y, *, keepdim=False):
        out = self._reduce(lambda m, xi, yi: m.dist(xi, yi) ** 2, x, y)
        return out.unsqueeze(-1) if keepdim else out

    def dist(self, x, y, *, keepdim=False):
        return sqrt_safe(self.dist2(x, y, keepdim=keepdim))

    def log_volume_density(self, x):
        return self._reduce(lambda m, xi: m.log_volume_density(xi), x)

    # ----------------------------------------------------------- distribution
    def _random_base(self, size, *, generator, dtype, device):
        parts = [m.random_base(*size, generator=generator, dtype=dtype, device=device) for m in self.manifolds]
        return self._join(parts)

    def base_log_prob(self, x):
        return self._reduce(lambda m, xi: m.base_log_prob(xi), x)
