"""Guidance of conditional flows: classifier-free guidance and classifier guidance.

Both wrap a velocity model into a new velocity callable ``v(x, t, cond=None)`` that the
solvers integrate like any other field::

    >>> from geoflow.guidance import CFGVelocity
    >>> from geoflow.solvers import sample
    >>> guided = CFGVelocity(model, 2.0)                                   # doctest: +SKIP
    >>> x1 = sample(guided, torch.randn(16, 1, 8, 8), cond=labels, steps=50)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .paths import AffinePath

__all__ = ["CFGVelocity", "ClassifierGuidance"]


def _check_weight(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a float, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}")
    return value


def _batch_t(t, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]) if t.dim() == 0 else t


class CFGVelocity:
    """Classifier-free guidance of a conditional velocity field (Ho & Salimans 2022).

    .. math:: v_w(x, t, y) = v(x, t, \\varnothing) + w\\, (v(x, t, y) - v(x, t, \\varnothing))

    w = 0 is the unconditional field, w = 1 the conditional one, w > 1 extrapolates towards the
    condition (sharper, more typical samples, less diversity).  The network must have been
    trained with condition dropout so that v(x, t, null) estimates the unconditional field
    (:mod:`geoflow.nn.conditioning`).

    **Where it is exact.** On affine Gaussian paths (:class:`geoflow.paths.AffinePath`) the
    velocity is an affine function of the score with the same coefficients for p_t(x | y) and
    p_t(x) (Zheng et al. 2023, "Guided Flows for Generative Modeling and Decision Making"), so
    v_w is the velocity of the path whose score is
    grad log p_t(x) + w (grad log p_t(x | y) - grad log p_t(x)) = grad log [p_t(x) p_t(y | x)^w]:
    the same guidance as in diffusion models.  (Even there, integrating v_w does not sample
    p(x) p(y | x)^w exactly for w not in {0, 1}; that is guidance's usual approximation.)

    **On manifolds it is a heuristic.** With geodesic paths (:class:`geoflow.paths.GeodesicPath`)
    the velocity is not an affine function of a score, so the same combination of the two
    tangent vectors at x (which is again tangent at x) has no such interpretation: it is a
    heuristic, supported here because it is cheap and often useful, with no claim about the
    distribution it samples.

    The conditional and the null evaluation run as one forward pass on the concatenated batch
    [x; x] with conditions [y; null] when the model can build its null condition
    (``model.null_cond(batch, device=, dtype=)``, as geoflow's networks do) or ``null`` is
    given.  Otherwise (a plain callable without ``null_cond``) the null field is the model
    called without ``cond``, in a second forward pass.  w = 0 and w = 1 call the model once,
    on the null or the conditional batch only, so they equal those fields exactly.

    Args:
        model: velocity ``model(x, t, cond=None)``.
        w: guidance weight (a finite float).
        null: the null condition: an int label, a tensor for one row (broadcast over the batch)
            or for the whole batch; None asks the model (``model.null_cond``).

    Shapes: x ``(batch, *point_shape)``, t ``(batch,)`` or scalar, cond ``(batch, ...)`` ->
    ``(batch, *point_shape)``.  ``cond=None`` returns the unconditional field.
    """

    def __init__(self, model: Callable, w: float, *, null=None):
        if not callable(model):
            raise TypeError(f"`model` must be callable as model(x, t, cond=None), got {type(model).__name__}")
        self.model = model
        self.w = _check_weight("w", w)
        if isinstance(null, bool) or not (null is None or isinstance(null, (int, torch.Tensor))):
            raise TypeError(f"`null` must be None, an int label or a tensor, got {type(null).__name__}")
        self.null = null

    def __repr__(self) -> str:
        return f"CFGVelocity(w={self.w})"

    def null_condition(self, batch: int, like: torch.Tensor):
        """The null condition for ``batch`` rows, or None when the model is to be called without ``cond``."""
        if self.null is None:
            fn = getattr(self.model, "null_cond", None)
            return fn(batch, device=like.device, dtype=like.dtype) if callable(fn) else None
        null = torch.as_tensor(self.null, device=like.device)
        if null.dim() == 0:
            return null.expand(batch)
        if null.is_floating_point() and null.dim() == 1:
            return null.expand(batch, null.shape[0])  # one vector for every row
        if null.shape[0] != batch:
            raise ValueError(f"`null` must be one condition or one per row ({batch} rows), got shape {tuple(null.shape)}")
        return null

    def _uncond(self, x, t, null):
        return self.model(x, t) if null is None else self.model(x, t, cond=null)

    def __call__(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        batch = x.shape[0]
        null = self.null_condition(batch, x)
        if cond is None or self.w == 0.0:
            return self._uncond(x, t, null)
        if self.w == 1.0:
            return self.model(x, t, cond=cond)
        t = _batch_t(t, x)
        if null is not None:
            cond_b = torch.as_tensor(cond, device=x.device)
            cond_b = cond_b.expand(batch) if cond_b.dim() == 0 else cond_b
            if cond_b.shape[1:] != null.shape[1:]:
                cond_b = _pad_null_flag(cond_b, null)
            both = self.model(torch.cat([x, x]), torch.cat([t, t]), cond=torch.cat([cond_b.to(null.dtype), null]))
            v_c, v_n = both[:batch], both[batch:]
        else:
            v_c, v_n = self.model(x, t, cond=cond), self.model(x, t)
        return v_n + self.w * (v_c - v_n)


def _pad_null_flag(cond: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
    """Vector conditions without the null-flag column get a zero flag (see geoflow.nn.conditioning)."""
    if cond.dim() == 2 and null.dim() == 2 and null.shape[1] == cond.shape[1] + 1:
        return torch.cat([cond, cond.new_zeros(cond.shape[0], 1)], dim=1)
    raise ValueError(f"`cond` of shape {tuple(cond.shape)} does not match the null condition's shape {tuple(null.shape)}")


class ClassifierGuidance:
    """Classifier guidance of a flow on an affine Gaussian path (Dhariwal & Nichol 2021).

    The velocity is converted to the score with the path's conversions, the gradient of a
    time-conditioned classifier's log-probability is added, and the result converted back:

    .. math::
        s = \\mathrm{velocity\\_to\\_score}(v), \\qquad
        \\tilde v = \\mathrm{score\\_to\\_velocity}(s + \\lambda \\nabla_x \\log p(y \\mid x_t, t))

    Since the conversion is affine in the score (:class:`geoflow.paths.AffinePath`),
    v~ = v + lambda c_t grad_x log p(y | x_t, t) with
    c_t = sigma_t (sigma_t d_alpha_t - alpha_t d_sigma_t) / alpha_t; the shift is computed as
    ``path.score_to_velocity(lambda * g, 0, t)`` (the linear part of the conversion), so
    ``scale = 0`` returns the model's field unchanged.  For CondOT paths c_t = (1 - t) / t.

    The conversion divides by alpha_t: as alpha_t -> 0 (pure noise, t -> 0 on CondOT paths) the
    coefficient is unbounded and the classifier carries no information, so the shift is
    skipped where alpha_t < ``min_alpha``.

    Args:
        model: velocity ``model(x, t, cond=None)`` (usually unconditional: called without ``cond``
            unless ``condition_model=True``).
        classifier: ``classifier(x_t, t) -> logits`` of shape ``(batch, n_classes)``, trained on
            noisy points x_t of the same path.
        path: the :class:`geoflow.paths.AffinePath` the model was trained with.
        scale: guidance scale lambda (0: no guidance).
        min_alpha: no shift where alpha_t < min_alpha (default 1e-2).
        condition_model: also pass the labels to ``model`` (guiding a conditional model).

    Shapes: x ``(batch, *point_shape)``, t ``(batch,)`` or scalar, cond int64 ``(batch,)`` ->
    ``(batch, *point_shape)``.  ``cond=None`` returns the model's field.
    """

    def __init__(self, model: Callable, classifier: Callable, path: AffinePath, scale: float, *,
                 min_alpha: float = 1e-2, condition_model: bool = False):
        if not callable(model):
            raise TypeError(f"`model` must be callable as model(x, t, cond=None), got {type(model).__name__}")
        if not callable(classifier):
            raise TypeError(f"`classifier` must be callable as classifier(x, t) -> logits, got {type(classifier).__name__}")
        if not isinstance(path, AffinePath):
            raise TypeError(
                f"`path` must be a geoflow.paths.AffinePath (classifier guidance needs the velocity/score "
                f"conversions of a Gaussian path), got {type(path).__name__}"
            )
        self.model, self.classifier, self.path = model, classifier, path
        self.scale = _check_weight("scale", scale)
        self.min_alpha = _check_weight("min_alpha", min_alpha)
        if self.min_alpha < 0:
            raise ValueError(f"`min_alpha` must be >= 0, got {min_alpha}")
        self.condition_model = bool(condition_model)

    def __repr__(self) -> str:
        return f"ClassifierGuidance(scale={self.scale}, path={self.path!r})"

    def log_prob_grad(self, x: torch.Tensor, t, cond: torch.Tensor) -> torch.Tensor:
        """grad_x log p(y = cond | x, t) from the classifier's log-softmax, shape of ``x``."""
        t = _batch_t(t, x)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logits = self.classifier(xg, t)
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
                got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise ValueError(f"classifier must return logits of shape ({x.shape[0]}, n_classes), got {got}")
            cond = torch.as_tensor(cond, device=x.device).long().expand(x.shape[0])
            if int(cond.min()) < 0 or int(cond.max()) >= logits.shape[1]:
                raise ValueError(f"labels must lie in [0, {logits.shape[1] - 1}] for this classifier")
            logp = torch.log_softmax(logits, dim=-1).gather(1, cond[:, None]).sum()
            (g,) = torch.autograd.grad(logp, xg)
        return g

    def __call__(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        v = self.model(x, t, cond=cond) if (self.condition_model and cond is not None) else self.model(x, t)
        if cond is None or self.scale == 0.0:
            return v
        t = _batch_t(t, x)
        g = self.log_prob_grad(x, t, cond).to(v.dtype)
        alpha = self.path.scheduler(t).alpha_t.reshape(t.shape + (1,) * (x.dim() - 1))
        on = alpha >= self.min_alpha
        t_safe = torch.where(on.reshape(t.shape), t, torch.ones_like(t))
        shift = self.path.score_to_velocity(self.scale * g, torch.zeros_like(x), t_safe)
        return v + torch.where(on, shift, torch.zeros_like(shift))
