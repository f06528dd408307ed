"""The :class:`Manifold` base class: the contract every geoflow manifold meets.

A manifold here is a :class:`geoopt.Manifold` (so ``geoopt.ManifoldParameter`` and
``geoopt.optim.RiemannianAdam`` work on it) with the extra members flow matching
needs: ``dim``, ``geodesic``, a base distribution (``random_base``/``base_log_prob``)
and input checks that raise a ``ValueError`` saying what is wrong.

Conventions
-----------
* A point has shape ``(*batch, *point_shape)``; batch dimensions lead and broadcast.
* Tangent vectors are stored in ambient coordinates with the point's shape.
* Scalars per point (``dist``, ``inner``, ``norm``, ``base_log_prob``) have shape
  ``(*batch,)`` (or ``(*batch, 1...)`` with ``keepdim=True``).
* ``t`` in :meth:`geodesic` is a float or a tensor broadcasting against ``(*batch,)``.
"""

from __future__ import annotations

import abc
import math
from typing import Optional, Sequence

import geoopt
import torch

from ._math import sqrt_safe

__all__ = ["Manifold", "geodesic_and_velocity_jvp"]


def _size(size: Sequence) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
        size = tuple(size[0])
    out = []
    for s in size:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"random_base: size must be non-negative integers, got {tuple(size)!r}")
        out.append(int(s))
    return tuple(out)


