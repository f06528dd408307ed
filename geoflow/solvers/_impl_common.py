"""Argument validation, the geometry adapter and the checked velocity call shared by the solvers."""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Optional

import torch

from manifolds import Euclidean
from manifolds.base import Manifold

#: Steppers that move along the manifold with ``expmap`` (tableaus in ``_impl_steppers``).
MANIFOLD_METHODS = ("euler", "midpoint", "rk4")
#: torchdiffeq methods integrating on a fixed grid (the grid is the solver's time grid).
FIXED_GRID_METHODS = ("euler", "midpoint", "rk4", "heun2", "heun3", "explicit_adams", "implicit_adams", "fixed_adams")
#: torchdiffeq methods with step-size control (``atol``/``rtol``).
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
#: Every method name accepted by :func:`sample` and :func:`log_likelihood`.
METHODS = FIXED_GRID_METHODS + ADAPTIVE_METHODS
#: How stage vectors computed at intermediate points are brought back to the current point.
TRANSPORTS = ("dlog", "transp", "proju")


def check_method(method) -> str:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"`method` must be one of {list(METHODS)}, got {method!r}")
    return method


def check_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}")
    return value


def check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"`steps` must be an int, got {type(steps).__name__} {steps!r}")
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}")
    return int(steps)


def check_time(name: str, value) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}")
    return value


def check_tol(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a positive float, got {type(value).__name__} {value!r}")
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"`{name}` must be a finite number > 0, got {value}")
    return value


def check_requires_grad(value) -> Optional[bool]:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"`requires_grad` must be None, True or False, got {value!r}")
    return value


def check_velocity(velocity) -> None:
    if not callable(velocity):
        raise TypeError(f"`velocity` must be callable as velocity(x, t[, cond=...]), got {type(velocity).__name__}")


def check_velocity_matches(velocity, x: torch.Tensor, name: str) -> None:
    """A torch module whose floating parameters differ in device or dtype from ``x``: say so, before torch does."""
    if not isinstance(velocity, torch.nn.Module) or not isinstance(x, torch.Tensor):
        return
    p = next((p for p in velocity.parameters() if p.is_floating_point()), None)
    if p is None:
        return
    if p.device != x.device:
        raise ValueError(f"the velocity's parameters are on {p.device} but `{name}` is on {x.device}; move one with .to()")
    if p.dtype != x.dtype and x.is_floating_point():
        raise TypeError(
            f"the velocity's parameters have dtype {p.dtype} but `{name}` has dtype {x.dtype}; "
            f"use velocity.to({x.dtype}) or pass `{name}` as {p.dtype}"
        )


def need_grad(requires_grad: Optional[bool], *tensors) -> bool:
    """Whether to keep the autograd graph: the flag if given, else grad mode on and an input requiring grad.

    Parameters of the velocity are deliberately *not* inspected: evaluating a trained model
    without ``torch.no_grad()`` must not keep a graph over every step (memory would grow with
    ``steps``).  Pass ``requires_grad=True`` to differentiate with respect to parameters.
    """
    if requires_grad is not None:
        return requires_grad
    if not torch.is_grad_enabled():
        return False
    return any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def time_grid(t0: float, t1: float, steps: int) -> list[float]:
    """``steps + 1`` evenly spaced times from ``t0`` to ``t1``, both ends exact."""
    grid = [t0 + (t1 - t0) * k / steps for k in range(steps + 1)]
    grid[0], grid[-1] = t0, t1
    return grid


