"""``sample``: integrate dx/dt = v(x, t) from t0 to t1, on R^n with torchdiffeq or on a manifold."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torchdiffeq

from ._impl_common import (
    FIXED_GRID_METHODS,
    MANIFOLD_METHODS,
    TRANSPORTS,
    CheckedVelocity,
    Geometry,
    check_choice,
    check_method,
    check_requires_grad,
    check_steps,
    check_time,
    check_tol,
    check_velocity,
    check_velocity_matches,
    need_grad,
    time_grid,
    where_ode,
)
from ._impl_steppers import integrate_fixed


def odeint_times(method: str, grid: list[float], return_path: bool, like: torch.Tensor) -> torch.Tensor:
    """Times handed to torchdiffeq: the whole grid for fixed-grid methods or when the path is wanted."""
    if method in FIXED_GRID_METHODS or return_path:
        return torch.tensor(grid, dtype=like.dtype, device=like.device)
    return torch.tensor([grid[0], grid[-1]], dtype=like.dtype, device=like.device)


def sample(
    velocity: Callable,
    x0: torch.Tensor,
    manifold=None,
    *,
    method: str = "rk4",
    steps: int = 100,
    t0: float = 0.0,
    t1: float = 1.0,
    cond=None,
    return_path: bool = False,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    transport: str = "dlog",
    requires_grad: Optional[bool] = None,
):
    """Solve the flow ODE dx/dt = v(x, t) from ``t0`` to ``t1`` starting at ``x0``.

    .. math:: x_{t_1} = x_{t_0} + \\int_{t_0}^{t_1} v(x_t, t)\\, dt

    (Chen et al. 2018, "Neural Ordinary Differential Equations"; on manifolds as in Chen &
    Lipman 2023, "Flow Matching on General Geometries").

    * Flat space (``manifold`` None or :class:`manifolds.Euclidean`): ``torchdiffeq.odeint``
      with any of its methods; fixed-grid ones (``euler``, ``midpoint``, ``rk4`` (torchdiffeq's
      3/8 rule), ``heun2``, ``heun3``, ``explicit_adams``, ``implicit_adams``, ``fixed_adams``)
      step on the grid of ``steps + 1`` evenly spaced times; adaptive ones (``dopri5``,
      ``dopri8``, ``bosh3``, ``fehlberg2``, ``adaptive_heun``) control the step with
      ``atol``/``rtol`` (``steps`` then only sets the reported times of ``return_path``).
    * Other manifolds, ``euler``/``midpoint``/``rk4``: geometric steppers that move with
      ``manifold.expmap``; stage vectors computed at intermediate points are brought back to
      the current point's tangent space (``transport``) before they are combined, see
      :mod:`geoflow.solvers._impl_steppers`.  Measured orders on S^2 with the default
      ``transport="dlog"``: 1, 2 and 4.
    * Other manifolds, any other torchdiffeq method: the projected ambient ODE
      dy/dt = proju(pi(y), v(pi(y), t)) with pi = ``manifold.projx`` is integrated by
      torchdiffeq and every returned point is projected with ``projx``.  The error control
      then acts on ambient coordinates (for the torus: unwrapped angles).

    The velocity output is projected with ``proju`` (a no-op for a tangent field) and checked:
    wrong shape or NaN/inf raise ``ValueError`` naming the step and time.

    Args:
        velocity: callable ``velocity(x, t)`` (or ``velocity(x, t, cond=cond)`` when ``cond``
            is not None) with x of shape ``(batch, *point_shape)`` and t of shape ``(batch,)``,
            returning a tangent vector at x (same shape as x).
        x0: starting points, shape ``(batch, *point_shape)``, on the manifold.
        manifold: a :class:`manifolds.Manifold`, or None for flat space of any point shape.
        method: one of the names above (default ``"rk4"``).
        steps: number of steps (>= 1) of the fixed-step methods.
        t0, t1: start and end times; ``t1 < t0`` integrates backwards.  The time grid starts
            at ``t0`` and ends at ``t1`` exactly.
        cond: conditioning passed through to the velocity.
        return_path: also return the grid times and the points at every grid time.
        atol, rtol: tolerances of the adaptive methods.
        transport: ``"dlog"`` (default, keeps the classical order), ``"transp"``
            (``manifold.transp``) or ``"proju"``: how stage vectors are moved to the current point.
        requires_grad: keep the autograd graph through the solve.  None (default): only when
            grad mode is on and ``x0`` or ``cond`` requires grad (parameters of the velocity are
            not inspected, so a solve without ``torch.no_grad()`` does not store a graph).

    Returns:
        ``x1`` of shape ``(batch, *point_shape)``, or ``(times, path)`` with ``return_path``:
        times of shape ``(n_times,)`` and path of shape ``(n_times, batch, *point_shape)``,
        ``n_times = steps + 1``.
    """
    check_velocity(velocity)
    method = check_method(method)
    steps = check_steps(steps)
    t0, t1 = check_time("t0", t0), check_time("t1", t1)
    if t0 == t1:
        raise ValueError(f"`t0` and `t1` must differ, got t0 = t1 = {t0}")
    atol, rtol = check_tol("atol", atol), check_tol("rtol", rtol)
    transport = check_choice("transport", transport, TRANSPORTS)
    requires_grad = check_requires_grad(requires_grad)
    check_velocity_matches(velocity, x0, "x0")
    geom = Geometry(manifold, x0, "x0")
    call = CheckedVelocity(velocity, cond)
    grid = time_grid(t0, t1, steps)
    times = torch.tensor(grid, dtype=x0.dtype, device=x0.device)

    grad = need_grad(requires_grad, x0, cond)
    with torch.set_grad_enabled(grad):
        if not geom.flat and method in MANIFOLD_METHODS:

            def dynamics(x, t, where):
                v = geom.proju(x, call(x, t, where))
                call.check_finite(v, where)
                return v, None

            x, _, path = integrate_fixed(
                geom, dynamics, x0, grid, method, transport, return_path=return_path, create_graph=grad
            )
            if return_path:
                return times, torch.stack(path)
            return x

        def func(t, y):
            where = where_ode(method, t, grid)
            x = geom.projx(y)
            v = geom.proju(x, call(x, t, where))
            call.check_finite(v, where)
            return v

        ts = odeint_times(method, grid, return_path, x0)
        out = torchdiffeq.odeint(func, x0, ts, method=method, atol=atol, rtol=rtol)
        out = geom.projx(out)
        if return_path:
            return times, out
        return out[-1]
