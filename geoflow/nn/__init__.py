"""Velocity networks: v(x, t, cond=None) returning a tangent vector at x."""

from .ema import EMA
from .embedding import ManifoldFeatures, SinusoidalTimeEmbedding
from .mlp import MLPVelocity

__all__ = ["MLPVelocity", "EMA", "ManifoldFeatures", "SinusoidalTimeEmbedding"]
