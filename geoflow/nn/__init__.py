"""Velocity networks: v(x, t, cond=None) returning a tangent vector at x."""

from .conditioning import ConditionalMixin, drop_condition, null_condition
from .ema import EMA
from .embedding import ManifoldFeatures, SinusoidalTimeEmbedding
from .mlp import MLPVelocity
from .unet import UNetVelocity

__all__ = [
    "MLPVelocity",
    "UNetVelocity",
    "EMA",
    "ManifoldFeatures",
    "SinusoidalTimeEmbedding",
    "ConditionalMixin",
    "null_condition",
    "drop_condition",
]
