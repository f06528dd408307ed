"""Rectified flow: couple base samples with a trained model's own ODE endpoints."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from manifolds.base import Manifold

from .base import Coupling, check_cond, check_generator, check_int, check_points, pack

__all__ = ["ReflowCoupling"]


class ReflowCoupling(Coupling):
    """The coupling (x0, phi_1(x0)) of a trained flow: "reflow" (rectified flow).

    .. math::
        x_1 = \\phi_1(x_0),\\qquad \\frac{d}{dt}\\phi_t(x_0) = v_\\theta(\\phi_t(x_0), t),\\;
        \\phi_0 = \\mathrm{id}

    Liu, Gong & Liu 2022 ("Flow Straight and Fast: Learning to Generate and Transfer Data with
    Rectified Flow", ICLR 2023): training a new flow on the straight (here: conditional path)
    interpolations between x0 and the endpoint phi_1(x0) of the previous flow keeps the
    marginals and does not increase any convex transport cost, and the paths of the new flow
    are straighter, so fewer ODE steps are needed.  Repeating gives 2-rectified, 3-rectified
    flows.  On a manifold, the endpoints come from :func:`geoflow.solvers.sample`'s geometric
    steppers and the trainer's geodesic path joins x0 and phi_1(x0): reflow along geodesics.

    The ODE is solved without gradient (``torch.no_grad``), in chunks of ``batch_size``.  Pass
    the model in the state to sample from (e.g. ``ema.module`` in ``eval()`` mode): dropout
    would make the endpoints random.  Reflow is usually trained on a fixed set of pairs made
    once: :meth:`generate`; calling the coupling instead re-solves for every batch.

    Args:
        model: the trained velocity ``model(x, t[, cond=...])``.
        manifold: its :class:`manifolds.Manifold`, or None for flat space.
        steps: ODE steps of ``method`` (>= 1).
        method: a :func:`geoflow.solvers.sample` method (``"rk4"`` default).
        batch_size: solve at most this many points at once (None: all at once).

    Call:
        ``coupling(x0, x1=None, cond=None)`` returns ``(x0, phi_1(x0))`` or
        ``(x0, phi_1(x0), cond)``; ``x1`` (the trainer's data batch) is ignored, ``cond`` is
        passed to the model and returned unchanged.

    Shapes:
        x0: (n, *point_shape); cond: (n, ...) or None.
    """

    def __init__(
        self,
        model,
        manifold: Optional[Manifold] = None,
        *,
        steps: int = 100,
        method: str = "rk4",
        batch_size: Optional[int] = None,
    ):
        from ..solvers import METHODS

        if not callable(model):
            raise TypeError(f"`model` must be callable as model(x, t[, cond=...]), got {type(model).__name__}")
        if manifold is not None and not isinstance(manifold, Manifold):
            raise TypeError(f"`manifold` must be None or a manifolds.Manifold, got {type(manifold).__name__}")
        if not isinstance(method, str) or method not in METHODS:
            raise ValueError(f"`method` must be one of {list(METHODS)}, got {method!r}")
        self.model, self.manifold, self.method = model, manifold, method
        self.steps = check_int("steps", steps)
        self.batch_size = None if batch_size is None else check_int("batch_size", batch_size)

    def extra_repr(self) -> str:
        m = "" if self.manifold is None else f", manifold={self.manifold!r}"
        return f"{type(self.model).__name__}{m}, steps={self.steps}, method={self.method!r}"

    @torch.no_grad()
    def endpoints(self, x0: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        """phi_1(x0): the model's ODE solution at t = 1 from x0 at t = 0 (no gradient)."""
        from ..solvers import sample

        check_points("x0", x0)
        check_cond(cond, x0.shape[0])
        n = x0.shape[0]
        bs = n if self.batch_size is None else self.batch_size
        out = []
        for i in range(0, n, bs):
            c = None if cond is None else cond[i : i + bs]
            out.append(
                sample(self.model, x0[i : i + bs], self.manifold, method=self.method, steps=self.steps, cond=c,
                       requires_grad=False)
            )  # fmt: skip
        return torch.cat(out, 0)

    def __call__(self, x0, x1=None, cond=None):
        return pack(x0, self.endpoints(x0, cond), cond)

    def generate(
        self,
        n: int,
        *,
        shape: Optional[Sequence[int]] = None,
        cond: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
        dtype: Optional[torch.dtype] = None,
        device=None,
    ):
        """A fixed reflow training set: n base samples and their ODE endpoints.

        x0 is drawn from ``manifold.random_base`` (or N(0, I) of ``shape`` in flat space, the
        base distribution of :func:`geoflow.solvers.sample` without a manifold).

        Args:
            n: number of pairs (>= 1).
            shape: point shape, required without a manifold (e.g. ``(2,)`` or ``(1, 8, 8)``).
            cond: conditions for the model, shape (n, ...) (e.g. labels drawn beforehand).
            generator, dtype, device: for the base draw (drawn on the generator's device, then
                moved to ``device``).

        Returns:
            ``(x0, x1)`` or ``(x0, x1, cond)``, shapes (n, *point_shape).
        """
        n = check_int("n", n)
        generator = check_generator(generator)
        if self.manifold is not None:
            x0 = self.manifold.random_base(n, generator=generator, dtype=dtype, device=device)
        else:
            if shape is None:
                raise ValueError("`shape` (the point shape) is required to draw N(0, I) base samples without manifold")
            shape = tuple(check_int("shape", s) for s in shape)
            gdev = generator.device if generator is not None else device
            x0 = torch.randn((n, *shape), generator=generator, dtype=dtype, device=gdev)
            x0 = x0 if device is None else x0.to(device)
        return self(x0, None, cond)
