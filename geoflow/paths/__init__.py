"""Conditional probability paths: schedulers, affine Gaussian paths, geodesic paths, premetric flows.

t = 0 is the base (noise) distribution and t = 1 the data, as in Lipman et al. 2023.
"""

from .affine import AffinePath
from .geodesic import GeodesicPath, geodesic_velocity_reference
from .path_sample import PathSample
from .premetric import PremetricPath
from .schedulers import (
    CondOTScheduler,
    CosineScheduler,
    PolynomialScheduler,
    Scheduler,
    SchedulerOutput,
    VEScheduler,
    VPScheduler,
)

__all__ = [
    "AffinePath",
    "GeodesicPath",
    "PremetricPath",
    "PathSample",
    "Scheduler",
    "SchedulerOutput",
    "CondOTScheduler",
    "CosineScheduler",
    "PolynomialScheduler",
    "VPScheduler",
    "VEScheduler",
    "geodesic_velocity_reference",
]
