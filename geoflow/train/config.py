"""Training configuration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["TrainConfig"]

_SCHEDULERS = ("condot", "cosine")
_METHODS = ("euler", "midpoint", "rk4")


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in every checkpoint).

    Attributes:
        dataset: a name from ``geoflow.data.available_datasets()``.
        steps: optimisation steps.
        batch_size: points per step.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup: linear warm-up steps, then cosine decay to ``lr * min_lr_ratio``.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        grad_clip: maximum gradient norm (0 disables clipping).
        ema_decay: EMA factor of the weights used for evaluation (0 disables EMA).
        hidden, depth, time_dim, activation: the MLP velocity field.
        scheduler: "condot" or "cosine" (the geodesic path's kappa_t).
        eval_every: steps between validation NLL evaluations (and checkpoints).
        val_points: validation points used for the NLL during training (0: all).
        nll_method, nll_steps: ODE solver for likelihoods.
        seed: seeds the split, the initialisation and every random draw of training.
        out: output folder (``last.pt``, ``best.pt``, ``metrics.json``, plots).
        n_samples: size of synthetic datasets (None: their default).
    """

    dataset: str = "volcano"
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 200
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    hidden: int = 256
    depth: int = 5
    time_dim: int = 64
    activation: str = "silu"
    scheduler: str = "condot"
    eval_every: int = 500
    val_points: int = 2000
    nll_method: str = "rk4"
    nll_steps: int = 30
    seed: int = 0
    out: str = "runs/volcano"
    n_samples: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("steps", "batch_size", "hidden", "depth", "time_dim", "eval_every", "nll_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {v!r}")
        for name in ("warmup", "val_points", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"TrainConfig.{name} must be a non-negative integer, got {v!r}")
        if not (self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if not (0 <= self.ema_decay < 1):
            raise ValueError(f"TrainConfig.ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("TrainConfig.grad_clip and weight_decay must be >= 0")
        if self.scheduler not in _SCHEDULERS:
            raise ValueError(f"TrainConfig.scheduler must be one of {_SCHEDULERS}, got {self.scheduler!r}")
        if self.nll_method not in _METHODS:
            raise ValueError(f"TrainConfig.nll_method must be one of {_METHODS}, got {self.nll_method!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        return cls(**d)
