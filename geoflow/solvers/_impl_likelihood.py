"""``log_likelihood``: exact log-density of a flow by the instantaneous change of variables."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torchdiffeq

from ._impl_common import (
    MANIFOLD_METHODS,
    TRANSPORTS,
    CheckedVelocity,
    Geometry,
    check_choice,
    check_method,
    check_requires_grad,
    check_steps,
    check_tol,
    check_velocity,
    check_velocity_matches,
    need_grad,
    time_grid,
    where_ode,
)
from ._impl_divergence import DIVERGENCES, Divergence, draw_probe
from ._impl_sample import odeint_times
from ._impl_steppers import integrate_fixed


def log_likelihood(
    velocity: Callable,
    x1: torch.Tensor,
    manifold,
    *,
    method: str = "rk4",
    steps: int = 100,
    divergence: str = "exact",
    generator: Optional[torch.Generator] = None,
    cond=None,
    return_x0: bool = False,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    transport: str = "dlog",
    requires_grad: Optional[bool] = None,
):
    """Log-density log p_1(x1) of the flow's pushforward of the base distribution.

    Integrates, from t = 1 back to t = 0, the state (x, delta) with

    .. math::
        \\frac{dx}{dt} = v(x, t), \\qquad \\frac{d\\delta}{dt} = \\operatorname{div}_g v(x, t),
        \\qquad \\log p_1(x_1) = \\log p_0(x_0) - \\int_0^1 \\operatorname{div}_g v(x_t, t)\\, dt
        = \\log p_0(x_0) - (\\delta(1) - \\delta(0))

    (instantaneous change of variables, Chen et al. 2018; Hutchinson trace estimator as in
    FFJORD, Grathwohl et al. 2019; on manifolds with the Riemannian divergence as in Chen &
    Lipman 2023).  log p_0 is ``manifold.base_log_prob`` (density w.r.t. the Riemannian
    volume; for ``manifold=None``: the standard normal over all non-batch dimensions), so the
    result is a density w.r.t. the Riemannian volume too.

    The divergence is basis free (see :mod:`geoflow.solvers._impl_divergence`):
    div_g v(x) = tr(P_x J_v(x)) + <grad log rho(x), v(x)>.  ``divergence="exact"`` computes
    the trace from one forward pass of the (projected) velocity and D = prod(point_shape)
    vector-Jacobian products, sum_i <J^T e_i, P_x e_i>; the Hutchinson estimates use one,
    eps^T J P_x eps with eps Gaussian (``"hutchinson"``) or +-1 (``"hutchinson-rademacher"``),
    drawn once per call from ``generator`` and fixed over the solve, so that the estimate of
    log p is unbiased for the discretised solve.  (``torch.func`` forward mode, a ``vmap`` of
    ``jvp`` over the basis, is kept as ``Divergence(mode="forward")``; on CPU with torch 2.13 it
    measured 2-4x slower, so reverse mode is the default.)

    Solvers: in flat space any torchdiffeq method on the joint state; on a manifold the
    ``euler``/``midpoint``/``rk4`` steppers of :func:`sample` on x, with delta advanced by the
    same tableau; other torchdiffeq methods integrate the projected ambient ODE (see
    :func:`sample`).

    Memory: with ``requires_grad`` None (default) the graph is kept only when grad mode is on
    and ``x1`` or ``cond`` requires grad; otherwise the solve runs under ``torch.no_grad()``,
    each divergence builds and frees its own small graph (``torch.enable_grad`` locally) and
    memory is flat in ``steps`` (tested over 1000 steps).  Pass ``requires_grad=True`` to train
    by maximum likelihood (the divergence is then built with ``create_graph=True``).

    Args:
        velocity: callable ``velocity(x, t[, cond=cond])`` as in :func:`sample`; its samples
            must be independent (the exact trace feeds one basis vector to the whole batch).
        x1: data points, shape ``(batch, *point_shape)``, on the manifold.
        manifold: a :class:`manifolds.Manifold`, or None for flat space with a N(0, I) base.
        method, steps, atol, rtol, transport: as in :func:`sample`.
        divergence: ``"exact"``, ``"hutchinson"`` or ``"hutchinson-rademacher"``.
        generator: random generator for the Hutchinson probe.
        cond: conditioning passed through to the velocity.
        return_x0: also return the base points x0 reached at t = 0.
        requires_grad: see above.

    Returns:
        ``log_p`` of shape ``(batch,)``, or ``(log_p, x0)`` with ``return_x0``.
    """
    check_velocity(velocity)
    method = check_method(method)
    steps = check_steps(steps)
    divergence = check_choice("divergence", divergence, DIVERGENCES)
    atol, rtol = check_tol("atol", atol), check_tol("rtol", rtol)
    transport = check_choice("transport", transport, TRANSPORTS)
    requires_grad = check_requires_grad(requires_grad)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}")
    check_velocity_matches(velocity, x1, "x1")
    geom = Geometry(manifold, x1, "x1")
    call = CheckedVelocity(velocity, cond)
    grad = need_grad(requires_grad, x1, cond)
    div = Divergence(geom, divergence, draw_probe(divergence, x1, generator), create_graph=grad)
    if geom.walk is not None and method not in MANIFOLD_METHODS:
        raise ValueError(
            f"log_likelihood on {type(manifold).__name__} needs a fixed-step method {list(MANIFOLD_METHODS)} "
            f"(its steps report the density jumps at mesh edges), got method={method!r}"
        )
    grid = time_grid(1.0, 0.0, steps)
    delta = torch.zeros(x1.shape[0], dtype=x1.dtype, device=x1.device)

    def dynamics(x, t, where):
        v, d = div(lambda y: geom.proju(y, call(y, t, where)), x)
        call.check_finite(v, where)
        call.check_finite(d, where, what="divergence of velocity")
        return v, d

    with torch.set_grad_enabled(grad):
        if not geom.flat and method in MANIFOLD_METHODS:
            x0, delta, _ = integrate_fixed(
                geom, dynamics, x1, grid, method, transport, extra=delta, create_graph=grad
            )
        else:

            def func(t, state):
                return dynamics(geom.projx(state[0]), t, where_ode(method, t, grid))

            ts = odeint_times(method, grid, False, x1)
            xs, ds = torchdiffeq.odeint(func, (x1, delta), ts, method=method, atol=atol, rtol=rtol)
            x0, delta = geom.projx(xs[-1]), ds[-1]
        # delta holds delta(0) - delta(1) = -int_0^1 div dt.
        log_p = geom.base_log_prob(x0) + delta
    if return_x0:
        return log_p, x0
    return log_p
