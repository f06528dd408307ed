"""Checkpoints: atomic writes, a format version, and clear errors for bad files."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "save_checkpoint", "load_checkpoint", "eval_weights"]

CHECKPOINT_FORMAT = "geoflow-checkpoint"
CHECKPOINT_VERSION = 1
_REQUIRED = ("format", "version", "model", "config", "step")


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically.

    The dict is saved to a temporary file in the same folder, flushed and fsync'ed, then renamed
    over ``path`` (``os.replace`` is atomic on POSIX and Windows).  If anything fails (a full
    disk, a kill), the previous file at ``path`` is left intact and the temporary file removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = dict(state)
    state.setdefault("format", CHECKPOINT_FORMAT)
    state.setdefault("version", CHECKPOINT_VERSION)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise OSError(
                exc.errno,
                f"could not write checkpoint {str(path)!r}: {exc.strerror or exc}; "
                "the previous checkpoint at that path is intact (free some space and run the same command again)",
            ) from exc
        raise
    return path


def load_checkpoint(path: str | os.PathLike, *, map_location="cpu") -> dict:
    """Load a geoflow checkpoint, raising ``ValueError`` that names the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ValueError(
            f"checkpoint {str(path)!r} is truncated or not a torch file ({type(exc).__name__}: {exc}); "
            "delete it to start afresh, or point at another checkpoint"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{str(path)!r} is not a geoflow checkpoint (no format tag {CHECKPOINT_FORMAT!r})")
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {str(path)!r} has format version {state.get('version')!r}; this geoflow reads version {CHECKPOINT_VERSION}"
        )
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise ValueError(f"checkpoint {str(path)!r} lacks the keys {missing}")
    return state


def eval_weights(model, state: dict, ema_decay: float):
    """The module to evaluate a checkpoint with, in eval mode: ``model`` carrying the checkpoint's
    EMA average when ``state`` has one (the EMA's own copy of ``model`` is returned), else its
    raw weights.  Torch's errors for weights that do not fit ``model`` propagate (``RuntimeError``,
    ``KeyError``)."""
    if state.get("ema") is not None:
        from ..nn import EMA

        ema = EMA(model, ema_decay)
        ema.load_state_dict(state["ema"])
        model = ema.module
    else:
        model.load_state_dict(state["model"])
    return model.eval()
