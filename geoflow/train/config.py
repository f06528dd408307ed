"""Training configuration."""

from __future__ import annotations

import math
import re

import dataclasses
from dataclasses import dataclass, field
from ..nn.embedding import DEFAULT_TIME_MAX_FREQ, LEGACY_TIME_MAX_FREQ

__all__ = ["TrainConfig", "DATASET_DEFAULTS", "check_device_string"]

_ACTIVATIONS = ("silu", "gelu", "relu", "tanh", "softplus")
_SCHEDULERS = ("condot", "cosine")
_METHODS = ("euler", "midpoint", "rk4")
_MODELS = ("auto", "mlp", "unet", "egnn", "tfn")
_PATHS = ("auto", "geodesic", "affine", "premetric")
_PREMETRICS = ("biharmonic", "diffusion")
_COUPLINGS = ("independent", "ot", "ot-sinkhorn", "alignment", "ot-align", "alignment-perm")
_DIVERGENCES = ("auto", "exact", "hutchinson")

#: Per-dataset defaults that differ from the class defaults (used by :meth:`TrainConfig.for_dataset`
#: and the command line): the digits U-Net trains in minutes on a laptop CPU with these.
DATASET_DEFAULTS: dict[str, dict] = {
    "digits": dict(steps=1500, batch_size=128, lr=2e-3, warmup=100, eval_every=500, ema_decay=0.995),
    # Particle systems: an EGNN of 64 channels (Klein, Kraemer & Noe 2023 use 64 hidden, 4-5 layers).
    "dw4": dict(steps=3000, batch_size=256, lr=5e-4, hidden=64, depth=4, time_dim=32, eval_every=1000,
                val_points=500, test_points=1000, ess_samples=1000, nll_steps=20),
    "lj13": dict(steps=6000, batch_size=128, lr=5e-4, hidden=64, depth=4, time_dim=32, eval_every=2000,
                 val_points=200, test_points=1000, ess_samples=1000, nll_steps=20),
    # QM9 (geoflow.train.molecules): molecules per step, EGNN layers; stability from ess_samples molecules.
    "qm9": dict(steps=2000, batch_size=32, lr=5e-4, hidden=64, depth=4, time_dim=32, eval_every=500, ess_samples=200),
    "lj55": dict(steps=3000, batch_size=32, lr=5e-4, hidden=64, depth=5, time_dim=32, eval_every=1000,
                 val_points=100, test_points=500, ess_samples=500, nll_steps=20),
}
# Meshes (premetric paths, simulation-based training): the settings of benchmarks/mesh_table.py.  Session 7:
# 32 path steps (with 8 of them 38-60 % of Spot k=100 training paths ended more than 2 % of the mesh size away
# from x1, benchmarks/mesh_path_ends.py) and, for the high-frequency targets (k = 50, 100), 64 random Fourier
# features of scale 2 (a plain MLP on the coordinates learned nothing of Spot k=100 in the budget: biharmonic
# test NLL 1.748 -> 1.353; on the smooth k = 10 targets they hurt: bunny 1.549 -> 1.664).  Session 8: 16 steps'
# paths simulated in one call (2.7x cheaper steps), which pays for 12000 steps in the 15-minute budget.
# Likelihoods need the closest-point search at every solver stage, so validation uses fewer points and ODE
# steps than on the sphere.
for _mesh in ("bunny", "spot"):
    for _k in (10, 50, 100):
        DATASET_DEFAULTS[f"{_mesh}_k{_k}"] = dict(steps=12000, depth=4, eval_every=1000, val_points=500,
                                                   test_points=5000, nll_steps=20, normal_weight=10.0,
                                                   premetric_times=8, premetric_steps=32, premetric_chunk=16,
                                                   fourier_features=0 if _k == 10 else 64,
                                                   fourier_scale=1.0 if _k == 10 else 2.0)


