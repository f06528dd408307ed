"""The unit sphere S^n in R^{n+1} with the round metric and the uniform base distribution."""

from __future__ import annotations

import math

import geoopt
import torch

from ._math import any_true as _any, TINY, atan2_over, dot, norm_safe, sinc, sqrt_safe
from .base import Manifold, _log_sphere_area

__all__ = ["Sphere"]




class Sphere(Manifold, geoopt.Sphere):
    """Unit sphere S^n = {x in R^{n+1} : |x| = 1}.

    .. math::
        \\exp_x(u) = \\cos(|u|) x + \\mathrm{sinc}(|u|) u, \\qquad
        \\log_x(y) = \\frac{\\theta}{\\sin\\theta} (y - \\langle x, y\\rangle x), \\qquad
        d(x, y) = \\theta = 2\\,\\mathrm{atan2}(|x - y|, |x + y|)
                = \\mathrm{atan2}\\big(\\sqrt{a b}, (b - a) / 2\\big), \\quad a = |x - y|^2,\\ b = |x + y|^2

    The distance uses the atan2 form, accurate to round-off near x == y where
    ``acos(<x, y>)`` loses half the digits (and near antipodal points); the code evaluates
    its double-angle form, which needs one safe square root instead of two.  At antipodal
    points the logarithm is not unique; a fixed tangent direction of length pi is returned
    (finite, tangent); that correction is computed only on the rows that need it.

    Base distribution: uniform, log p = -log(2 pi^{(n+1)/2} / Gamma((n+1)/2)).

    Args:
        n: intrinsic dimension (S^2 is ``Sphere(2)``, points in R^3).

    Shapes: points and tangent vectors ``(*batch, n + 1)``.
    """

    def __init__(self, n: int):
        n = self._check_int("n", n)
        geoopt.Sphere.__init__(self)
        self._set_shape((n + 1,), n)
        self.n = n
        self._log_area = _log_sphere_area(n)
        self.injectivity_radius = math.pi
        self.normalisation_chart = ("ball", math.pi)

    def extra_repr(self) -> str:
        return f"n={self.n}"

    # ----------------------------------------------------------------- checks
    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5):
        err = ((x * x).sum(-1).sqrt() - 1).abs()
        worst = float(err.max()) if err.numel() else 0.0
        if worst > atol + rtol:
            return False, f"expected |x| = 1 (points of shape (..., {self.n + 1})), but max ||x| - 1| = {worst:.3g} > tolerance {atol + rtol:.1g}; use projx to project"
        return True, None

    def _check_vector_on_tangent(self, x, u, *, atol=1e-5, rtol=1e-5):
        err = (x * u).sum(-1).abs()
        worst = float(err.max()) if err.numel() else 0.0
        if worst > atol + rtol * float(u.abs().max() if u.numel() else 0.0):
            return False, f"expected <x, u> = 0, but max |<x, u>| = {worst:.3g}; use proju to project"
        return True, None

    # --------------------------------------------------------------- geometry
    def projx(self, x):
        return x / norm_safe(x, keepdim=True).clamp_min(TINY[x.dtype] if x.dtype in TINY else 1e-30)

    def proju(self, x, u):
        return torch.addcmul(u, dot(x, u, keepdim=True), x, value=-1)

    def egrad2rgrad(self, x, u):
        return self.proju(x, u)

    def inner(self, x, u, v=None, *, keepdim=False):
        return self._flat_inner(x, u, v, keepdim)

    def component_inner(self, x, u, v=None):
        return u * (u if v is None else v)

    def expmap(self, x, u):
        theta = norm_safe(u, keepdim=True)
        return torch.addcmul(u * sinc(theta), x, torch.cos(theta))

    def retr(self, x, u):
        return self.projx(x + u)

    def logmap(self, x, y):
        c = dot(x, y, keepdim=True)
        v = torch.addcmul(y, c, x, value=-1)  # y - <x, y> x
        s = norm_safe(v, keepdim=True)
        out = atan2_over(s, c) * v
        hard = (c < 0) & (s < 1e-2)
        if _any(hard):
            out = self._fix_near_antipodal(x, v, c, hard, out)
        return out

    def _fix_near_antipodal(self, x, v, c, hard, out):
        # Recompute the few near-antipodal rows only (a full-size pass costs 3x the whole
        # logmap on 1e6 points with a few dozen such rows); under vmap, where shapes cannot
        # depend on data, fall back to a full-size torch.where.
        if out.dim() < 2:
            return torch.where(hard, self._log_near_antipodal(x, v, c), out)
        try:
            rows = hard[..., 0].nonzero(as_tuple=True)
        except RuntimeError:
            return torch.where(hard, self._log_near_antipodal(x, v, c), out)
        shape = out.shape
        fixed = self._log_near_antipodal(
            x.expand(shape)[rows], v.expand(shape)[rows], c.expand(shape[:-1] + (1,))[rows]
        )
        return out.index_put(rows, fixed)

    def _log_near_antipodal(self, x, v, c):
        # Near antipodal points v = y - <x,y> x is small and carries round-off along x:
        # project it once more.  Where it is pure round-off the logarithm is not unique;
        # return pi times a fixed unit tangent direction (the projection of e_0, or of e_1
        # when x is near +-e_0), which is finite and tangent.
        x, v = torch.broadcast_tensors(x, v)
        v = v - (x * v).sum(-1, keepdim=True) * x
        s = norm_safe(v, keepdim=True)
        k = (x[..., :1].abs() > 0.9).to(torch.long)
        e = (torch.arange(x.shape[-1], device=x.device) == k).to(x.dtype)  # one-hot e_k (vmap-friendly)
        f = e - (x * e).sum(-1, keepdim=True) * x
        f = f / norm_safe(f, keepdim=True)
        lost = s < 64 * torch.finfo(x.dtype).eps
        return torch.where(lost, math.pi * f, atan2_over(s, c) * v)

    def dist(self, x, y, *, keepdim=False):
        # 2 atan2(sqrt(a), sqrt(b)) = atan2(2 sqrt(ab), b - a): same accuracy at both ends,
        # one safe sqrt; the gradient is 0 (finite) at x == y and at antipodal points.
        d, p = x - y, x + y
        a, b = dot(d, d, keepdim=keepdim), dot(p, p, keepdim=keepdim)
        return torch.atan2(sqrt_safe(a * b), (b - a).mul_(0.5))

    def geodesic_and_velocity(self, x0, x1, t):
        """Closed form: with u = log_{x0}(x1), theta = |u|, a = t theta,
        gamma = cos(a) x0 + t sinc(a) u and gamma' = -theta sin(a) x0 + cos(a) u."""
        # The log map inlined: theta = atan2(|w|, c) comes with it, no second norm of u.
        c = dot(x0, x1, keepdim=True)
        w = torch.addcmul(x1, c, x0, value=-1)  # x1 - <x0, x1> x0
        s = norm_safe(w, keepdim=True)
        if _any((c < 0) & (s < 1e-2)):  # near-antipodal rows: the log map's fallback
            u = self.logmap(x0, x1)
            theta = norm_safe(u, keepdim=True)
        else:
            u = atan2_over(s, c) * w
            theta = torch.atan2(s, c)
        t = self._expand_t(t, x0)
        a = t * theta
        ca = torch.cos(a)
        xt = x0 * ca + u * (t * sinc(a))
        vt = u * ca - x0 * (theta * torch.sin(a))
        return xt, vt

    def transp(self, x, y, v):
        return self.proju(y, v)

    # ----------------------------------------------------------- distribution
    def _random_base(self, size, *, generator, dtype, device):
        z = torch.randn(*size, self.n + 1, generator=generator, dtype=dtype, device=device)
        return self.projx(z)

    def base_log_prob(self, x):
        return torch.full(x.shape[:-1], -self._log_area, dtype=x.dtype, device=x.device)
