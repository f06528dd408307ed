"""Conditions of velocity networks: class labels or vectors, with a "null" condition for CFG.

One network learns p(x | y) and p(x) when training replaces y by a null condition with
probability p (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance").  geoflow's
conventions, shared by every velocity network:

* class labels (``num_classes = K``): ``cond`` is an int64 tensor ``(batch,)`` in
  ``[0, K]``; the extra label ``K`` is the null label.
* vectors (``cond_dim = D``): ``cond`` is ``(batch, D)`` (all present) or ``(batch, D + 1)``
  where the last column is a null flag in {0, 1}; the null condition is the zero vector with
  flag 1 (rows with flag 1 must be zero).
* ``cond=None`` means "null for the whole batch".
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["null_condition", "drop_condition", "ConditionalMixin"]


def _check_spec(num_classes, cond_dim) -> None:
    if num_classes is not None and cond_dim is not None:
        raise ValueError("give at most one of `num_classes` and `cond_dim`")
    for name, v in (("num_classes", num_classes), ("cond_dim", cond_dim)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"`{name}` must be a positive int or None, got {v!r}")
    if num_classes is None and cond_dim is None:
        raise ValueError("an unconditional model has no null condition (give `num_classes` or `cond_dim`)")


def null_condition(batch: int, *, num_classes: Optional[int] = None, cond_dim: Optional[int] = None,
                   device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The null condition for a batch: label ``num_classes``, or zeros with null flag 1.

    Shapes: ``(batch,)`` int64 for labels, ``(batch, cond_dim + 1)`` of ``dtype`` for vectors.
    """
    _check_spec(num_classes, cond_dim)
    if num_classes is not None:
        return torch.full((batch,), num_classes, dtype=torch.long, device=device)
    out = torch.zeros(batch, cond_dim + 1, dtype=dtype, device=device)
    out[:, -1] = 1
    return out


