"""Velocity networks: v(x, t, cond=None) returning a tangent vector at x.

Equivariant networks for point clouds and molecules (:class:`EGNNVelocity` on torch-geometric,
:class:`TFNVelocity` on e3nn) take dense ``(batch, n_particles, d)`` tensors or PyG batches and
return centre-of-mass-free velocities (tangent vectors of :class:`manifolds.CoMFree`).
"""

from .conditioning import ConditionalMixin, drop_condition, null_condition
from .ema import EMA
from .embedding import ManifoldFeatures, SinusoidalTimeEmbedding
from .mlp import MLPVelocity
from .unet import UNetVelocity

# The equivariant networks import torch-geometric and e3nn (several seconds, through torch._dynamo):
# load them on first use so that ``import geoflow.nn`` stays fast for everything else.
_LAZY = {"EGNNVelocity": ".egnn", "EGNNLayer": ".egnn", "ChiralEGNNLayer": ".egnn", "TFNVelocity": ".tfn",
         "TFNLayer": ".tfn"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))

__all__ = [
    "MLPVelocity",
    "UNetVelocity",
    "EGNNVelocity",
    "TFNVelocity",
    "EGNNLayer",
    "ChiralEGNNLayer",
    "TFNLayer",
    "EMA",
    "ManifoldFeatures",
    "SinusoidalTimeEmbedding",
    "ConditionalMixin",
    "null_condition",
    "drop_condition",
]
