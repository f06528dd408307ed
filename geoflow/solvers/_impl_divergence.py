"""Riemannian divergence of a tangent vector field, exact or Hutchinson.

For a manifold M with a metric g whose points and tangent vectors are stored in ambient
coordinates (R^D, D = prod(point_shape)), the divergence of a tangent field v is

.. math::
    \\operatorname{div}_g v(x) = \\operatorname{tr}\\big(P_x J_v(x)\\big)
        + \\langle \\nabla \\log\\rho(x), v(x) \\rangle

with J_v the D x D ambient Jacobian of (any smooth extension of) v, P_x = ``proju(x, .)``
as a linear map and rho the density of the Riemannian volume w.r.t. Lebesgue measure in
the ambient coordinates (``manifold.log_volume_density``; 0 when absent).  Why it is basis
free: P_x is a projection onto T_xM, so in a basis adapted to T_xM + ker P_x the normal
block of P_x J contributes nothing to the trace, and the tangent block is the tangential
derivative, which only depends on v along M.  For an open subset of R^D with metric
g = G(x) (Poincare ball, SPD), P = I and rho = sqrt(det G), which is the coordinate formula
(1 / sqrt(det G)) d_i (sqrt(det G) v^i); for a submanifold with the induced metric
(sphere, SO(3), hyperboloid with its Minkowski-orthogonal P) rho = 1 and tr(P J) is the
trace of the covariant derivative.

A manifold may name a different projector for the trace, ``divergence_proju``: on a triangle
mesh (``manifolds.Mesh``) the sampler moves points inside their face with the face-plane part of
the field, so the trace is taken along the face (P_x = the face plane's projector) while
``proju`` uses the mesh's smooth normal field.

The field handed in here is already the projected field x -> proju(x, v(x, t)); on M it
equals v when v is tangent, so the trace is unchanged (P dP[e] P = 0 for a family of
projections), and a velocity with a normal component gets the divergence of its tangent part.

Two implementations, same values (tested against each other):

* ``"reverse"`` (default): ``torch.autograd`` on one forward pass of the field.
  tr(P J) = tr(J P) = sum_i <J^T e_i, P e_i>: D vector-Jacobian products sharing the
  forward pass (a loop on CPU and for D <= 16, else one ``is_grads_batched`` call); Hutchinson
  <J^T eps, P eps> is one.  The graph of each evaluation is freed at once unless
  ``create_graph`` (training through the likelihood).
* ``"forward"``: ``torch.func``: ``vmap`` over the D basis vectors of ``jvp`` (one batched
  forward pass); Hutchinson eps^T P (J eps) is one ``jvp``.  Measured on CPU with torch 2.13
  it is 2-4x slower than reverse (forward-mode formulas of ``linear``, ``where``, ``atan2``
  ... run through Python decompositions), hence not the default.

Samples in a batch must be independent (no batch-norm in training mode): the basis vector
e_i is fed to every sample at once.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.func import jvp, vmap

from ._impl_common import Geometry

#: Valid values of ``divergence``.
DIVERGENCES = ("exact", "hutchinson", "hutchinson-rademacher")


def _point_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean inner product over the point dimensions, shape ``(batch,)``."""
    return (a * b).reshape(a.shape[0], -1).sum(-1) if a.dim() > 1 else a * b


def _basis(geom: Geometry, x: torch.Tensor) -> torch.Tensor:
    D = geom.dim_ambient
    return torch.eye(D, dtype=x.dtype, device=x.device).reshape((D, 1) + geom.point_shape)


#: The exact reverse trace takes D vector-Jacobian products from one forward pass, either as a
#: loop of D backward calls or as one ``is_grads_batched`` call (a vmap over the backward).  On
#: CPU the loop was the faster in every case measured (``benchmarks/divergence_strategy.py``,
#: torch 2.13, one thread, 2026-11-23: MLP fields with D = 20-128 at 0.66-0.90x the batched
#: time, EGNN and TFN on LJ13 at 0.29-0.70x, where the vmapped scatter ops of message passing
#: are slow), so CPU always loops.  On other devices (not measured yet) the batched call is
#: used above this ambient dimension.
_LOOP_MAX_DIM = 16


def _loop_vjps(D: int, device: torch.device) -> bool:
    """Whether the exact reverse trace loops over the D vector-Jacobian products (see above)."""
    return device.type == "cpu" or D <= _LOOP_MAX_DIM


def _zero_if_none(g, like):
    return torch.zeros_like(like) if g is None else g


