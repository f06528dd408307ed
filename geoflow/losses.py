"""Conditional flow matching losses."""

from __future__ import annotations

import math

import torch

from manifolds import Manifold

from .paths import PathSample

__all__ = ["cfm_loss", "rcfm_loss"]


def _check_sample(sample) -> None:
    if not isinstance(sample, PathSample):
        raise TypeError(
            f"`sample` must be a geoflow.paths.PathSample (from path.sample(x0, x1, t)), got {type(sample).__name__}"
        )
    if sample.x_t.dim() < 1 or sample.x_t.shape[0] == 0:
        raise ValueError(f"`sample` must hold at least one point (batch >= 1), got x_t of shape {tuple(sample.x_t.shape)}")


def _check_model_matches(model, x: torch.Tensor) -> None:
    """A torch module whose floating parameters differ in dtype or device from x: say so, before torch does."""
    if not isinstance(model, torch.nn.Module):
        return
    p = next((p for p in model.parameters() if p.is_floating_point()), None)
    if p is None:
        return
    if p.device != x.device:
        raise ValueError(f"the model's parameters are on {p.device} but `sample.x_t` is on {x.device}; move one with .to()")
    if p.dtype != x.dtype:
        raise TypeError(
            f"the model's parameters have dtype {p.dtype} but `sample.x_t` has dtype {x.dtype}; "
            f"use model.to({x.dtype}) or build the path sample in {p.dtype}"
        )


def _predict(model, sample: PathSample, cond):
    _check_sample(sample)
    _check_model_matches(model, sample.x_t)
    out = model(sample.x_t, sample.t) if cond is None else model(sample.x_t, sample.t, cond=cond)
    if not isinstance(out, torch.Tensor) or out.shape != sample.dx_t.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model output must have the shape of x_t {tuple(sample.dx_t.shape)}, got {got}")
    return out


def cfm_loss(model, sample: PathSample, *, cond=None) -> torch.Tensor:
    """Conditional flow matching loss (Lipman et al. 2023, eq. 9).

    .. math:: L = \\mathbb{E}\\, | v_\\theta(x_t, t) - \\dot x_t |^2

    The squared Euclidean norm is summed over all non-batch dimensions and averaged over the batch.

    Raises:
        TypeError: ``sample`` is not a :class:`~geoflow.paths.PathSample`, or the model's
            parameters have another dtype than the sample.
        ValueError: an empty batch, a model on another device, or an output of the wrong shape.
    """
    diff = _predict(model, sample, cond) - sample.dx_t
    return diff.pow(2).reshape(diff.shape[0], -1).sum(-1).mean()


def rcfm_loss(manifold: Manifold, model, sample: PathSample, *, cond=None, normal_weight: float = 0.0) -> torch.Tensor:
    """Riemannian conditional flow matching loss (Chen & Lipman 2023, eq. 8).

    .. math:: L = \\mathbb{E}\\, \\| v_\\theta(x_t, t) - \\dot x_t \\|^2_{g(x_t)}
        + \\lambda\\, \\mathbb{E}\\, | a_\\theta(x_t, t) - P_{x_t} a_\\theta(x_t, t) |^2

    The squared norm is taken in the metric at x_t (``manifold.inner``) and averaged over the batch.

    ``normal_weight`` (lambda, default 0) adds the squared normal part of the network's raw
    ambient output a (before ``proju``; the model must accept ``project=False``, as
    :class:`geoflow.nn.MLPVelocity` does).  The first term does not see that part, but on a
    surface whose tangent planes turn quickly (a triangle mesh with sharp features, whose
    smooth normal rotates across each face) the field v = P a varies with it at the scale of
    the faces, which puts density ripples into the flow; the penalty keeps a nearly tangent.

    Raises:
        TypeError, ValueError: as :func:`cfm_loss`; also a ``manifold`` that is not a
            :class:`manifolds.Manifold`.
    """
    if not isinstance(manifold, Manifold):
        raise TypeError(f"`manifold` must be a manifolds.Manifold, got {type(manifold).__name__}")
    if isinstance(normal_weight, bool) or not isinstance(normal_weight, (int, float)) or not math.isfinite(normal_weight) or normal_weight < 0:
        raise ValueError(f"`normal_weight` must be a finite number >= 0, got {normal_weight!r}")
    if not normal_weight:
        diff = _predict(model, sample, cond) - sample.dx_t
        return manifold.inner(sample.x_t, diff).mean()
    _check_model_matches(model, sample.x_t)
    try:
        raw = _predict(_Unprojected(model), sample, cond)
    except TypeError as exc:
        if "project" not in str(exc):
            raise
        raise TypeError(f"normal_weight > 0 needs a model whose forward accepts project=False (the raw ambient "
                        f"output), which {type(model).__name__} does not") from None
    v = manifold.proju(sample.x_t, raw)
    normal = (raw - v).reshape(raw.shape[0], -1).pow(2).sum(-1)
    return manifold.inner(sample.x_t, v - sample.dx_t).mean() + normal_weight * normal.mean()


class _Unprojected:
    """Calls ``model(..., project=False)``; passes the attributes the loss checks through."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, *args, **kwargs):
        return self._model(*args, project=False, **kwargs)
