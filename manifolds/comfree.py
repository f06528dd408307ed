"""Centre-of-mass-free configurations of n particles in R^d, with the invariant Gaussian base."""

from __future__ import annotations

import math

import geoopt
import torch

from ._math import sqrt_safe
from .base import Manifold

__all__ = ["CoMFree"]


class CoMFree(Manifold, geoopt.Euclidean):
    """Configurations of ``n_particles`` points in R^d whose centre of mass is zero.

    The linear subspace X = {x in R^(n x d) : sum_i x_i = 0} of dimension (n - 1) d, with the
    flat metric induced by R^(n x d) (Frobenius inner product).  It is the state space of
    E(n)-equivariant flows on point clouds and molecules (Köhler, Klein & Noé 2020,
    "Equivariant Flows: Exact Likelihood Generative Learning for Symmetric Densities", ICML;
    Satorras et al. 2021; Klein, Krämer & Noé 2023): translations are quotiented out, and a
    rotation- and permutation-invariant base on X pushed by an equivariant velocity field
    gives an invariant density.

    Geometry, with P the centring projection P x = x - mean_i(x_i) (over the particle axis):

    .. math::
        \\mathrm{projx}(x) = P x, \\quad \\mathrm{proju}(x, u) = P u, \\quad
        \\exp_x(u) = x + u, \\quad \\log_x(y) = y - x, \\quad d(x, y) = |y - x|_F

    Base distribution: the isotropic Gaussian restricted to X (equivalently, P applied to
    N(0, std^2 I) on R^(n x d)), with density w.r.t. the Lebesgue measure of the subspace X
    (its (n - 1) d-dimensional Hausdorff measure, the Riemannian volume here):

    .. math::
        \\log p(x) = -\\frac{(n - 1) d}{2} \\log(2 \\pi \\, \\mathrm{std}^2)
            - \\frac{|x|^2}{2 \\, \\mathrm{std}^2}, \\qquad x \\in X.

    ``base_log_prob`` centres its input first (so it equals log p(P x)).  Note the (n - 1) d:
    with the n d of the ambient Gaussian, likelihoods would be off by d/2 log(2 pi std^2)
    per configuration.  Exact log-likelihoods of flows on X (``geoflow.solvers.log_likelihood``)
    then use the divergence tr(P J_v), which this class gives through ``proju``.

    Args:
        n_particles: number of particles n (>= 2; one particle has a zero-dimensional X).
        dim: spatial dimension d (default 3; 2 for DW4).
        std: standard deviation of the base Gaussian (default 1).

    Shapes: points and tangent vectors ``(*batch, n_particles, dim)``.
    """

    name = "CoMFree"
    reversible = True

    def __init__(self, n_particles: int, dim: int = 3, *, std: float = 1.0):
        n = self._check_int("n_particles", n_particles, minimum=2)
        d = self._check_int("dim", dim)
        std = self._check_positive("std", std)
        geoopt.Euclidean.__init__(self, ndim=2)
        self._set_shape((n, d), (n - 1) * d)
        self.n_particles = n
        self.spatial_dim = d
        self.std = std
        self.injectivity_radius = math.inf
        self.normalisation_chart = ("gaussian", 1.5 * std)
        self._log_norm = 0.5 * (n - 1) * d * math.log(2 * math.pi * std * std)

    def extra_repr(self) -> str:
        return f"n_particles={self.n_particles}, dim={self.spatial_dim}" + (f", std={self.std}" if self.std != 1.0 else "")

    def base_origin(self, dtype=None, device=None) -> torch.Tensor:
        """Centre of the base distribution (all particles at the origin)."""
        return torch.zeros(self.point_shape, dtype=dtype, device=device)

    # ------------------------------------------------------------------ checks
    def _off_centre(self, x, atol, rtol, what):
        """(ok, reason): is the mean over particles of ``x`` within atol + rtol max|x| of zero."""
        if x.numel() == 0:
            return True, None
        mean = x.mean(dim=-2)
        worst = float(mean.abs().max())
        tol = atol + rtol * float(x.abs().max())
        if worst > tol:
            return False, (
                f"expected {what} of shape (..., {self.n_particles}, {self.spatial_dim}) whose mean over the "
                f"{self.n_particles} particles (axis -2) is 0, but it is off by up to {worst:.3g} "
                f"(tolerance {tol:.3g}); use projx to centre it"
                + ("" if what == "points" else " (proju for tangent vectors)")
            )
        return True, None

    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5):
        return self._off_centre(x, atol, rtol, "points")

    def _check_vector_on_tangent(self, x, u, *, atol=1e-5, rtol=1e-5):
        return self._off_centre(u, atol, rtol, "tangent vectors")

    # ---------------------------------------------------------------- geometry
    @staticmethod
    def _centre(v: torch.Tensor) -> torch.Tensor:
        return v - v.mean(dim=-2, keepdim=True)

    def projx(self, x):
        return self._centre(x)

    def proju(self, x, u):
        return self._centre(u)

    def egrad2rgrad(self, x, u):
        return self._centre(u)

    def expmap(self, x, u):
        return x + u

    def retr(self, x, u):
        """x + P u: centres the step, since optimisers (geoopt's RiemannianAdam) rescale gradients per component."""
        return x + self._centre(u)

    def logmap(self, x, y):
        return y - x

    def transp(self, x, y, v):
        return self._centre(v)

    def geodesic(self, x0, x1, t):
        return torch.lerp(x0, x1, self._expand_t(t, x0))

    def geodesic_and_velocity(self, x0, x1, t):
        xt = torch.lerp(x0, x1, self._expand_t(t, x0))
        return xt, (x1 - x0).expand_as(xt)

    def inner(self, x, u, v=None, *, keepdim=False):
        out = (u * (u if v is None else v)).sum((-2, -1), keepdim=keepdim)
        k = 2
        target = torch.broadcast_shapes(x.shape[: x.dim() - k], out.shape[: out.dim() - (k if keepdim else 0)])
        return out.expand(target + ((1, 1) if keepdim else ()))

    def component_inner(self, x, u, v=None):
        return u * (u if v is None else v)

    def dist2(self, x, y, *, keepdim=False):
        """Squared distance |y - x|_F^2, shape ``(*batch,)``."""
        d = y - x
        return (d * d).sum((-2, -1), keepdim=keepdim)

    def dist(self, x, y, *, keepdim=False):
        return sqrt_safe(self.dist2(x, y, keepdim=keepdim))

    def norm(self, x, u, *, keepdim=False):
        return sqrt_safe(self.inner(x, u, keepdim=keepdim))

    # ----------------------------------------------------------- distribution
    def _random_base(self, size, *, generator, dtype, device):
        x = torch.randn(*size, *self.point_shape, generator=generator, dtype=dtype, device=device)
        x = self._centre(x)
        return x * self.std if self.std != 1.0 else x

    def base_log_prob(self, x):
        z = self._centre(x)
        if self.std != 1.0:
            z = z / self.std
        return -0.5 * (z * z).sum((-2, -1)) - self._log_norm