class Divergence:
    """Evaluates ``(F(x), div_g F(x))`` for the projected field F.

    Args:
        geom: the geometry adapter.
        kind: ``"exact"``, ``"hutchinson"`` (Gaussian probe) or ``"hutchinson-rademacher"``.
        eps: the probe (same shape as the points) for the Hutchinson estimators, fixed over
            one solve as in FFJORD so that adaptive solvers see a smooth ODE.
        mode: ``"reverse"`` (``torch.autograd``, default) or ``"forward"`` (``torch.func``).
        create_graph: keep the graph of the divergence (to differentiate the likelihood).
    """

    def __init__(
        self, geom: Geometry, kind: str, eps: Optional[torch.Tensor] = None, mode: str = "reverse", create_graph: bool = False
    ):
        if mode not in ("reverse", "forward"):
            raise ValueError(f"`mode` must be one of ['reverse', 'forward'], got {mode!r}")
        self.geom = geom
        self.kind = kind
        self.eps = eps
        self.mode = mode
        self.create_graph = create_graph

    def __call__(self, field: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor):
        if self.mode == "forward":
            # A view into a larger buffer (torchdiffeq's flattened state) makes forward AD allocate
            # tangents over the whole storage and hits slow batched matmuls: work on a fresh copy.
            return self._forward(field, x.clone(memory_format=torch.contiguous_format))
        return self._reverse(field, x)

    # ------------------------------------------------------------ reverse
    def _reverse(self, field, x):
        geom, create = self.geom, self.create_graph
        with torch.enable_grad():
            xr = x if (create and x.requires_grad) else x.detach().requires_grad_(True)
            out = field(xr)
            w = out if geom.trace_field is None else geom.trace_field(xr, out)
            tr = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            if w.requires_grad:
                if self.kind == "exact":
                    tr = self._reverse_exact(w, xr, x, create)
                else:
                    pull = torch.autograd.grad(w, xr, self.eps, retain_graph=True, create_graph=create, allow_unused=True)[0]
                    tr = _point_dot(_zero_if_none(pull, x), geom.trace_proju(x, self.eps))
            if geom.has_volume_density:
                log_rho = geom.log_volume_density(xr).sum()
                if log_rho.requires_grad:
                    grad_rho = torch.autograd.grad(log_rho, xr, create_graph=create, allow_unused=True)[0]
                    tr = tr + _point_dot(_zero_if_none(grad_rho, x), out)
        if not create:
            out, tr = out.detach(), tr.detach()
        return out, tr

    def _reverse_exact(self, out, xr, x, create):
        # tr(P J) = tr(J P) = sum_i <J^T e_i, P e_i>
        geom = self.geom
        basis = _basis(geom, x)
        D = basis.shape[0]
        proj = geom.trace_proju(x, basis.expand((D,) + tuple(x.shape)))  # P e_i at every point
        if _loop_vjps(D, x.device):
            tr = None
            for i in range(D):
                e = basis[i].expand_as(out)
                pull = torch.autograd.grad(out, xr, e, retain_graph=True, create_graph=create, allow_unused=True)[0]
                term = _point_dot(_zero_if_none(pull, x), proj[i])
                tr = term if tr is None else tr + term
            return tr
        pulls = torch.autograd.grad(
            out, xr, basis.expand((D,) + tuple(out.shape)), retain_graph=True, create_graph=create,
            allow_unused=True, is_grads_batched=True,
        )[0]
        if pulls is None:
            return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        return _point_dot(pulls.flatten(0, 1), proj.flatten(0, 1)).reshape(D, x.shape[0]).sum(0)

    # ------------------------------------------------------------ forward
    def _forward(self, field, x):
        geom = self.geom
        if geom.trace_field is not None:
            raise ValueError(f"Divergence mode 'forward' does not support {type(geom.manifold).__name__}; use mode='reverse'")
        if self.kind == "exact":
            basis = _basis(geom, x)

            def column(e):
                return jvp(field, (x,), (e.expand_as(x),))

            # J e_i for every ambient basis vector in one batched pass: (D, batch, *point_shape);
            # P_x is applied outside vmap (manifold code need not support batching rules).
            out, cols = vmap(column, in_dims=0, out_dims=(None, 0))(basis)
            tr = _point_dot(basis.expand_as(cols).flatten(0, 1), geom.trace_proju(x, cols).flatten(0, 1))
            tr = tr.reshape(basis.shape[0], x.shape[0]).sum(0)
        else:
            out, jv = jvp(field, (x,), (self.eps,))
            tr = _point_dot(self.eps, geom.trace_proju(x, jv))
        if geom.has_volume_density:
            tr = tr + jvp(geom.log_volume_density, (x,), (out,))[1]
        return out, tr


def draw_probe(kind: str, like: torch.Tensor, generator: Optional[torch.Generator]) -> Optional[torch.Tensor]:
    """The Hutchinson probe: standard normal, or Rademacher (+-1 with probability 1/2)."""
    if kind == "exact":
        return None
    # drawn on the generator's device (a seeded CPU generator gives the same probe on every device)
    dev = generator.device if generator is not None else like.device
    if kind == "hutchinson":
        return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=dev).to(like.device)
    bits = torch.randint(0, 2, like.shape, generator=generator, device=dev)
    return (2 * bits - 1).to(dtype=like.dtype, device=like.device)


def divergence(
    field: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    manifold=None,
    *,
    kind: str = "exact",
    generator: Optional[torch.Generator] = None,
    mode: str = "reverse",
) -> torch.Tensor:
    """Riemannian divergence of ``x -> proju(x, field(x))`` at ``x``, shape ``(batch,)`` (see module docstring)."""
    geom = Geometry(manifold, x, "x")
    div = Divergence(geom, kind, draw_probe(kind, x, generator), mode)
    return div(lambda y: geom.proju(y, field(y)), x)[1]
