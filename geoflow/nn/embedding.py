"""Time and input feature embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from manifolds import FlatTorus, Manifold, Product

__all__ = ["SinusoidalTimeEmbedding", "ManifoldFeatures", "DEFAULT_TIME_MAX_FREQ", "LEGACY_TIME_MAX_FREQ"]

#: Highest angular frequency of the time embedding used by geoflow's networks by default
#: (10: smooth enough in t for a few-step ODE solve; see SinusoidalTimeEmbedding).
DEFAULT_TIME_MAX_FREQ = 10.0
#: The value of checkpoints written before the frequency was configurable.
LEGACY_TIME_MAX_FREQ = 1000.0


class SinusoidalTimeEmbedding(nn.Module):
    """Sinusoidal embedding of t in [0, 1] (Vaswani et al. 2017; Ho et al. 2020).

    emb(t) = [sin(w_k t), cos(w_k t)]_k with w_k log-spaced in [1, max_freq].

    ``max_freq`` sets how fast the network's output may vary in t.  The DDPM value (t scaled by
    1000) suits discrete diffusion steps; for an ODE integrated with a handful of steps it lets
    the learned field oscillate in t faster than the solver's step resolves, and fixed-step
    solvers lose their order (measured on a trained volcano flow, 3000 steps: with max_freq
    1000 rk4's error against a 200-step reference fell only from 1.1e-2 to 2.0e-3 between 4 and
    64 steps; with max_freq 10 from 6.7e-3 to 3.0e-7, order 4).

    Shapes: t ``(batch,)`` -> ``(batch, dim)``.
    """

    def __init__(self, dim: int = 64, max_freq: float = DEFAULT_TIME_MAX_FREQ):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"`dim` must be an even integer >= 2, got {dim}")
        if not (isinstance(max_freq, (int, float)) and math.isfinite(max_freq) and max_freq >= 1):
            raise ValueError(f"`max_freq` must be a finite number >= 1, got {max_freq!r}")
        self.max_freq = float(max_freq)
        freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), dim // 2))
        self.register_buffer("freqs", freqs, persistent=False)
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        a = t.to(self.freqs.dtype)[..., None] * self.freqs
        return torch.cat([a.sin(), a.cos()], dim=-1)


class ManifoldFeatures(nn.Module):
    """Manifold-aware input features: a point flattened, with angles as (sin, cos) on tori.

    A FlatTorus factor contributes [sin(x), cos(x)] (continuous across the seam); every other
    factor contributes its flattened ambient coordinates.  With ``fourier = m > 0`` the features
    f are followed by m random Fourier features [sin(2 pi B^T f), cos(2 pi B^T f)] (Tancik et al.
    2020), B ``(len(f), m)`` drawn once from N(0, fourier_scale^2) with torch's global generator
    (so the model's seed fixes it) and kept as a buffer (checkpoints restore it).  They let an
    MLP fit targets that vary on a length scale of about 1 / fourier_scale (in the units of the
    coordinates), such as high eigenfunctions of a mesh.

    Shapes: x ``(batch, *point_shape)`` -> ``(batch, out_dim)``.
    """

    def __init__(self, manifold: Manifold, fourier: int = 0, fourier_scale: float = 1.0):
        super().__init__()
        if isinstance(fourier, bool) or not isinstance(fourier, int) or fourier < 0:
            raise ValueError(f"`fourier` (the number of random Fourier features) must be an int >= 0, got {fourier!r}")
        if not (isinstance(fourier_scale, (int, float)) and not isinstance(fourier_scale, bool)
                and math.isfinite(fourier_scale) and fourier_scale > 0):
            raise ValueError(f"`fourier_scale` must be a finite number > 0, got {fourier_scale!r}")
        self.manifold = manifold
        factors = list(manifold.manifolds) if isinstance(manifold, Product) else [manifold]
        self._torus = [isinstance(f, FlatTorus) for f in factors]
        self._sizes = [math.prod(f.point_shape) for f in factors]
        base = sum(2 * s if tor else s for s, tor in zip(self._sizes, self._torus))
        self.fourier, self.fourier_scale = fourier, float(fourier_scale)
        if fourier:
            self.register_buffer("fourier_B", torch.randn(base, fourier) * self.fourier_scale)
        self.out_dim = base + 2 * fourier

    def _base(self, x: torch.Tensor) -> torch.Tensor:
        m = self.manifold
        flat = x.reshape(x.shape[: x.dim() - m.ndim] + (-1,))
        if not any(self._torus):
            return flat
        parts, i = [], 0
        for size, tor in zip(self._sizes, self._torus):
            p = flat[..., i : i + size]
            parts.extend([p.sin(), p.cos()] if tor else [p])
            i += size
        return torch.cat(parts, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self._base(x)
        if not self.fourier:
            return f
        z = (2 * math.pi) * (f @ self.fourier_B.to(f.dtype))
        return torch.cat([f, z.sin(), z.cos()], dim=-1)
