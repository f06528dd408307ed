"""Bit-for-bit comparison of saved training states (shared by the fault and distributed tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def flatten_state(obj, prefix=""):
    """Flatten nested state dicts / lists into {dotted name: tensor-or-value}."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten_state(v, f"{prefix}{k}."))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flatten_state(v, f"{prefix}{i}."))
    else:
        out[prefix.rstrip(".")] = obj
    return out


def assert_states_equal(a, b, what):
    """The two states hold the same keys and bit-identical values (tensors: same dtype too)."""
    fa, fb = flatten_state(a), flatten_state(b)
    assert fa.keys() == fb.keys(), what
    for k in fa:
        x, y = fa[k], fb[k]
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and torch.equal(x, y), f"{what}: {k} differs"
        elif isinstance(x, np.ndarray):
            assert np.array_equal(x, y), f"{what}: {k} differs"
        else:
            assert x == y, f"{what}: {k}: {x!r} != {y!r}"


def fit_interrupted(trainer, step: int, monkeypatch) -> None:
    """Run ``trainer.fit()`` and kill it (KeyboardInterrupt, as a SIGTERM between checkpoints) when it reaches ``step``."""
    cls = type(trainer)
    orig = cls.train_step

    def killed(self):
        if self.step == step:
            raise KeyboardInterrupt
        return orig(self)

    monkeypatch.setattr(cls, "train_step", killed)
    try:
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()
    finally:
        monkeypatch.setattr(cls, "train_step", orig)
