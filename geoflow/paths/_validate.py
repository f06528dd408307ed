"""Argument checks shared by the paths."""

from __future__ import annotations

import torch


def check_pair(x0, x1, t, ndim, *, finite: bool = True):
    """Validate a batch of pairs and times; return ``t`` as a tensor of shape ``(batch,)``.

    ``ndim`` is the number of trailing point dimensions (None: all but the first).  With
    ``finite`` the points are also checked for NaN and inf (one pass over each).
    """
    for name, v in (("x0", x0), ("x1", x1)):
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(v).__name__}")
        if not v.is_floating_point():
            raise TypeError(f"`{name}` must have a floating dtype, got {v.dtype}")
    if x0.device != x1.device:
        raise ValueError(f"`x0` and `x1` must be on the same device, got {x0.device} and {x1.device}")
    if x0.shape != x1.shape:
        raise ValueError(f"`x0` and `x1` must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    if x0.dtype != x1.dtype:
        raise TypeError(f"`x0` and `x1` must have the same dtype, got {x0.dtype} and {x1.dtype}")
    if x0.dim() < 1:
        raise ValueError("`x0` must have a batch dimension")
    if ndim is not None and x0.dim() < ndim + 1:
        raise ValueError(f"`x0` must have shape (batch, *point_shape) with {ndim} point dims, got {tuple(x0.shape)}")
    batch = x0.shape[0]
    if batch == 0:
        raise ValueError(f"`x0` and `x1` must hold at least one pair (batch >= 1), got shape {tuple(x0.shape)}")
    if isinstance(t, torch.Tensor) and t.device != x0.device:
        raise ValueError(f"`t` must be on the device of `x0` ({x0.device}), got {t.device}")
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"`t` must have shape (batch,) = ({batch},), got {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.to(x0.dtype)
    lo, hi = torch.aminmax(t.detach())
    lo, hi = float(lo), float(hi)
    if not (lo >= 0.0 and hi <= 1.0):  # NaN fails both comparisons
        raise ValueError(f"`t` must lie in [0, 1] (and not be NaN), got values in [{lo}, {hi}]")
    if finite and not bool(torch.isfinite(x0.detach()).all() & torch.isfinite(x1.detach()).all()):
        for name, v in (("x0", x0), ("x1", x1)):
            bad = int((~torch.isfinite(v.detach())).sum())
            if bad:
                raise ValueError(f"`{name}` contains {bad} NaN or inf entries; points must be finite")
    return t.to(x0.dtype)


def check_on_manifold(manifold, x0: torch.Tensor, x1: torch.Tensor, where: str = "GeodesicPath.sample") -> None:
    """Raise ``ValueError`` naming ``x0`` or ``x1`` when a point is off ``manifold`` (or NaN/inf).

    One ``check_point`` call on both stacked (the common, valid case); only on failure are they
    checked one by one to say which is off and by how much.
    """
    try:
        manifold.check_point(torch.stack((x0.detach(), x1.detach())))
    except ValueError:
        for name, x in (("x0", x0), ("x1", x1)):
            try:
                manifold.check_point(x.detach())
            except ValueError as exc:
                msg = str(exc).replace("`x`", f"`{name}`", 1)
                raise ValueError(f"{where}: {msg}") from None
        raise


def check_path_args(name: str, manifold, scheduler):
    """Validate the (manifold, scheduler) of a conditional path; returns the scheduler (CondOT if None).

    The scheduler must interpolate from the base to the data: kappa_0 = 0 and kappa_1 = 1.
    """
    from manifolds import Manifold

    from .schedulers import CondOTScheduler, Scheduler

    if not isinstance(manifold, Manifold):
        raise TypeError(f"`manifold` must be a manifolds.Manifold, got {type(manifold).__name__}")
    scheduler = CondOTScheduler() if scheduler is None else scheduler
    if not isinstance(scheduler, Scheduler):
        raise TypeError(f"`scheduler` must be a geoflow.paths.Scheduler, got {type(scheduler).__name__}")
    k, _ = scheduler.kappa(torch.tensor([0.0, 1.0], dtype=torch.float64))
    if abs(float(k[0])) > 1e-6 or abs(float(k[1]) - 1) > 1e-6:
        raise ValueError(
            f"{name} needs a scheduler with alpha_0 = 0 and alpha_1 = 1, got {scheduler!r} with "
            f"alpha_0 = {float(k[0]):.3g}, alpha_1 = {float(k[1]):.3g}; use CondOTScheduler(), CosineScheduler() "
            "or PolynomialScheduler(n)"
        )
    return scheduler
