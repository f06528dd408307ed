"""The coupling protocol, its argument checks, and the independent coupling."""

from __future__ import annotations

import numbers
from typing import Optional

import torch

__all__ = ["Coupling", "IndependentCoupling"]


def check_points(name: str, x, *, finite: bool = True) -> torch.Tensor:
    """``x`` must be a floating tensor of shape (batch, *point_shape), batch >= 1, finite when asked."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of shape (batch, *point_shape), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must have a floating dtype, got {x.dtype}")
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"`{name}` must have shape (batch, *point_shape) with batch >= 1, got {tuple(x.shape)}")
    if finite:
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise ValueError(f"`{name}` contains {bad} NaN or inf entries")
    return x


def check_pair(x0, x1, cond=None, *, same_batch: bool = False, finite: bool = True):
    """Validate a batch pair (and its condition); see :meth:`Coupling.__call__` for the shapes."""
    check_points("x0", x0, finite=finite)
    check_points("x1", x1, finite=finite)
    if x0.shape[1:] != x1.shape[1:]:
        raise ValueError(
            f"`x0` and `x1` must have the same point shape, got {tuple(x0.shape[1:])} and {tuple(x1.shape[1:])}"
        )
    if x0.dtype != x1.dtype or x0.device != x1.device:
        raise TypeError(
            f"`x0` and `x1` must share dtype and device, got {x0.dtype}/{x0.device} and {x1.dtype}/{x1.device}"
        )
    if same_batch and x0.shape[0] != x1.shape[0]:
        raise ValueError(f"`x0` and `x1` must have the same batch size here, got {x0.shape[0]} and {x1.shape[0]}")
    check_cond(cond, x1.shape[0])


def check_cond(cond, batch: int) -> None:
    if cond is None:
        return
    if not isinstance(cond, torch.Tensor):
        raise TypeError(f"`cond` must be None or a torch.Tensor with one entry per x1, got {type(cond).__name__}")
    if cond.dim() < 1 or cond.shape[0] != batch:
        raise ValueError(
            f"`cond` must have shape (batch, ...) with batch = {batch} (that of x1), got {tuple(cond.shape)}"
        )


def check_real(name: str, value, *, positive: bool = False, nonnegative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    ok = value == value and abs(value) != float("inf")
    if positive:
        ok = ok and value > 0
    if nonnegative:
        ok = ok and value >= 0
    if not ok:
        cond = " > 0" if positive else (" >= 0" if nonnegative else "")
        raise ValueError(f"`{name}` must be a finite number{cond}, got {value}")
    return value


def check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return int(value)


def check_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}")
    return value


def check_generator(generator) -> Optional[torch.Generator]:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be None or a torch.Generator, got {type(generator).__name__}")
    return generator


def pack(x0: torch.Tensor, x1: torch.Tensor, cond):
    """The return convention: ``(x0, x1)`` without a condition, ``(x0, x1, cond)`` with one."""
    return (x0, x1) if cond is None else (x0, x1, cond)


class Coupling:
    """A coupling of a batch of base samples x0 with a batch of data x1.

    A coupling is a callable ``coupling(x0, x1, cond=None)`` that returns the re-paired batch,
    which the trainer then joins with its conditional path (straight lines, or geodesics on a
    manifold).  Couplings only choose *which* x0 goes with *which* x1 (or, for
    :class:`PairedCoupling` and :class:`ReflowCoupling`, build x0 or x1); the loss is unchanged.

    Return convention: as many tensors as were given, ``(x0, x1)`` when ``cond`` is None (the
    ``(x0, x1) -> (x0, x1)`` contract of the design) and ``(x0, x1, cond)`` otherwise, where
    ``cond`` always follows x1 (entry k of the returned ``cond`` belongs to entry k of the
    returned ``x1``).

    Shapes:
        x0: (n, *point_shape); x1: (m, *point_shape); cond: (m, ...) or None.
    """

    def __call__(self, x0: torch.Tensor, x1: torch.Tensor, cond: Optional[torch.Tensor] = None):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        return ""


class IndependentCoupling(Coupling):
    """The independent coupling pi(x0, x1) = p0(x0) q(x1): the batch is returned unchanged.

    This is plain (I-)CFM (Lipman et al. 2023, "Flow Matching for Generative Modeling"; Tong et
    al. 2023 call it I-CFM).  Shapes are checked, values are not copied.

    Shapes:
        x0: (n, *point_shape); x1: (m, *point_shape); cond: (m, ...) or None.
    """

    def __call__(self, x0, x1, cond=None):
        check_pair(x0, x1, cond, finite=False)
        return pack(x0, x1, cond)
