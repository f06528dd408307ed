"""Conditional flow matching losses."""

from __future__ import annotations

import torch

from manifolds import Manifold

from .paths import PathSample

__all__ = ["cfm_loss", "rcfm_loss"]


def _predict(model, sample: PathSample, cond):
    out = model(sample.x_t, sample.t) if cond is None else model(sample.x_t, sample.t, cond=cond)
    if not isinstance(out, torch.Tensor) or out.shape != sample.dx_t.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model output must have the shape of x_t {tuple(sample.dx_t.shape)}, got {got}")
    return out


def cfm_loss(model, sample: PathSample, *, cond=None) -> torch.Tensor:
    """Conditional flow matching loss (Lipman et al. 2023, eq. 9).

    .. math:: L = \\mathbb{E}\\, | v_\\theta(x_t, t) - \\dot x_t |^2

    The squared Euclidean norm is summed over all non-batch dimensions and averaged over the batch.
    """
    diff = _predict(model, sample, cond) - sample.dx_t
    return diff.pow(2).reshape(diff.shape[0], -1).sum(-1).mean()


def rcfm_loss(manifold: Manifold, model, sample: PathSample, *, cond=None) -> torch.Tensor:
    """Riemannian conditional flow matching loss (Chen & Lipman 2023, eq. 8).

    .. math:: L = \\mathbb{E}\\, \\| v_\\theta(x_t, t) - \\dot x_t \\|^2_{g(x_t)}

    The squared norm is taken in the metric at x_t (``manifold.inner``) and averaged over the batch.
    """
    diff = _predict(model, sample, cond) - sample.dx_t
    return manifold.inner(sample.x_t, diff).mean()
