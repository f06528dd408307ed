"""ODE sampling and exact log-likelihoods of flows, in R^n and on Riemannian manifolds.

:func:`sample` solves dx/dt = v(x, t) (Chen et al. 2018, "Neural Ordinary Differential
Equations", NeurIPS).  In flat space it calls ``torchdiffeq.odeint`` with any of its methods;
on a manifold the ``euler``, ``midpoint`` and ``rk4`` steppers move with ``expmap`` and
bring their stage vectors back to the current point with the differential of ``logmap``
(Runge-Kutta in the normal chart, so they keep orders 1, 2 and 4), and adaptive methods
integrate the projected ambient ODE with ``projx`` applied inside the field and at every
returned point.

:func:`log_likelihood` uses the instantaneous change of variables (Chen et al. 2018),

.. math::
    \\log p_1(x_1) = \\log p_0(x_0) - \\int_0^1 \\operatorname{div}_g v(x_t, t)\\, dt,

integrated from t = 1 back to t = 0, with an exact divergence (D vector-Jacobian products
on one forward pass, D the ambient dimension) or Hutchinson's unbiased estimate
eps^T J P eps from one (Grathwohl et al. 2019, "FFJORD: Free-form Continuous Dynamics for
Scalable Reversible Generative Models", ICLR).  On a manifold the divergence is the
Riemannian one used by Riemannian flow matching (Chen & Lipman 2023, "Flow Matching on
General Geometries", ICLR 2024), computed basis-free in ambient coordinates:

.. math::
    \\operatorname{div}_g v(x) = \\operatorname{tr}\\big(P_x J_v(x)\\big)
        + \\langle \\nabla \\log\\rho(x), v(x) \\rangle

where J_v is the ambient Jacobian of v (any smooth extension off the manifold gives the same
trace, since P_x = ``proju(x, .)`` kills the normal directions), and rho is the density of
the Riemannian volume w.r.t. Lebesgue measure in the ambient coordinates
(``manifold.log_volume_density``: 0 for Euclidean, Sphere, FlatTorus, Lorentz, SO3;
n log lambda_x on the Poincare ball; -(n+1)/2 log det P for affine SPD).  No tangent basis or
chart is ever built; for an open subset of R^n with metric G this is the textbook
(1/sqrt(det G)) d_i (sqrt(det G) v^i).  The velocity is projected with ``proju`` before it is
differentiated, so a model that outputs ambient vectors gets the divergence of its tangent part.

Measured orders of the manifold steppers (float64, steps 8 -> 64; tests/solvers/test_sample.py):
euler 1.0, midpoint 2.0, rk4 4.0 on S^2, T^2, SO(3) and the Poincare ball with the default
``transport="dlog"``; bringing stage vectors back by projection/``transp`` instead caps rk4 at
2.0 on S^2 and SO(3) (3.0 on the ball with its parallel transport).

Example::

    >>> from manifolds import Sphere
    >>> S2 = Sphere(2)
    >>> x0 = S2.random_base(512)
    >>> x1 = sample(model, x0, S2, method="rk4", steps=100)  # doctest: +SKIP
    >>> log_p = log_likelihood(model, x1, S2, steps=100)  # (512,)  # doctest: +SKIP
"""

from ._impl_common import ADAPTIVE_METHODS, FIXED_GRID_METHODS, MANIFOLD_METHODS, METHODS
from ._impl_divergence import DIVERGENCES, divergence
from ._impl_likelihood import log_likelihood
from ._impl_sample import sample

__all__ = [
    "sample",
    "log_likelihood",
    "divergence",
    "METHODS",
    "FIXED_GRID_METHODS",
    "ADAPTIVE_METHODS",
    "MANIFOLD_METHODS",
    "DIVERGENCES",
]