def drop_condition(cond: torch.Tensor, p: float, *, num_classes: Optional[int] = None,
                   cond_dim: Optional[int] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Replace each row of ``cond`` by the null condition with probability ``p``.

    Labels: dropped rows get label ``num_classes``.  Vectors: the result has the null-flag
    column, ``[cond * (1 - m), m]`` with m ~ Bernoulli(p) per row.  One uniform number per row
    is drawn from ``generator`` (also when ``p`` is 0 or 1, so the random stream does not
    depend on ``p``).

    Shapes: ``cond`` ``(batch,)`` (labels) or ``(batch, cond_dim)`` / ``(batch, cond_dim + 1)``
    (vectors) -> labels ``(batch,)`` or vectors ``(batch, cond_dim + 1)``.
    """
    _check_spec(num_classes, cond_dim)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"`p` (the condition-drop probability) must lie in [0, 1], got {p!r}")
    if not isinstance(cond, torch.Tensor):
        raise TypeError(f"`cond` must be a torch.Tensor, got {type(cond).__name__}")
    batch = cond.shape[0] if cond.dim() > 0 else 0
    u = torch.rand(batch, generator=generator, device=cond.device if generator is None else generator.device)
    drop = (u < float(p)).to(cond.device)
    if num_classes is not None:
        labels = _check_labels(cond, num_classes, batch)
        return torch.where(drop, torch.full_like(labels, num_classes), labels)
    vec = _check_vectors(cond, cond_dim, batch, cond.dtype if cond.is_floating_point() else torch.float32)
    keep = (~drop).to(vec.dtype)[:, None]
    return torch.cat([vec[:, :-1] * keep, torch.maximum(vec[:, -1:], 1 - keep)], dim=-1)


def _check_labels(cond, num_classes: int, batch: int) -> torch.Tensor:
    """``cond`` as int64 labels ``(batch,)`` in ``[0, num_classes]`` (``num_classes`` = null), or ValueError."""
    if not isinstance(cond, torch.Tensor):
        cond = torch.as_tensor(cond)
    if cond.dim() == 0:
        cond = cond.expand(batch)
    if cond.is_floating_point() or cond.is_complex() or cond.dtype == torch.bool:
        raise TypeError(f"class-label `cond` must be an integer tensor, got dtype {cond.dtype}")
    if cond.shape != (batch,):
        raise ValueError(f"class-label `cond` must have shape ({batch},), got {tuple(cond.shape)}")
    if batch and (int(cond.min()) < 0 or int(cond.max()) > num_classes):
        raise ValueError(
            f"class labels must lie in [0, {num_classes - 1}] (or {num_classes}, the null label), "
            f"got values in [{int(cond.min())}, {int(cond.max())}]"
        )
    return cond.long()


def _check_vectors(cond, cond_dim: int, batch: int, dtype: torch.dtype) -> torch.Tensor:
    """``cond`` as ``(batch, cond_dim + 1)`` vectors with the null-flag column, or ValueError."""
    if not isinstance(cond, torch.Tensor) or not cond.is_floating_point():
        got = cond.dtype if isinstance(cond, torch.Tensor) else type(cond).__name__
        raise TypeError(f"vector `cond` must be a floating tensor, got {got}")
    if cond.dim() == 1:
        cond = cond.expand(batch, cond.shape[0])
    if cond.dim() != 2 or cond.shape[0] != batch or cond.shape[1] not in (cond_dim, cond_dim + 1):
        raise ValueError(
            f"vector `cond` must have shape ({batch}, {cond_dim}) or ({batch}, {cond_dim + 1}) (with the null flag), "
            f"got {tuple(cond.shape)}"
        )
    if not bool(torch.isfinite(cond).all()):
        raise ValueError("vector `cond` contains NaN or inf")
    cond = cond.to(dtype)
    if cond.shape[1] == cond_dim:
        return torch.cat([cond, cond.new_zeros(batch, 1)], dim=-1)
    flag = cond[:, -1]
    if not bool(((flag == 0) | (flag == 1)).all()):
        raise ValueError("the null flag (last column of `cond`) must be 0 or 1")
    if bool((cond[:, :-1].abs().amax(-1) * flag).gt(0).any()):
        raise ValueError("rows of `cond` with null flag 1 must be zero (the null condition is zeros + flag 1)")
    return cond


class ConditionalMixin:
    """``null_cond`` / ``drop_cond`` for a network with attributes ``num_classes`` and ``cond_dim``.

    :class:`geoflow.guidance.CFGVelocity` calls ``model.null_cond(batch, ...)`` to build the null
    condition; the trainer calls ``model.drop_cond(cond, p, generator=...)``.
    """

    num_classes: Optional[int] = None
    cond_dim: Optional[int] = None

    @property
    def is_conditional(self) -> bool:
        return self.num_classes is not None or self.cond_dim is not None

    def null_cond(self, batch: int, *, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The null condition for ``batch`` rows (see :func:`null_condition`)."""
        return null_condition(batch, num_classes=self.num_classes, cond_dim=self.cond_dim, device=device, dtype=dtype)

    def drop_cond(self, cond: torch.Tensor, p: float, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``cond`` with each row replaced by the null condition with probability ``p``."""
        return drop_condition(cond, p, num_classes=self.num_classes, cond_dim=self.cond_dim, generator=generator)

    def _embed_cond_input(self, cond, batch: int, device, dtype) -> Optional[torch.Tensor]:
        """Validated condition: labels ``(batch,)`` int64 or vectors ``(batch, cond_dim + 1)``; None if unconditional."""
        if not self.is_conditional:
            if cond is not None:
                raise ValueError("this model is unconditional (no `num_classes` or `cond_dim`) but got `cond`")
            return None
        if cond is None:
            return self.null_cond(batch, device=device, dtype=dtype)
        if self.num_classes is not None:
            return _check_labels(cond, self.num_classes, batch).to(device)
        return _check_vectors(cond, self.cond_dim, batch, dtype).to(device)