class Geometry:
    """What the solvers need from a manifold, with ``None`` meaning flat space of any point shape.

    ``None`` behaves as R^D with the standard normal base distribution over all non-batch
    dimensions (so images of shape ``(C, H, W)`` work without a manifold object).
    """

    def __init__(self, manifold, x: torch.Tensor, name: str):
        if manifold is not None:
            for attr in ("projx", "proju", "base_log_prob"):
                if not callable(getattr(manifold, attr, None)):
                    raise TypeError(
                        f"`manifold` must be None or a manifolds.Manifold (with projx, proju, expmap, logmap, "
                        f"base_log_prob), got {type(manifold).__name__} without `{attr}`"
                    )
        self.manifold = manifold
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"`{name}` must have a floating dtype, got {x.dtype}")
        if manifold is None:
            if x.dim() < 1:
                raise ValueError(f"`{name}` must have shape (batch, *point_shape), got a 0-d tensor")
            self.point_shape = tuple(x.shape[1:])
        else:
            ps = getattr(manifold, "point_shape", None)
            if ps is None:
                ps = tuple(x.shape[x.dim() - int(getattr(manifold, "ndim", 1)) :])
            self.point_shape = tuple(ps)
            if x.dim() != 1 + len(self.point_shape) or tuple(x.shape[1:]) != self.point_shape:
                raise ValueError(
                    f"`{name}` must have shape (batch, *point_shape) = (batch, {', '.join(map(str, self.point_shape))}) "
                    f"for {manifold!r}, got {tuple(x.shape)}"
                )
        if x.shape[0] == 0:
            raise ValueError(f"`{name}` must hold at least one point (batch >= 1), got shape {tuple(x.shape)}")
        finite = torch.isfinite(x.detach())
        if not bool(finite.all()):
            raise ValueError(f"`{name}` contains {int((~finite).sum())} NaN or inf entries")
        if manifold is not None and callable(getattr(manifold, "check_point", None)):
            try:
                manifold.check_point(x.detach())
            except ValueError as exc:
                raise ValueError(str(exc).replace("`x`", f"`{name}`", 1)) from None
        #: Flat geometry: integrate with torchdiffeq directly, no projections.
        self.flat = manifold is None or isinstance(manifold, Euclidean)
        lvd = getattr(type(manifold), "log_volume_density", None) if manifold is not None else None
        #: Whether the volume density log rho is non-trivial (its gradient enters the divergence).
        self.has_volume_density = lvd is not None and lvd is not Manifold.log_volume_density
        self.dim_ambient = math.prod(self.point_shape)
        #: The projector in the divergence's trace: ``manifold.divergence_proju`` where a manifold
        #: has one (Mesh: the face plane, the surface's true tangent plane), else ``proju``.
        tp = getattr(manifold, "divergence_proju", None) if manifold is not None else None
        self._trace_proju = tp if callable(tp) else None
        #: The field whose trace the divergence takes, from the stepping field: ``manifold.face_velocity``
        #: (Mesh: the velocity inside the face), else the field itself.
        fv = getattr(manifold, "face_velocity", None) if manifold is not None else None
        self.trace_field = fv if callable(fv) else None
        #: Steps that report a log-density jump (Mesh.walk: flux ratios at edge crossings).
        wk = getattr(manifold, "walk", None) if manifold is not None else None
        self.walk = wk if callable(wk) else None

    def require_expmap(self, method: str) -> None:
        """The geometric steppers move with expmap: say what to do on a manifold without one."""
        if not self.flat and not callable(getattr(self.manifold, "expmap", None)):
            raise ValueError(
                f"method {method!r} moves with expmap, which {self.manifold!r} does not have; use an adaptive "
                f"method such as 'dopri5' (projected ambient ODE)"
            )

    @property
    def has_logmap(self) -> bool:
        return self.flat or callable(getattr(self.manifold, "logmap", None))

    # geometry with the flat shortcuts
    def proju(self, x, u):
        return u if self.flat else self.manifold.proju(x, u)

    def projx(self, x):
        return x if self.flat else self.manifold.projx(x)

    def trace_proju(self, x, u):
        """P_x of the divergence tr(P_x J): ``divergence_proju`` of the manifold if it has one, else ``proju``."""
        return self._trace_proju(x, u) if self._trace_proju is not None else self.proju(x, u)

    def expmap(self, x, u):
        return x + u if self.flat else self.manifold.expmap(x, u)

    def logmap(self, x, y):
        return y - x if self.flat else self.manifold.logmap(x, y)

    def transp(self, x, y, v):
        if self.flat:
            return v
        tr = getattr(self.manifold, "transp", None)
        return tr(x, y, v) if callable(tr) else self.manifold.proju(y, v)

    def log_volume_density(self, x):
        return self.manifold.log_volume_density(x)

    def base_log_prob(self, x):
        if self.manifold is None:
            flat = x.reshape(x.shape[0], -1)
            return -0.5 * (flat * flat).sum(-1) - 0.5 * flat.shape[-1] * math.log(2 * math.pi)
        return self.manifold.base_log_prob(x)


class CheckedVelocity:
    """Calls ``velocity(x, t[, cond=cond])`` with ``t`` of shape ``(batch,)`` and checks the output's shape.

    Finiteness is checked by :meth:`check_finite` on concrete tensors (outside ``torch.func``
    transforms, where a data-dependent ``bool`` is not allowed).
    """

    def __init__(self, velocity: Callable, cond: Any):
        self.velocity = velocity
        self.cond = cond

    def __call__(self, x: torch.Tensor, t, where: Callable[[], str]) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(()).expand(x.shape[0])
        v = self.velocity(x, t) if self.cond is None else self.velocity(x, t, cond=self.cond)
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"velocity must return a torch.Tensor, got {type(v).__name__} at {where()}")
        if v.shape != x.shape:
            raise ValueError(
                f"velocity returned shape {tuple(v.shape)} at {where()}, expected x.shape = {tuple(x.shape)} "
                "(a tangent vector at each point)"
            )
        if v.dtype != x.dtype:
            v = v.to(x.dtype)
        return v

    @staticmethod
    def check_finite(v: torch.Tensor, where: Callable[[], str], what: str = "velocity") -> None:
        finite = torch.isfinite(v.detach())
        if not bool(finite.all()):
            raise ValueError(f"{what} returned {int((~finite).sum())} NaN or inf values at {where()}")


def where_fixed(k: int, steps: int, t: float) -> Callable[[], str]:
    return lambda: f"step {k + 1} of {steps} (t = {t:.6g})"


def where_ode(method: str, t, grid: Optional[list[float]] = None) -> Callable[[], str]:
    """Describes an evaluation inside torchdiffeq; on a fixed grid it names the step too."""

    def describe():
        tf = float(t)
        if grid is not None and method in FIXED_GRID_METHODS:
            steps = len(grid) - 1
            lo, hi = min(grid[0], grid[-1]), max(grid[0], grid[-1])
            k = min(int((tf - lo) / (hi - lo) * steps), steps - 1) if hi > lo else 0
            if grid[0] > grid[-1]:
                k = steps - 1 - k
            return f"step {k + 1} of {steps} (t = {tf:.6g}, torchdiffeq method {method!r})"
        return f"t = {tf:.6g} (torchdiffeq method {method!r})"

    return describe
