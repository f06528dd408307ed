"""Paired coupling for inverse problems, and two image degradations."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .base import Coupling, check_choice, check_cond, check_generator, check_int, check_points, check_real, pack

__all__ = ["PairedCoupling", "downsample_upsample", "mask_half"]


def _check_image(x, name: str = "x") -> torch.Tensor:
    check_points(name, x, finite=False)
    if x.dim() < 2:
        raise ValueError(f"`{name}` must have shape (..., H, W), got {tuple(x.shape)}")
    return x


def downsample_upsample(x: torch.Tensor, factor: int = 2, *, mode: str = "nearest") -> torch.Tensor:
    """Low-resolution version of images at the original size: block means, then upsampling.

    .. math:: y = U_f(D_f(x)),\\qquad D_f(x)_{ab} = \\frac{1}{f^2} \\sum_{r,s<f} x_{fa+r,\\,fb+s}

    with U_f nearest-neighbour (each low-resolution pixel repeated in an f x f block) or
    bilinear upsampling (``align_corners=False``).  E.g. 8x8 digits, factor 2: the 4x4
    observation of the super-resolution task, shown at 8x8.

    Args:
        x: images, shape (..., H, W) (e.g. (batch, C, H, W)); H and W divisible by ``factor``.
        factor: the downsampling factor f (>= 1).
        mode: ``"nearest"`` or ``"bilinear"`` upsampling.

    Shapes:
        x: (..., H, W) -> (..., H, W).
    """
    _check_image(x)
    factor = check_int("factor", factor)
    mode = check_choice("mode", mode, ("nearest", "bilinear"))
    H, W = x.shape[-2:]
    if H % factor or W % factor:
        raise ValueError(f"image size {H}x{W} must be divisible by `factor` = {factor}")
    flat = x.reshape(-1, 1, H, W)
    low = F.avg_pool2d(flat, factor)
    kw = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(low, size=(H, W), mode=mode, **kw).reshape(x.shape)


def mask_half(x: torch.Tensor, side: str = "bottom", *, fill: float = 0.0) -> torch.Tensor:
    """Images with one half replaced by ``fill`` (the inpainting observation).

    ``side`` is the half that is masked: ``"bottom"`` (rows H//2:), ``"top"`` (rows :H//2, or
    :ceil(H/2) for odd H, so top and bottom together cover the image), ``"left"``, ``"right"``.

    Shapes:
        x: (..., H, W) -> (..., H, W).
    """
    _check_image(x)
    side = check_choice("side", side, ("bottom", "top", "left", "right"))
    fill = check_real("fill", fill)
    H, W = x.shape[-2:]
    y = x.clone()
    if side == "bottom":
        y[..., H // 2 :, :] = fill
    elif side == "top":
        y[..., : H - H // 2, :] = fill
    elif side == "right":
        y[..., :, W // 2 :] = fill
    else:
        y[..., :, : W - W // 2] = fill
    return y


class PairedCoupling(Coupling):
    """Source = noisy observation of the target, for inverse problems (flows from y to x).

    .. math:: x_0 = y + \\sigma \\varepsilon,\\qquad \\varepsilon \\sim N(0, I)

    where y is the degraded observation paired with the data x1: ``degrade(x1)`` when a
    ``degrade`` callable is given (e.g. :func:`downsample_upsample` for super-resolution,
    :func:`mask_half` for inpainting), otherwise the tensor passed as ``x0`` (datasets that
    come with real pairs (y, x1)).  The flow then learns p(x1 | y) from the noisy observation
    to the data with the usual (unchanged) CFM loss; the noise sigma eps spreads the point
    mass at y so that the flow can produce several reconstructions (Albergo et al. 2023,
    "Stochastic Interpolants with Data-Dependent Couplings", ICML 2024, call this a data-dependent
    coupling).  At sampling time start the ODE from ``y + sigma * eps`` built the same way.

    The noise is always drawn by the coupling, from ``generator`` (None: the global RNG), on
    the generator's device, then moved to x1's (a CPU generator gives the same noise for CUDA
    data as for the same data on the CPU).

    Args:
        sigma: noise level sigma (>= 0).
        degrade: callable mapping x1 to the observation y (same shape), or None.
        generator: torch.Generator for eps.

    Call:
        ``coupling(x0, x1, cond=None)``: with ``degrade`` set, ``x0`` is ignored (it may be
        None, e.g. the base noise a trainer draws); without it, ``x0`` is the observation y,
        shape of x1.  Returns ``(y + sigma * eps, x1)`` or ``(y + sigma * eps, x1, cond)``.

    Shapes:
        x0: (m, *point_shape) or None; x1: (m, *point_shape); cond: (m, ...) or None.
    """

    def __init__(
        self, sigma: float, degrade: Optional[Callable] = None, *, generator: Optional[torch.Generator] = None
    ):
        self.sigma = check_real("sigma", sigma, nonnegative=True)
        if degrade is not None and not callable(degrade):
            raise TypeError(f"`degrade` must be None or a callable degrade(x1) -> y, got {type(degrade).__name__}")
        self.degrade = degrade
        self.generator = check_generator(generator)

    def extra_repr(self) -> str:
        if self.degrade is None:
            return f"sigma={self.sigma}"
        return f"sigma={self.sigma}, degrade={getattr(self.degrade, '__name__', type(self.degrade).__name__)}"

    def observe(self, x1: torch.Tensor) -> torch.Tensor:
        """The observation y = degrade(x1) (checked to keep x1's shape and dtype)."""
        if self.degrade is None:
            raise ValueError("this PairedCoupling has no `degrade`; pass the observation as x0")
        with torch.no_grad():
            y = self.degrade(x1)
        if not isinstance(y, torch.Tensor) or y.shape != x1.shape or y.dtype != x1.dtype:
            got = f"{tuple(y.shape)} {y.dtype}" if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(
                f"`degrade` must return a tensor of x1's shape {tuple(x1.shape)} and dtype {x1.dtype}, got {got}"
            )
        return y

    def __call__(self, x0, x1, cond=None):
        check_points("x1", x1)
        check_cond(cond, x1.shape[0])
        if self.degrade is not None:
            y = self.observe(x1)
        else:
            check_points("x0", x0)
            if x0.shape != x1.shape or x0.dtype != x1.dtype or x0.device != x1.device:
                raise ValueError(
                    f"`x0` (the observation y) must match x1's shape, dtype and device, got "
                    f"{tuple(x0.shape)} {x0.dtype} and {tuple(x1.shape)} {x1.dtype}"
                )
            y = x0
        g = self.generator
        eps = torch.randn(x1.shape, generator=g, dtype=x1.dtype, device=x1.device if g is None else g.device).to(x1.device)
        return pack(y + self.sigma * eps, x1, cond)
