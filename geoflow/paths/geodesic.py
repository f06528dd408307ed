"""Geodesic conditional paths on Riemannian manifolds (Chen & Lipman 2023)."""

from __future__ import annotations

import torch

from manifolds import Manifold
from manifolds.base import geodesic_and_velocity_jvp

from ._validate import check_on_manifold, check_pair, check_path_args
from .path_sample import PathSample
from .schedulers import Scheduler

__all__ = ["GeodesicPath", "geodesic_velocity_reference"]


def geodesic_velocity_reference(manifold: Manifold, x0, x1, t):
    """The generic reference (x_t, d gamma/dt): ``torch.func.jvp`` of ``manifold.geodesic`` in t.

    Any manifold with a differentiable ``geodesic`` gets a path from this; closed forms are
    tested against it.
    """
    return geodesic_and_velocity_jvp(manifold, x0, x1, t)


class GeodesicPath:
    """Geodesic conditional flow (Chen & Lipman 2023, "Flow Matching on General Geometries", eq. 9).

    .. math::
        x_t = \\exp_{x_0}(\\kappa_t \\log_{x_0} x_1), \\qquad
        \\dot x_t = \\dot\\kappa_t\\, \\Gamma_{x_0 \\to x_t} \\log_{x_0} x_1

    with kappa_t = alpha_t of the scheduler (kappa_0 = 0, kappa_1 = 1).  The velocity comes from
    ``manifold.geodesic_and_velocity`` (closed forms on Euclidean, Sphere, FlatTorus, hyperbolic,
    SO3, SPD and Product; a ``torch.func.jvp`` fallback for other manifolds, or with
    ``closed_form=False``).

    Args:
        manifold: a :class:`manifolds.Manifold`.
        scheduler: a scheduler with alpha_0 = 0 and alpha_1 = 1 (default CondOT: kappa_t = t).
        closed_form: use the manifold's closed form (default) or always the jvp reference.
        validate: check in :meth:`sample` that x0 and x1 lie on the manifold (``check_point``:
            finite, right shape, within tolerance) and raise ``ValueError`` naming the one that
            is off (default).  The check is a pass over both batches; ``validate=False`` skips it
            in hot loops whose points are known to be valid (data checked at load time, base
            samples from ``random_base``).  Shapes, dtypes, devices and t in [0, 1] are always
            checked.

    Shapes: x0, x1 ``(batch, *point_shape)``; t ``(batch,)``.
    """

    def __init__(
        self, manifold: Manifold, scheduler: Scheduler | None = None, *, closed_form: bool = True, validate: bool = True
    ):
        scheduler = check_path_args("GeodesicPath", manifold, scheduler)
        self.manifold = manifold
        self.scheduler = scheduler
        self.closed_form = bool(closed_form)
        if not isinstance(validate, bool):
            raise TypeError(f"`validate` must be a bool, got {validate!r}")
        self.validate = validate

    def __repr__(self) -> str:
        return f"GeodesicPath({self.manifold!r}, {self.scheduler!r})"

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
        """Draw x_t on the geodesic from x0 to x1 and its velocity dx_t (tangent at x_t)."""
        m = self.manifold
        t = check_pair(x0, x1, t, ndim=m.ndim, finite=False)
        ok, reason = m._check_shape(x0.shape, "x0")
        if not ok:
            raise ValueError(reason)
        if self.validate:
            check_on_manifold(m, x0, x1)
        kappa, d_kappa = self.scheduler.kappa(t)
        if self.closed_form:
            x_t, v = m.geodesic_and_velocity(x0, x1, kappa)
        else:
            x_t, v = geodesic_and_velocity_jvp(m, x0, x1, kappa)
        dx_t = d_kappa.reshape(d_kappa.shape + (1,) * m.ndim) * v
        return PathSample(x_t=x_t, dx_t=dx_t, t=t, x0=x0, x1=x1)
