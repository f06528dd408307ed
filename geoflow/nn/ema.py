"""Exponential moving average of model weights."""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA(nn.Module):
    """Exponential moving average of a model's parameters (Polyak averaging).

    theta_ema <- decay * theta_ema + (1 - decay) * theta after each :meth:`update`; buffers
    are copied.  ``ema.module`` is the averaged copy, usable like the model itself.

    Args:
        model: the model being trained.
        decay: averaging factor in [0, 1) (default 0.999).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        super().__init__()
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"`decay` must lie in [0, 1), got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        ema_p = list(self.module.parameters())
        p = [q.detach() for q in model.parameters()]
        torch._foreach_lerp_(ema_p, p, 1.0 - self.decay)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def swapped_into(self, model: nn.Module):
        """Temporarily load the averaged weights into ``model`` (restored on exit)."""
        backup = copy.deepcopy(model.state_dict())
        model.load_state_dict(self.module.state_dict())
        try:
            yield model
        finally:
            model.load_state_dict(backup)
