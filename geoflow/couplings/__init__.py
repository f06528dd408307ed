"""Couplings of base samples x0 and data x1 for flow matching.

A coupling re-pairs a training batch before the conditional path is sampled:
``coupling(x0, x1)`` returns ``(x0', x1')`` and ``coupling(x0, x1, cond)`` returns
``(x0', x1', cond')`` with ``cond'`` following ``x1'``.  The loss is unchanged; only the joint
distribution of the endpoints changes (Tong et al. 2023; Pooladian et al. 2023).

* :class:`IndependentCoupling`: x0 and x1 independent (plain CFM).
* :class:`OTCoupling`: minibatch optimal transport, exact (a permutation) or entropic
  (Sinkhorn), squared Euclidean, squared geodesic or user cost, optionally within labels.
* :class:`PairedCoupling`: x0 = y + sigma eps for inverse problems, with the image
  degradations :func:`downsample_upsample` and :func:`mask_half`.
* :class:`ReflowCoupling`: rectified flow, x1 = the trained model's ODE endpoint of x0.
* :class:`AlignmentCoupling`: point clouds: per pair Kabsch rotation and Hungarian permutation
  within particle types (:func:`align`, :func:`kabsch`), then minibatch OT on the aligned cost.
* :func:`path_energy`: path energy, normalised path energy and straightness of a flow.
* :func:`sinkhorn`, :func:`exact_assignment`, :func:`pairwise_cost`: the OT building blocks.

Example::

    >>> coupling = OTCoupling("exact")
    >>> x0, x1 = coupling(torch.randn(256, 2), data_batch)  # doctest: +SKIP
    >>> sample = path.sample(x0, x1, t)  # doctest: +SKIP
"""

from .alignment import Alignment, AlignmentCoupling, align, kabsch
from .base import Coupling, IndependentCoupling
from .metrics import PathEnergy, path_energy
from .ot import OTCoupling, SinkhornResult, exact_assignment, pairwise_cost, sinkhorn
from .paired import PairedCoupling, downsample_upsample, mask_half
from .reflow import ReflowCoupling

__all__ = [
    "Coupling",
    "IndependentCoupling",
    "OTCoupling",
    "PairedCoupling",
    "ReflowCoupling",
    "AlignmentCoupling",
    "Alignment",
    "align",
    "kabsch",
    "downsample_upsample",
    "mask_half",
    "path_energy",
    "PathEnergy",
    "sinkhorn",
    "SinkhornResult",
    "exact_assignment",
    "pairwise_cost",
]