def check_device_string(device, name: str = "TrainConfig.device") -> str:
    """``device`` if it is one of "auto", "cpu", "cuda", "cuda:N" (N >= 0), else ``ValueError`` naming ``name``."""
    if isinstance(device, str):
        if device in ("auto", "cpu", "cuda"):
            return device
        m = re.fullmatch(r"cuda:(\d+)", device)
        if m:
            return device
    raise ValueError(f"{name} must be 'auto', 'cpu', 'cuda' or 'cuda:N' (N a GPU index), got {device!r}; "
                     "use 'auto' to train on the first GPU when there is one, else on the CPU")


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in every checkpoint).

    Attributes:
        dataset: a name from ``geoflow.data.available_datasets()``.
        steps: optimisation steps.
        batch_size: points per step.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup: linear warm-up steps, then cosine decay to ``lr * min_lr_ratio``.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        grad_clip: maximum gradient norm (0 disables clipping).
        ema_decay: EMA factor of the weights used for evaluation (0 disables EMA).
        hidden, depth, time_dim, activation: the MLP velocity field (time_dim also sizes the
            U-Net's sinusoidal time embedding).
        scheduler: "condot" or "cosine" (the geodesic path's kappa_t, or the affine path's
            alpha_t, sigma_t).
        eval_every: steps between validations (and checkpoints).
        val_points: validation points used during training (0: all).
        nll_method, nll_steps: ODE solver for likelihoods.
        seed: seeds the split, the initialisation and every random draw of training.
        out: output folder (``last.pt``, ``best.pt``, ``metrics.json``, plots).
        n_samples: size of synthetic datasets (None: their default).
        model: "mlp" (:class:`geoflow.nn.MLPVelocity`), "unet" (:class:`geoflow.nn.UNetVelocity`),
            "egnn" (:class:`geoflow.nn.EGNNVelocity`, ``hidden`` channels, ``depth`` layers),
            "tfn" (:class:`geoflow.nn.TFNVelocity`, ``depth`` layers; 3-D particles only) or
            "auto" (default): the U-Net for image datasets (flat space with point shape
            (C, H, W)), the EGNN for particle systems (``CoMFree``), the MLP otherwise.
        path: "geodesic" (:class:`geoflow.paths.GeodesicPath`, RCFM loss), "affine"
            (:class:`geoflow.paths.AffinePath`, CFM loss; flat space only), "premetric"
            (:class:`geoflow.paths.PremetricPath`, RCFM loss: on a :class:`manifolds.Mesh` with
            the spectral premetric ``premetric``, elsewhere with the geodesic distance
            ``manifold.dist``) or "auto" (default): affine on flat space, premetric on meshes
            (which have no closed-form geodesics), geodesic otherwise.  Validation is the NLL on geodesic paths
            and the CFM loss of the EMA model on affine ones (likelihoods of 64-dimensional
            images cost too much to evaluate during training).
        cond_drop: labelled datasets (``digits``) train a class-conditional model; each label is
            replaced by the null label with this probability, so that the same network learns
            p(x) for classifier-free guidance (default 0.1).
        unet_channels, unet_mults: channels of the U-Net's first level and the multiplier of
            each level.
        coupling: how base samples are paired with the data batch: "independent" (default,
            plain (R)CFM), "ot" (exact minibatch OT, :class:`geoflow.couplings.OTCoupling`
            ``"exact"``) or "ot-sinkhorn" (entropic OT, pairs drawn from the plan).  The cost
            is the squared geodesic distance on a manifold; on labelled datasets pairs stay
            within a label.  Several processes: each solves OT on its own share of the batch.
            "alignment" (particle systems only): :class:`geoflow.couplings.AlignmentCoupling`,
            the best rotation or reflection and permutation of each pair, then minibatch OT
            on the aligned cost (equivariant OT, Klein, Kraemer & Noe 2023); "ot-align": the
            cheap variant, minibatch OT on the unaligned clouds, then only the chosen pairs
            aligned (batch instead of batch^2 alignments); "alignment-perm": like "alignment"
            with the particle order alone aligned (no rotation: one exact assignment per pair).
        ot_reg: Sinkhorn regularisation of "ot-sinkhorn", relative to the cost scale.
        align_starts, align_iters: "alignment" and "ot-align": starting rotations per pair and
            refinement rounds (Kabsch <-> Hungarian) of the alignment
            (:class:`geoflow.couplings.AlignmentCoupling`'s ``starts`` and ``n_iter``; default 2 and
            2).  1 and 0 cost about a third on LJ55 for a ~3 % higher transport cost
            (benchmarks/README.md, "Alignment on LJ55").
        nll_divergence: divergence of likelihoods: "exact", "hutchinson" (one Gaussian probe
            per point and step, from a fixed seed) or "auto" (default): exact up to 64
            dimensions, Hutchinson above (e.g. LJ55's 162).
        premetric: the premetric of the premetric path on a mesh: "biharmonic" (default) or
            "diffusion" (Chen & Lipman 2023; the diffusion time is the mesh's ``tau``).
        normal_weight: weight of the penalty on the normal part of the network's raw output in
            the RCFM loss (:func:`geoflow.losses.rcfm_loss`; 0 = off; MLP networks only).
        premetric_steps: projected Euler steps that :class:`geoflow.paths.PremetricPath`
            takes to draw x_t (default 8).
        fourier_features, fourier_scale: random Fourier features of the point appended to the MLP's
            input (:class:`geoflow.nn.ManifoldFeatures`; default 0: none) and their frequency scale
            in cycles per unit of the coordinates (default 1).  MLP networks only.
        chiral: particle and molecule datasets: an SE(3)- instead of E(3)-equivariant network
            (``EGNNVelocity(chiral=True)``, 3-D only), which tells mirror images apart, and
            rotations without reflections in the alignment couplings (default False).
        premetric_times: times drawn on each simulated pair of a premetric path (default 1):
            with r > 1 a step simulates ``batch_size / r`` pairs once on the grid s = j / n
            and takes r stratified times on each (:meth:`PremetricPath.sample_times`), so the
            simulation costs about n / r + 1 closest-point searches per training point instead
            of n + 2 (``batch_size`` stays the number of training points and must be a multiple
            of r times the number of processes).
        premetric_tail: extra path steps in the last grid interval of the premetric path
            (:class:`geoflow.paths.PremetricPath` ``tail``; default 0): without them a quarter
            of Spot's diffusion-premetric paths end more than 2 % of the mesh size from x1.
        premetric_chunk: with premetric_times > 1, the number of steps whose paths are simulated
            together (default 1): the trainer draws that many steps' batches ahead (the same
            batches, in the same order) and integrates all their pairs in one
            :meth:`PremetricPath.solve_grid` call, which costs far less per pair than small
            calls (the closest-point searches are overhead-bound: on the bunny 3.6 ms per pair
            for 32 pairs, 0.6 ms for 512).  A resume mid-chunk draws the chunk again.
        test_points: test points for the final NLL (a seeded subset; 0: all).
        ess_samples: Boltzmann datasets (``energy`` known): samples drawn from the final model
            (``qm9``: molecules sampled for the stability scores)
            to compute importance weights exp(-E(x)) / q(x), the effective sample size and
            reweighted energies (0 disables).
        device: where a single process trains: "auto" (default: ``cuda:0`` when CUDA is
            available, else the CPU), "cpu", "cuda" (``cuda:0``) or "cuda:N".  Batches, base
            samples, times and coupling draws come from the same seeded CPU generators on every
            device (so a CUDA run sees the batches of the CPU run and differs only by float
            rounding); only Hutchinson probes are drawn on the device.  Checked here for its
            form; whether the GPU exists is checked when training starts
            (:func:`geoflow.train.distributed.resolve_device`).  Under ``torchrun`` a process
            trains on its process group's device (gloo: the CPU, nccl: ``cuda:LOCAL_RANK``):
            "auto" follows it, an explicit device that differs from it is an error (e.g.
            "cpu" under nccl, whose collectives need CUDA tensors).  Not part of the run's
            identity: a run may be resumed on another device (the resume is then exact up to
            float rounding only), and the checkpoint records the device it was written on.
    """

    dataset: str = "volcano"
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 200
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    hidden: int = 256
    depth: int = 5
    time_dim: int = 64
    time_max_freq: float = DEFAULT_TIME_MAX_FREQ
    activation: str = "silu"
    scheduler: str = "condot"
    eval_every: int = 500
    val_points: int = 2000
    nll_method: str = "rk4"
    nll_steps: int = 30
    seed: int = 0
    out: str = "runs/volcano"
    n_samples: int | None = None
    extra: dict = field(default_factory=dict)
    model: str = "auto"
    path: str = "auto"
    cond_drop: float = 0.1
    unet_channels: int = 32
    unet_mults: tuple = (1, 2)
    coupling: str = "independent"
    ot_reg: float = 0.05
    align_starts: int = 2
    align_iters: int = 2
    nll_divergence: str = "auto"
    ess_samples: int = 2000
    test_points: int = 0
    premetric: str = "biharmonic"
    premetric_steps: int = 8
    premetric_times: int = 1
    premetric_chunk: int = 1
    premetric_tail: int = 0
    chiral: bool = False
    normal_weight: float = 0.0
    fourier_features: int = 0
    fourier_scale: float = 1.0
    device: str = "auto"

    def __post_init__(self):
        for name in ("steps", "batch_size", "hidden", "depth", "time_dim", "eval_every", "nll_steps", "unet_channels",
                     "premetric_steps", "premetric_times", "premetric_chunk", "align_starts"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {v!r}")
        for name in ("warmup", "val_points", "seed", "ess_samples", "test_points", "premetric_tail", "align_iters"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"TrainConfig.{name} must be a non-negative integer, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.time_max_freq, (int, float)) and math.isfinite(self.time_max_freq) and self.time_max_freq >= 1):
            raise ValueError(f"TrainConfig.time_max_freq must be a finite number >= 1, got {self.time_max_freq!r}")
        if not (0 <= self.ema_decay < 1):
            raise ValueError(f"TrainConfig.ema_decay must lie in [0, 1), got {self.ema_decay}")
        for name in ("grad_clip", "weight_decay"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"TrainConfig.{name} must be a finite number >= 0, got {v!r}")
        if not (isinstance(self.min_lr_ratio, (int, float)) and 0 <= self.min_lr_ratio <= 1):
            raise ValueError(f"TrainConfig.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"TrainConfig.activation must be one of {_ACTIVATIONS}, got {self.activation!r}")
        if self.scheduler not in _SCHEDULERS:
            raise ValueError(f"TrainConfig.scheduler must be one of {_SCHEDULERS}, got {self.scheduler!r}")
        if self.nll_method not in _METHODS:
            raise ValueError(f"TrainConfig.nll_method must be one of {_METHODS}, got {self.nll_method!r}")
        if self.model not in _MODELS:
            raise ValueError(f"TrainConfig.model must be one of {_MODELS}, got {self.model!r}")
        if self.path not in _PATHS:
            raise ValueError(f"TrainConfig.path must be one of {_PATHS}, got {self.path!r}")
        if self.premetric not in _PREMETRICS:
            raise ValueError(f"TrainConfig.premetric must be one of {_PREMETRICS}, got {self.premetric!r}")
        if isinstance(self.cond_drop, bool) or not isinstance(self.cond_drop, (int, float)) or not 0 <= self.cond_drop <= 1:
            raise ValueError(f"TrainConfig.cond_drop must lie in [0, 1], got {self.cond_drop!r}")
        if self.coupling not in _COUPLINGS:
            raise ValueError(f"TrainConfig.coupling must be one of {_COUPLINGS}, got {self.coupling!r}")
        if self.nll_divergence not in _DIVERGENCES:
            raise ValueError(f"TrainConfig.nll_divergence must be one of {_DIVERGENCES}, got {self.nll_divergence!r}")
        if not (isinstance(self.ot_reg, (int, float)) and math.isfinite(self.ot_reg) and self.ot_reg > 0):
            raise ValueError(f"TrainConfig.ot_reg must be a finite number > 0, got {self.ot_reg!r}")
        check_device_string(self.device)
        nw = self.normal_weight
        if isinstance(nw, bool) or not isinstance(nw, (int, float)) or not math.isfinite(nw) or nw < 0:
            raise ValueError(f"TrainConfig.normal_weight must be a finite number >= 0, got {nw!r}")
        ff = self.fourier_features
        if isinstance(ff, bool) or not isinstance(ff, int) or ff < 0:
            raise ValueError(f"TrainConfig.fourier_features must be an integer >= 0, got {ff!r}")
        fs = self.fourier_scale
        if isinstance(fs, bool) or not isinstance(fs, (int, float)) or not math.isfinite(fs) or fs <= 0:
            raise ValueError(f"TrainConfig.fourier_scale must be a finite number > 0, got {fs!r}")
        if not isinstance(self.chiral, bool):
            raise ValueError(f"TrainConfig.chiral must be a bool, got {self.chiral!r}")
        if self.batch_size % self.premetric_times:
            r = self.premetric_times
            raise ValueError(f"TrainConfig.batch_size ({self.batch_size}) must be a multiple of premetric_times ({r}): a "
                             f"step trains on batch_size / premetric_times pairs; use e.g. --batch-size "
                             f"{max(r, self.batch_size // r * r)} or --premetric-times 1")
        mults = self.unet_mults
        if not isinstance(mults, (tuple, list)) or not mults or any(
            isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mults
        ):
            raise ValueError(f"TrainConfig.unet_mults must be a non-empty sequence of positive ints, got {mults!r}")
        self.unet_mults = tuple(mults)

    @classmethod
    def for_dataset(cls, dataset: str, **overrides) -> "TrainConfig":
        """A config for ``dataset`` with its :data:`DATASET_DEFAULTS`, then ``overrides``."""
        return cls(dataset=dataset, **{**DATASET_DEFAULTS.get(dataset, {}), **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        if "time_max_freq" not in d:  # written before the frequency was configurable
            d = {**d, "time_max_freq": LEGACY_TIME_MAX_FREQ}
        return cls(**d)
