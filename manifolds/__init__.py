"""Riemannian manifolds for geometric deep learning: geometry only (torch + geoopt).

Every manifold is a :class:`Manifold` (a ``geoopt.Manifold``) with exp/log maps, geodesic
distances, geodesics, a base distribution with its exact log-density, and input checks.
This package never imports ``geoflow``; use it in any project.
"""

from .base import Manifold
from .euclidean import Euclidean
from .comfree import CoMFree
from .sphere import Sphere
from .torus import FlatTorus
from .product import Product
from .hyperbolic import Lorentz, PoincareBall
from .so3 import SO3
from .spd import SPD, sym_expm, sym_logm, sym_sqrtm
from .mesh import Mesh

__all__ = [
    "Mesh",
    "Manifold",
    "Euclidean",
    "CoMFree",
    "Sphere",
    "FlatTorus",
    "PoincareBall",
    "Lorentz",
    "SPD",
    "SO3",
    "Product",
    "sym_expm",
    "sym_logm",
    "sym_sqrtm",
]
