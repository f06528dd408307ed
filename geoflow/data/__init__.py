"""Datasets shipped inside geoflow (no download at run time) and synthetic densities.

>>> from geoflow.data import load_dataset
>>> ds = load_dataset("volcano", seed=0)          # points on Sphere(2), float32
>>> ds.train.shape, ds.manifold                   # doctest: +SKIP
((663, 3), Sphere(n=2))

Real sets (files in ``geoflow/data/files/``, provenance and licences in ``PROVENANCE.md``):
``volcano``, ``earthquake``, ``flood``, ``fire`` on S^2, ``rna`` on T^7 and the labelled 8x8
``digits`` images (flat space, point shape ``(1, 8, 8)``). Synthetic sets
with log-densities: ``vmf_mixture`` (S^2), ``wrapped_normal_torus`` and
``checkerboard_torus`` (T^2), and the 2-D benchmarks ``moons``, ``eight_gaussians`` and
``checkerboard`` (R^2).
"""

from .datasets import DEFAULT_SYNTHETIC_SAMPLES, GeoDataset, available_datasets, load_dataset
from .digits import DIGITS_CLASSES, DIGITS_SHAPE, load_digits
from .real import EARTH_DATASETS, RNA_ANGLES, lat_lon_to_sphere, load_earth, load_rna
from .synthetic import (
    Checkerboard,
    CheckerboardTorus,
    EightGaussians,
    Moons,
    SyntheticDistribution,
    VonMisesFisherMixture,
    WrappedNormalTorusMixture,
    sample_von_mises_fisher,
)

__all__ = [
    "GeoDataset",
    "load_dataset",
    "available_datasets",
    "DEFAULT_SYNTHETIC_SAMPLES",
    "load_earth",
    "load_rna",
    "load_digits",
    "DIGITS_SHAPE",
    "DIGITS_CLASSES",
    "lat_lon_to_sphere",
    "EARTH_DATASETS",
    "RNA_ANGLES",
    "SyntheticDistribution",
    "VonMisesFisherMixture",
    "WrappedNormalTorusMixture",
    "CheckerboardTorus",
    "EightGaussians",
    "Moons",
    "Checkerboard",
    "sample_von_mises_fisher",
]
