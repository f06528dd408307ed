"""Time and input feature embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from manifolds import FlatTorus, Manifold, Product

__all__ = ["SinusoidalTimeEmbedding", "ManifoldFeatures"]


class SinusoidalTimeEmbedding(nn.Module):
    """Sinusoidal embedding of t in [0, 1] (Vaswani et al. 2017; Ho et al. 2020).

    emb(t) = [sin(w_k t), cos(w_k t)]_k with w_k log-spaced in [1, max_freq].

    Shapes: t ``(batch,)`` -> ``(batch, dim)``.
    """

    def __init__(self, dim: int = 64, max_freq: float = 1000.0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"`dim` must be an even integer >= 2, got {dim}")
        freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), dim // 2))
        self.register_buffer("freqs", freqs, persistent=False)
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        a = t.to(self.freqs.dtype)[..., None] * self.freqs
        return torch.cat([a.sin(), a.cos()], dim=-1)


class ManifoldFeatures(nn.Module):
    """Manifold-aware input features: a point flattened, with angles as (sin, cos) on tori.

    A FlatTorus factor contributes [sin(x), cos(x)] (continuous across the seam); every other
    factor contributes its flattened ambient coordinates.

    Shapes: x ``(batch, *point_shape)`` -> ``(batch, out_dim)``.
    """

    def __init__(self, manifold: Manifold):
        super().__init__()
        self.manifold = manifold
        factors = list(manifold.manifolds) if isinstance(manifold, Product) else [manifold]
        self._torus = [isinstance(f, FlatTorus) for f in factors]
        self._sizes = [math.prod(f.point_shape) for f in factors]
        self.out_dim = sum(2 * s if tor else s for s, tor in zip(self._sizes, self._torus))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
