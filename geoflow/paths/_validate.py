"""Argument checks shared by the paths."""

from __future__ import annotations

import torch


def check_pair(x0, x1, t, ndim):
    """Validate a batch of pairs and times; return ``t`` as a tensor of shape ``(batch,)``.

    ``ndim`` is the number of trailing point dimensions (None: all but the first).
    """
    for name, v in (("x0", x0), ("x1", x1)):
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(v).__name__}")
        if not v.is_floating_point():
            raise TypeError(f"`{name}` must have a floating dtype, got {v.dtype}")
    if x0.shape != x1.shape:
        raise ValueError(f"`x0` and `x1` must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    if x0.dtype != x1.dtype:
        raise TypeError(f"`x0` and `x1` must have the same dtype, got {x0.dtype} and {x1.dtype}")
    if x0.dim() < 1:
        raise ValueError("`x0` must have a batch dimension")
    batch = x0.shape[0] if ndim is None else None
    if ndim is not None:
        if x0.dim() < ndim + 1:
            raise ValueError(f"`x0` must have shape (batch, *point_shape) with {ndim} point dims, got {tuple(x0.shape)}")
        batch = x0.shape[0]
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"`t` must have shape (batch,) = ({batch},), got {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.to(x0.dtype)
    if t.numel():
        lo, hi = torch.aminmax(t.detach())
        lo, hi = float(lo), float(hi)
        if not (lo >= 0.0 and hi <= 1.0):  # NaN fails both comparisons
            raise ValueError(f"`t` must lie in [0, 1] (and not be NaN), got values in [{lo}, {hi}]")
    return t.to(x0.dtype)