class Manifold(geoopt.Manifold, abc.ABC):
    """Base class of all geoflow manifolds.

    Subclasses set :attr:`point_shape` and :attr:`dim` and implement the geometry
    (``projx``, ``proju``, ``expmap``, ``logmap``, ``dist``, ``inner``), the base
    distribution (``_random_base``, ``base_log_prob``) and the two tolerance checks
    ``_check_point_on_manifold`` / ``_check_vector_on_tangent`` (geoopt's names), which
    return ``(ok, reason)`` where ``reason`` states how far off the input is.
    """

    #: Shape of one point, e.g. ``(3,)`` for S^2 in R^3 or ``(3, 3)`` for SO(3).
    point_shape: tuple[int, ...] = ()
    #: Intrinsic dimension.
    dim: int = 0

    # ------------------------------------------------------------------ helpers
    def _set_shape(self, point_shape: tuple[int, ...], dim: int) -> None:
        """Record the point shape and intrinsic dimension (``ndim`` is geoopt's name)."""
        self.point_shape = tuple(int(s) for s in point_shape)
        self.ndim = len(self.point_shape)
        self.dim = int(dim)

    @staticmethod
    def _check_int(name: str, value, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"`{name}` must be an int, got {type(value).__name__} {value!r}")
        if value < minimum:
            raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
        return int(value)

    @staticmethod
    def _check_positive(name: str, value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"`{name}` must be a positive float, got {type(value).__name__} {value!r}")
        value = float(value)
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"`{name}` must be a finite number > 0, got {value}")
        return value

    def _check_shape(self, shape, name):
        shape = tuple(shape)
        k = len(self.point_shape)
        ok = len(shape) >= k and shape[len(shape) - k :] == tuple(self.point_shape)
        reason = None
        if not ok:
            reason = (
                f"{self!r}: `{name}` must have trailing shape {tuple(self.point_shape)} "
                f"(one point), got shape {shape}"
            )
        return ok, reason

    def _expand_t(self, t, like: torch.Tensor) -> torch.Tensor:
        """Turn ``t`` (float or tensor over the batch) into a tensor broadcasting with points."""
        t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
        return t.reshape(t.shape + (1,) * self.ndim)

    @staticmethod
    def _flat_inner(x: torch.Tensor, u: torch.Tensor, v=None, keepdim: bool = False) -> torch.Tensor:
        """<u, v> summed over the last axis, broadcast against x's batch (geoopt's convention)."""
        out = (u * (u if v is None else v)).sum(-1, keepdim=keepdim)
        target = torch.broadcast_shapes(x.shape[:-1], out.shape[: out.dim() - int(keepdim)])
        return out.expand(target + ((1,) if keepdim else ()))

    def _point_sum(self, v: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
        """Sum over the point dimensions."""
        dims = tuple(range(-self.ndim, 0))
        return v.sum(dim=dims, keepdim=keepdim)

    def _default_dtype(self, dtype):
        return dtype if dtype is not None else torch.get_default_dtype()

    # ------------------------------------------------------------------ checks
    def _validate_tensor(self, x, name: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self!r}: `{name}` must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{self!r}: `{name}` must have a floating dtype, got {x.dtype}")
        ok, reason = self._check_shape(x.shape, name)
        if not ok:
            raise ValueError(reason)
        finite = torch.isfinite(x.detach())
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise ValueError(f"{self!r}: `{name}` contains {bad} NaN or inf entries")

    def _tols(self, dtype, atol, rtol):
        default = 1e-7 if dtype == torch.float64 else 1e-4
        return (default if atol is None else atol), (default if rtol is None else rtol)

    def check_point(self, x: torch.Tensor, *, atol: Optional[float] = None, rtol: Optional[float] = None) -> None:
        """Raise ``ValueError``/``TypeError`` unless ``x`` is a batch of points on the manifold.

        The message names the manifold, the expected shape and how far off the point is.
        Tolerances default to 1e-4 (float32) or 1e-7 (float64).
        """
        self._validate_tensor(x, "x")
        x = x.detach()
        atol, rtol = self._tols(x.dtype, atol, rtol)
        ok, reason = self._check_point_on_manifold(x, atol=atol, rtol=rtol)
        if not ok:
            raise ValueError(f"{self!r}: `x` is not on the manifold: {reason}")

    def check_vector(
        self, x: torch.Tensor, u: torch.Tensor, *, atol: Optional[float] = None, rtol: Optional[float] = None
    ) -> None:
        """Raise ``ValueError``/``TypeError`` unless ``u`` is tangent at the point ``x``."""
        self.check_point(x, atol=atol, rtol=rtol)
        self._validate_tensor(u, "u")
        x, u = x.detach(), u.detach()
        if u.dtype != x.dtype:
            raise TypeError(f"{self!r}: `u` has dtype {u.dtype} but `x` has dtype {x.dtype}")
        atol, rtol = self._tols(x.dtype, atol, rtol)
        ok, reason = self._check_vector_on_tangent(x, u, atol=atol, rtol=rtol)
        if not ok:
            raise ValueError(f"{self!r}: `u` is not tangent at `x`: {reason}")

    # ---------------------------------------------------------------- geometry
    def norm(self, x: torch.Tensor, u: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
        """Riemannian norm |u|_x; its gradient is finite (zero) at u == 0."""
        return sqrt_safe(self.inner(x, u, keepdim=keepdim))

    def geodesic(self, x0: torch.Tensor, x1: torch.Tensor, t) -> torch.Tensor:
        """Point at fraction ``t`` of the minimising geodesic from ``x0`` to ``x1``.

        .. math:: \\gamma(t) = \\exp_{x_0}(t \\log_{x_0}(x_1))
        """
        return self.expmap(x0, self._expand_t(t, x0) * self.logmap(x0, x1))

    def geodesic_and_velocity(self, x0: torch.Tensor, x1: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """The geodesic point gamma(t) and its velocity d gamma / dt (tangent at gamma(t)).

        gamma(t) = geodesic(x0, x1, t), so the velocity is the parallel transport of
        log_{x0}(x1) to gamma(t).  This default differentiates :meth:`geodesic` with
        forward-mode autodiff (:func:`geodesic_and_velocity_jvp`); manifolds override it with
        closed forms, which the tests check against this reference.
        """
        return geodesic_and_velocity_jvp(self, x0, x1, t)

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.expmap(x, u)

    def transp(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Vector transport by projection onto the tangent space at ``y``."""
        return self.proju(y, v)

    def egrad2rgrad(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.proju(x, u)

    # geoopt's composite moves, written once on top of our retr / expmap / transp (geoopt's own
    # stereographic versions take a ``dim`` argument and bypass our overrides).
    def retr_transp(self, x, u, v):
        y = self.retr(x, u)
        return y, self.transp(x, y, v)

    def expmap_transp(self, x, u, v):
        y = self.expmap(x, u)
        return y, self.transp(x, y, v)

    def transp_follow_retr(self, x, u, v):
        return self.transp(x, self.retr(x, u), v)

    def transp_follow_expmap(self, x, u, v):
        return self.transp(x, self.expmap(x, u), v)

    def log_volume_density(self, x: torch.Tensor) -> torch.Tensor:
        """log of the Riemannian volume's density w.r.t. the ambient coordinates' volume, shape ``(*batch,)``.

        Zero for manifolds whose metric is induced by the ambient (pseudo-)Euclidean space
        (Euclidean, Sphere, FlatTorus, Lorentz, SO3); ``n log lambda_x`` on the Poincare ball,
        ``-(n+1)/2 log det P`` (plus a constant) for affine-invariant SPD.  Solvers use its
        gradient for the Riemannian divergence: div_g v = tr(P_x J_v) + <grad log rho, v>.
        """
        return torch.zeros(x.shape[: x.dim() - self.ndim], dtype=x.dtype, device=x.device)

    # ----------------------------------------------------------- distribution
    def random_base(self, *size, generator: Optional[torch.Generator] = None, dtype=None, device=None) -> torch.Tensor:
        """Samples of the base distribution, shape ``(*size, *point_shape)``.

        ``size`` may be given as integers or as one tuple; ``generator`` makes the draw
        reproducible.  The points land on ``device`` (default: the generator's device, else
        torch's default); a generator on another device draws there and the points are moved,
        so a seeded CPU generator gives the same points on every device.
        """
        size = _size(size)
        dtype = self._default_dtype(dtype)
        if not dtype.is_floating_point:
            raise TypeError(f"{self!r}: random_base needs a floating dtype, got {dtype}")
        if generator is not None:
            if device is not None and torch.device(device) != generator.device:
                return self._random_base(size, generator=generator, dtype=dtype, device=generator.device).to(device)
            device = generator.device
        return self._random_base(size, generator=generator, dtype=dtype, device=device)

    @abc.abstractmethod
    def _random_base(self, size: tuple[int, ...], *, generator, dtype, device) -> torch.Tensor:
        ...

    @abc.abstractmethod
    def base_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density of the base distribution w.r.t. the Riemannian volume, shape ``(*batch,)``."""

    # --------------------------------------------------------------- misc
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def geodesic_and_velocity_jvp(manifold, x0: torch.Tensor, x1: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference geodesic velocity: ``torch.func.jvp`` of ``manifold.geodesic`` in ``t``.

    Works for any manifold with a differentiable ``geodesic``; ``t`` broadcasts over the batch.
    """
    k = manifold.ndim
    t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
    batch = torch.broadcast_shapes(x0.shape[: x0.dim() - k], x1.shape[: x1.dim() - k], t.shape)
    t = t.expand(batch).contiguous()
    return torch.func.jvp(lambda s: manifold.geodesic(x0, x1, s), (t,), (torch.ones_like(t),))


def _log_sphere_area(n: int) -> float:
    """log of the area of the unit n-sphere S^n in R^{n+1}: 2 pi^{(n+1)/2} / Gamma((n+1)/2)."""
    return math.log(2.0) + 0.5 * (n + 1) * math.log(math.pi) - math.lgamma(0.5 * (n + 1))
