"""Explicit Runge-Kutta steppers that move along a manifold with ``expmap``.

One step from x at time t with step h (negative when integrating backwards) is the
Runge-Kutta method applied in the normal chart u -> exp_x(u) centred at x:

.. math::
    x_i = \\exp_x\\Big(h \\sum_{j<i} a_{ij} k_j\\Big), \\qquad
    k_i = T_{x_i \\to x}\\, v(x_i, t + c_i h), \\qquad
    x_{\\text{new}} = \\exp_x\\Big(h \\sum_i b_i k_i\\Big)

where T brings the stage vector v(x_i) back to T_xM.  With ``transport="dlog"`` (default) T is
the differential of the logarithm, k_i = d(log_x)_{x_i}[v(x_i)], i.e. the coordinate
expression of v in the normal chart, so the step is exactly the Euclidean Runge-Kutta method on
the pulled-back ODE du/dt = d(log_x)[v(exp_x(u))] and keeps its classical order (euler 1,
midpoint 2, rk4 4).  d(log_x) is in closed form for flat spaces, the sphere and SO(3) (and
factor-wise on products); on other manifolds it is obtained by automatic differentiation of
``logmap`` (double backward, else forward mode, else ``transp``).  ``"transp"`` (the
manifold's vector transport, projection on the sphere) and ``"proju"`` agree with dlog only
up to O(|u|^2), which caps rk4 at order 2 on curved manifolds (measured in tests/solvers).

Extra Euclidean state (the divergence integral of :func:`log_likelihood`) is advanced
with the same tableau: e_new = e + h sum_i b_i e_i.  On a manifold whose steps report a
log-density jump (``Mesh.walk``: the flux ratios where a step crosses edges of a triangle mesh)
the jump J of each step's move is subtracted, e_new -= J: e integrates div, the rate of *loss*
of log-density along the flow, whichever way in time the step goes.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.func import jvp

from manifolds import Euclidean, FlatTorus, Product, Sphere
from manifolds._math import atan2_over, norm_safe

try:
    from manifolds.so3 import SO3
except ImportError:  # pragma: no cover - SO3 is optional
    SO3 = None

from ._impl_common import Geometry, where_fixed

#: Butcher tableaus (c, a, b) of the manifold steppers.
TABLEAUS = {
    "euler": ((0.0,), ((),), (1.0,)),
    "midpoint": ((0.0, 0.5), ((), (0.5,)), (0.0, 1.0)),
    "rk4": (
        (0.0, 0.5, 0.5, 1.0),
        ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
        (1 / 6, 1 / 3, 1 / 3, 1 / 6),
    ),
}


def _combine(coeffs, vectors, h: float):
    out = None
    for c, v in zip(coeffs, vectors):
        if c != 0.0:
            term = (c * h) * v
            out = term if out is None else out + term
    return out


def _sphere_dlog(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """d(log_x)_y[w] on the unit sphere in closed form (w tangent at y).

    With c = <x, y>, v = y - c x, s = |v|, theta = atan2(s, c) and log_x(y) = (theta / s) v:

    .. math::
        d\\log_x(y)[w] = \\frac{\\theta}{s}\\,(w - \\langle x, w\\rangle x)
            - \\langle x, w\\rangle\\, q(\\theta)\\, v, \\qquad
        q = \\frac{\\sin\\theta - \\theta\\cos\\theta}{\\sin^3\\theta}
          = \\frac13 + \\frac{2\\theta^2}{15} + \\frac{2\\theta^4}{63} + O(\\theta^6)

    (tested against ``torch.func.jvp`` of ``Sphere.logmap``).
    """
    c = (x * y).sum(-1, keepdim=True)
    v = y - c * x
    s = norm_safe(v, keepdim=True)
    theta = torch.atan2(s, c)
    small = theta < 1e-2
    s_safe = torch.where(small, torch.ones_like(s), s)
    t2 = theta * theta
    q = torch.where(small, 1 / 3 + t2 * (2 / 15 + t2 * (2 / 63)), (s_safe - theta * c) / s_safe**3)
    dc = (x * w).sum(-1, keepdim=True)
    return atan2_over(s, c) * (w - dc * x) - (dc * q) * v


def _so3_dlog(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """d(log_x)_y[w] on SO(3) in closed form (w = y hat(eta) tangent at y).

    log_x(y) = x hat(omega), omega = log(x^T y); moving y along y hat(eta) moves omega by
    J_r(omega)^{-1} eta, the inverse right Jacobian of SO(3):

    .. math::
        J_r^{-1}(\\omega)\\eta = \\eta + \\tfrac12\\,\\omega\\times\\eta
            + \\beta(\\theta)\\,\\omega\\times(\\omega\\times\\eta), \\qquad
        \\beta = \\frac{1}{\\theta^2} - \\frac{1 + \\cos\\theta}{2\\theta\\sin\\theta}
              = \\frac1{12} + \\frac{\\theta^2}{720} + \\frac{\\theta^4}{30240} + O(\\theta^6)

    (tested against ``torch.func.jvp`` of ``SO3.logmap``).
    """
    omega = SO3.log_rotvec(x.mT @ y)
    a = y.mT @ w
    eta = SO3.vee(0.5 * (a - a.mT))
    t2 = (omega * omega).sum(-1, keepdim=True)
    small = t2 < 1e-4
    t2_safe = torch.where(small, torch.ones_like(t2), t2)
    t = torch.sqrt(t2_safe)
    beta = torch.where(
        small,
        1 / 12 + t2 * (1 / 720 + t2 / 30240),
        1 / t2_safe - (1 + torch.cos(t)) / (2 * t * torch.sin(t)),
    )
    oxe = torch.cross(omega, eta, dim=-1)
    return x @ SO3.hat(eta + 0.5 * oxe + beta * torch.cross(omega, oxe, dim=-1))


def _jvp_dlog(manifold, x, y, w):
    """d(log_x)_y[w] by forward mode (``torch.func.jvp``)."""
    return jvp(lambda z: manifold.logmap(x, z), (y,), (w,))[1]


def _vjp_dlog(manifold, x, y, w, create_graph: bool = False):
    """d(log_x)_y[w] by reverse mode twice: J w = d/du <J^T u, w> (faster than forward mode on CPU)."""
    with torch.enable_grad():
        if not create_graph:
            x, w = x.detach(), w.detach()
        yr = y if (create_graph and y.requires_grad) else y.detach().requires_grad_(True)
        out = manifold.logmap(x, yr)
        u = torch.zeros_like(out, requires_grad=True)
        pull = torch.autograd.grad(out, yr, u, create_graph=True)[0]
        res = torch.autograd.grad(pull, u, w, create_graph=create_graph)[0]
    return res if create_graph else res.detach()


def dlog(manifold, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, *, generic: str = "vjp", create_graph: bool = False):
    """The differential of ``logmap(x, .)`` at y applied to w, with closed forms where known.

    Flat spaces (Euclidean, FlatTorus): the identity.  Sphere: :func:`_sphere_dlog`; SO(3):
    :func:`_so3_dlog`.  Product: factor by factor.  Otherwise automatic differentiation of
    ``manifold.logmap``: ``generic="vjp"`` (double backward) or ``"jvp"`` (forward mode).
    """
    if isinstance(manifold, (Euclidean, FlatTorus)):
        return w
    if isinstance(manifold, Sphere):
        return _sphere_dlog(x, y, w)
    if SO3 is not None and isinstance(manifold, SO3):
        return _so3_dlog(x, y, w)
    if isinstance(manifold, Product):
        parts = zip(manifold.manifolds, manifold._split(x), manifold._split(y), manifold._split(w))
        return manifold._join([dlog(m, xi, yi, wi, generic=generic, create_graph=create_graph) for m, xi, yi, wi in parts])
    if generic == "vjp":
        return _vjp_dlog(manifold, x, y, w, create_graph)
    return _jvp_dlog(manifold, x, y, w)


def _closed_form(manifold) -> bool:
    """Whether :func:`dlog` needs no automatic differentiation on this manifold."""
    if isinstance(manifold, (Euclidean, FlatTorus, Sphere)) or (SO3 is not None and isinstance(manifold, SO3)):
        return True
    return isinstance(manifold, Product) and all(_closed_form(m) for m in manifold.manifolds)


class Transport:
    """Brings a tangent vector at a stage point x_i back to the current point x.

    ``"dlog"`` on a manifold without a closed form differentiates ``logmap``, first by double
    backward, then by forward mode; if neither works (e.g. custom autograd functions without
    higher-order derivatives) it falls back to ``"transp"`` for the rest of the solve.
    """

    def __init__(self, geom: Geometry, kind: str, create_graph: bool = False):
        self.geom = geom
        self.kind = "proju" if geom.flat else kind
        if self.kind == "dlog" and not geom.has_logmap:
            self.kind = "transp"
        self.create_graph = create_graph
        self._generic = ["vjp", "jvp"]
        self._closed = not geom.flat and _closed_form(geom.manifold)

    def __call__(self, x: torch.Tensor, xi: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        geom = self.geom
        if geom.flat:
            return v
        if self.kind == "dlog" and self._closed:
            return geom.proju(x, dlog(geom.manifold, x, xi, v))
        while self.kind == "dlog":
            try:
                return geom.proju(x, dlog(geom.manifold, x, xi, v, generic=self._generic[0], create_graph=self.create_graph))
            except (NotImplementedError, RuntimeError):
                self._generic.pop(0)
                if not self._generic:
                    self.kind = "transp"
        if self.kind == "transp":
            return geom.transp(xi, x, v)
        return geom.proju(x, v)


def integrate_fixed(
    geom: Geometry,
    dynamics: Callable,
    x: torch.Tensor,
    grid: list[float],
    method: str,
    transport: str,
    extra: Optional[torch.Tensor] = None,
    return_path: bool = False,
    create_graph: bool = False,
):
    """Integrate on the manifold over ``grid`` with the named tableau.

    Args:
        dynamics: ``(x, t, where) -> (v, e)``: tangent vector at x and the derivative of the
            Euclidean extra state (or None).
        extra: initial extra state (e.g. zeros of shape ``(batch,)``) or None.

    Returns:
        ``(x_end, extra_end, path)`` with ``path`` the list of points at every grid time
        (only when ``return_path``; else None).
    """
    geom.require_expmap(method)
    c, a, b = TABLEAUS[method]
    move = Transport(geom, transport, create_graph)
    steps = len(grid) - 1
    path = [x] if return_path else None
    for k in range(steps):
        t, h = grid[k], grid[k + 1] - grid[k]
        ks, es = [], []
        for i in range(len(c)):
            if i == 0:
                xi = x
            else:
                xi = geom.expmap(x, _combine(a[i], ks, h))
            vi, ei = dynamics(xi, t + c[i] * h, where_fixed(k, steps, t + c[i] * h))
            ks.append(vi if i == 0 else move(x, xi, vi))
            es.append(ei)
        if geom.walk is not None:
            # a step that crosses edges of a mesh changes the density by the flux ratios it reports
            y, jump = geom.walk(x, _combine(b, ks, h))
            x = geom.projx(y)
        else:
            x, jump = geom.projx(geom.expmap(x, _combine(b, ks, h))), None
        if extra is not None:
            extra = extra + _combine(b, es, h)
            if jump is not None:
                extra = extra - jump
        if return_path:
            path.append(x)
    return x, extra, path
