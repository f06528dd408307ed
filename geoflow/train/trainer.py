"""The training loop: AdamW, warm-up + cosine decay, clipping, EMA, validation NLL, exact resume, DDP."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from manifolds import CoMFree, Euclidean, Mesh

from ..couplings import AlignmentCoupling, OTCoupling
from ..losses import cfm_loss, rcfm_loss
from ..nn import EMA, EGNNVelocity, MLPVelocity, TFNVelocity, UNetVelocity
from ..paths import AffinePath, CondOTScheduler, CosineScheduler, GeodesicPath, PremetricPath
from .checkpoint import eval_weights, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import DistInfo, init_distributed, resolve_device

__all__ = ["Trainer", "train", "build_model", "build_path", "resolve_model", "resolve_path", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


def _is_image(manifold) -> bool:
    return isinstance(manifold, Euclidean) and len(manifold.point_shape) == 3


def resolve_model(config: TrainConfig, manifold) -> str:
    """The network kind of ``config.model`` ("auto": "unet" on images, "egnn" on particles, "mlp" otherwise)."""
    if config.model != "auto":
        return config.model
    if isinstance(manifold, CoMFree):
        return "egnn"
    return "unet" if _is_image(manifold) else "mlp"


def resolve_path(config: TrainConfig, manifold) -> str:
    """The path kind of ``config.path`` ("auto": "affine" on flat space, "premetric" on meshes, "geodesic" otherwise)."""
    mesh = isinstance(manifold, Mesh)
    if config.path != "auto":
        if config.path == "affine" and not isinstance(manifold, Euclidean):
            other = "premetric" if mesh else "geodesic"
            raise ValueError(f"path 'affine' needs flat space, but the dataset lives on {manifold!r}; use path {other!r}")
        if config.path == "geodesic" and mesh:
            raise ValueError(f"path 'geodesic' needs closed-form geodesics, which a triangle mesh lacks ({manifold!r}); "
                             "use path 'premetric' (or 'auto')")
        return config.path
    if mesh:
        return "premetric"
    return "affine" if isinstance(manifold, Euclidean) else "geodesic"


def build_path(config: TrainConfig, manifold):
    """The probability path of ``config`` on ``manifold`` (see :func:`resolve_path`), without per-batch input checks."""
    kappa = CondOTScheduler() if config.scheduler == "condot" else CosineScheduler()
    kind = resolve_path(config, manifold)
    if kind == "affine":
        return AffinePath(kappa, validate=False)
    if kind == "premetric":
        premetric = config.premetric if isinstance(manifold, Mesh) else None
        return PremetricPath(manifold, premetric, kappa, steps=config.premetric_steps, tail=config.premetric_tail,
                             validate=False)
    return GeodesicPath(manifold, kappa, validate=False)


def build_model(config: TrainConfig, manifold, *, num_classes: int | None = None):
    """The velocity network of ``config`` on ``manifold`` (class-conditional when ``num_classes`` is set)."""
    kind = resolve_model(config, manifold)
    if config.fourier_features and kind != "mlp":
        raise ValueError(f"fourier_features apply to MLP velocity networks, not model {kind!r}; leave them at 0")
    if kind in ("egnn", "tfn"):
        if not isinstance(manifold, CoMFree):
            raise ValueError(f"model {kind!r} needs a particle dataset (dw4, lj13, lj55), got {manifold!r}")
        if num_classes is not None:
            raise ValueError(f"model {kind!r} does not take class labels")
        if config.chiral and (kind != "egnn" or manifold.spatial_dim != 3):
            raise ValueError(f"chiral (SE(3)) models are EGNNs on 3-D particles; got model {kind!r} on {manifold!r}")
        if kind == "egnn":
            return EGNNVelocity(hidden=config.hidden, layers=config.depth, time_dim=config.time_dim, chiral=config.chiral)
        if manifold.spatial_dim != 3:
            raise ValueError(f"model 'tfn' needs 3-D particles, got {manifold!r}; use model 'egnn'")
        return TFNVelocity(layers=config.depth)
    if isinstance(manifold, CoMFree):
        raise ValueError(f"model {kind!r} is not equivariant; particle datasets take model 'egnn' or 'tfn'")
    if config.chiral:
        raise ValueError("chiral applies to particle and molecule datasets (an SE(3) EGNN); leave it off here")
    if kind == "unet":
        if not _is_image(manifold):
            raise ValueError(f"model 'unet' needs an image dataset (flat space with point shape (C, H, W)), got {manifold!r}")
        return UNetVelocity(
            manifold.point_shape[0], base=config.unet_channels, channel_mults=config.unet_mults,
            time_dim=config.time_dim, time_max_freq=config.time_max_freq, num_classes=num_classes,
        )
    return MLPVelocity(
        manifold, hidden=config.hidden, depth=config.depth, time_dim=config.time_dim, time_max_freq=config.time_max_freq,
        activation=config.activation,
        num_classes=num_classes, fourier_features=config.fourier_features, fourier_scale=config.fourier_scale,
    )


def optimizer_step(loss, model, opt, sched, ema, grad_clip: float) -> None:
    """Backward, gradient-norm clipping (``grad_clip`` > 0), optimiser and schedule step, EMA update."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    sched.step()
    if ema is not None:
        ema.update(model)


def _lr_lambda(config: TrainConfig):
    def f(step: int) -> float:
        if config.warmup and step < config.warmup:
            return (step + 1) / config.warmup
        span = max(1, config.steps - config.warmup)
        frac = min(1.0, (step - config.warmup) / span)
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))

    return f


def resolve_divergence(divergence: str, manifold) -> str:
    """The divergence estimator for likelihoods: ``divergence`` itself, or for "auto" the exact divergence up to 64
    dimensions and Hutchinson's estimator above (where the exact one costs a backward pass per dimension)."""
    if divergence != "auto":
        return divergence
    return "exact" if manifold.dim <= 64 else "hutchinson"


class Trainer:
    """Riemannian flow matching on a dataset from :mod:`geoflow.data`.

    Each step draws a batch of data x1 and base samples x0, times t ~ U(0, 1), samples the geodesic
    path and minimises the RCFM loss (on flat space: the affine path and the CFM loss; on a
    triangle mesh: the premetric path of Chen & Lipman 2023 with the RCFM loss; see
    ``TrainConfig.path``).  On labelled datasets the model is class-conditional and each label is
    replaced by the null label with probability ``cond_drop`` (classifier-free guidance).  Every
    ``eval_every`` steps it computes the validation NLL of the EMA model (on affine paths: its CFM
    loss on the validation split, with fixed noise), writes ``last.pt`` (and ``best.pt`` when the
    metric improved) atomically.  Running
    again with the same ``out`` resumes from ``last.pt``: the RNG states of torch, numpy, Python
    and the data sampler are restored, so the continued run equals an uninterrupted one.

    Several processes (``torchrun``, see :func:`~geoflow.train.distributed.init_distributed`):
    the model is wrapped in ``DistributedDataParallel``.  ``batch_size`` stays the *global* batch:
    every process draws the same global batch (data indices, x0, t, dropped labels) from the
    shared seeded generator and keeps its own contiguous share of ``batch_size / world_size``
    rows, so the run follows the single-process one up to float rounding.  Rank 0 alone
    validates, writes checkpoints and metrics and logs; the others wait for its result.  A
    checkpoint holds the RNG states of every rank.

    Device (``config.device``, see :func:`~geoflow.train.distributed.resolve_device`): the model,
    its EMA and optimiser state live there, and each batch is moved there after it was drawn
    (and coupled) on the CPU from the seeded generators, so the random streams, and with them
    the batches, do not depend on the device.  Checkpoints load on any machine (tensors are
    mapped to the CPU, then copied to the device).  A resume on a GPU is bit for bit only where
    the network's kernels are deterministic (the MLP; not cuDNN convolutions or scatter-adds).

    Args:
        config: the run.
        progress: show a progress bar (rank 0 only).
        log: where messages go (rank 0 only).
        dist: the process group (default: :func:`init_distributed` from the environment, a
            single process unless launched by ``torchrun``).
    """

    def __init__(self, config: TrainConfig, *, progress: bool = True, log=print, dist: DistInfo | None = None):
        from ..data import load_dataset

        self.dist = dist = init_distributed() if dist is None else dist
        #: Where this process trains (``config.device`` resolved; under torchrun the process group's device).
        self.device = resolve_device(config.device, dist, name="TrainConfig.device")
        unit = dist.world_size * config.premetric_times
        if config.batch_size % unit:
            per = f" times premetric_times ({config.premetric_times})" if config.premetric_times > 1 else ""
            raise ValueError(
                f"batch_size {config.batch_size} is the global batch and must be divisible by the number of "
                f"processes ({dist.world_size}){per}; use e.g. --batch-size "
                f"{config.batch_size // unit * unit or unit}"
            )
        #: Rows of the global batch that this process trains on.
        self.local_batch = config.batch_size // dist.world_size
        self.config = config
        self.progress = progress and dist.is_main
        self.log = log if dist.is_main else (lambda *args, **kwargs: None)
        self.out = Path(config.out)
        self.data = load_dataset(config.dataset, seed=config.seed, n_samples=config.n_samples)
        self.manifold = self.data.manifold
        torch.manual_seed(config.seed)
        self.conditional = self.data.labels is not None
        self.model = build_model(config, self.manifold, num_classes=self.data.num_classes).to(self.device)
        self.ema = EMA(self.model, config.ema_decay) if config.ema_decay > 0 else None
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        #: The module the loss calls: ``self.model`` itself, or its DistributedDataParallel wrapper.
        self.train_model = self.model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.train_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if dist.rank > 0:  # per-rank draws from the global generator (dropout) must differ between ranks
            torch.manual_seed(_rank_seed(config.seed, dist.rank, 0))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(config))
        self.path_kind = resolve_path(config, self.manifold)
        if self.path_kind != "premetric":  # options of the premetric path, each at its neutral value elsewhere
            for name, neutral in (("premetric_times", 1), ("premetric_tail", 0), ("premetric_chunk", 1)):
                if getattr(config, name) != neutral:
                    raise ValueError(f"TrainConfig.{name} ({getattr(config, name)}) applies to premetric paths only; "
                                     f"this run uses the {self.path_kind} path: leave it at {neutral}")
        # Data are validated once at load time and x0 comes from random_base: no per-batch checks.
        self.path = build_path(config, self.manifold)
        #: Validation metric: "nll" (geodesic and premetric paths) or "loss" (the CFM loss, affine paths).
        self.val_metric = "loss" if self.path_kind == "affine" else "nll"
        self.gen = torch.Generator().manual_seed(config.seed + 1)
        #: The coupling's own stream (Sinkhorn pair draws), one per process.
        self.coupling_gen = torch.Generator().manual_seed(_rank_seed(config.seed + 2, dist.rank, 0))
        self.coupling = self._build_coupling()
        self.step = 0
        self.best_val = math.inf
        self.history: list[dict] = []
        self.running_loss: float | None = None  # exponential moving average of the training loss
        random.seed(config.seed)
        np.random.seed(config.seed % 2**32)
        #: Drawn batches (with their simulated paths) of the current premetric chunk not trained on yet.
        self._pending: list[dict] = []
        self._chunk_start = None

    def _build_coupling(self):
        cfg = self.config
        if cfg.coupling == "independent":
            return None
        if cfg.coupling in ("alignment", "ot-align", "alignment-perm"):
            if not isinstance(self.manifold, CoMFree):
                raise ValueError(f"coupling {cfg.coupling!r} needs a particle dataset (dw4, lj13, lj55), got {self.manifold!r}")
            if cfg.coupling == "alignment-perm":  # the particle order alone: no rotation, so no reflection either
                return AlignmentCoupling(rotations=False, ot=True)
            # The Boltzmann densities here are invariant under reflections too: E(D) alignment
            # (rotations only for a chiral model, whose density need not be).
            return AlignmentCoupling(reflections=not cfg.chiral, ot=True if cfg.coupling == "alignment" else "plain",
                                     starts=cfg.align_starts, n_iter=cfg.align_iters)
        method = "exact" if cfg.coupling == "ot" else "sinkhorn"
        flat = isinstance(self.manifold, Euclidean)
        return OTCoupling(
            method, reg=cfg.ot_reg, manifold=None if flat else self.manifold, by_label=self.conditional,
            sampling="conditional", generator=self.coupling_gen,
        )

    # ------------------------------------------------------------ checkpoint
    def rng_state(self) -> dict:
        """This process's RNG states: torch (global; on a GPU also its CUDA generator), the data sampler, numpy and Python."""
        state = {
            "torch": torch.get_rng_state(),
            "data": self.gen.get_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
            "coupling": self.coupling_gen.get_state(),
        }
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        if self._pending:  # mid-chunk: the generators before the chunk's draws, and how many of its steps are done
            state["chunk"] = {"data": self._chunk_start[0], "coupling": self._chunk_start[1],
                              "used": self.chunk - len(self._pending)}
        return state

    def state_dict(self, *, rng_ranks: list[dict] | None = None) -> dict:
        """Everything a resume needs.

        ``rng_ranks`` (several processes): the :meth:`rng_state` of every rank, gathered by the
        caller; saved as ``"rng_ranks"``, with rank 0's also as ``"rng"``.
        """
        state = {
            "config": self.config.to_dict(),
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.opt.state_dict(),
            "lr_scheduler": self.sched.state_dict(),
            "best_val_nll": self.best_val,  # the best validation metric (NLL, or loss when val_metric is "loss")
            "val_metric": self.val_metric,
            "history": self.history,
            "running_loss": self.running_loss,
            "manifold": repr(self.manifold),
            "world_size": self.dist.world_size,
            "device": str(self.device),
            "backend": self.dist.backend,
            "rng": self.rng_state() if rng_ranks is None else rng_ranks[0],
        }
        if rng_ranks is not None and self.dist.world_size > 1:
            state["rng_ranks"] = rng_ranks
        return state

    def load_state_dict(self, state: dict, *, source: str = "checkpoint") -> None:
        if state.get("manifold") != repr(self.manifold):
            raise ValueError(
                f"{source} was trained on {state.get('manifold')}, but dataset {self.config.dataset!r} lives on "
                f"{self.manifold!r}; use another --out folder"
            )
        saved = TrainConfig.from_dict(state["config"])
        # The device is where the run trains, not what it is: a run may continue on another device.
        mine = {**self.config.to_dict(), "device": None}
        theirs = {**saved.to_dict(), "device": None}
        if theirs != mine:
            diff = {k: (v, mine[k]) for k, v in theirs.items() if mine[k] != v}
            raise ValueError(f"{source} was written with a different config {diff} (saved, requested); use another --out folder")
        written_on = state.get("device", "cpu")
        if _device_kind(written_on) != self.device.type:
            self.log(f"{source} was written on {written_on}, resuming on {self.device}: the continued run equals an "
                     "uninterrupted one up to float rounding only")
        try:
            self.model.load_state_dict(state["model"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
        except (RuntimeError, KeyError, TypeError) as exc:
            raise ValueError(f"{source}: its weights do not fit the model its config builds ({' '.join(str(exc).split())}); use another --out folder") from None
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["lr_scheduler"])
        self.step = int(state["step"])
        self.best_val = float(state["best_val_nll"])
        self.history = list(state["history"])
        self.running_loss = state.get("running_loss")
        # The data sampler is shared by all ranks (same global batches); the other streams are per rank.
        rng, ranks, rank = state["rng"], state.get("rng_ranks"), self.dist.rank
        same_world = len(ranks) == self.dist.world_size if ranks is not None else self.dist.world_size == 1
        if ranks is not None and same_world:
            rng = ranks[rank]
        if not same_world:
            self.log(f"{source} was written by {state.get('world_size', 1)} process(es), resuming with "
                     f"{self.dist.world_size}: the global batches are unchanged, the per-process RNG streams restart")
        torch.set_rng_state(rng["torch"])
        self.gen.set_state(state["rng"]["data"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if "coupling" in rng:
            self.coupling_gen.set_state(rng["coupling"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        if not same_world and rank > 0:
            torch.manual_seed(_rank_seed(self.config.seed, rank, self.step))
        self._pending = []
        chunk = rng.get("chunk")
        if chunk is not None and self.chunk > 1:  # written mid-chunk: draw and simulate that chunk again
            after = self.gen.get_state(), self.coupling_gen.get_state()
            self.gen.set_state(chunk["data"])
            self.coupling_gen.set_state(chunk["coupling"])
            self._fill_chunk()
            del self._pending[: int(chunk["used"])]
            self.gen.set_state(after[0])
            self.coupling_gen.set_state(after[1])

    def save(self, name: str) -> Path:
        return save_checkpoint(self.state_dict(), self.out / name)

    def maybe_resume(self) -> bool:
        """Resume from ``out/last.pt`` if it exists (several processes: rank 0 reads it and sends it to all)."""
        last = self.out / "last.pt"
        state = self.dist.run_on_main(lambda: load_checkpoint(last) if last.exists() else None)
        if state is None:
            return False
        self.load_state_dict(state, source=str(last))
        self.log(f"resumed from {last} at step {self.step}")
        return True

    # ---------------------------------------------------------------- steps
    def eval_model(self):
        return self.ema.module if self.ema is not None else self.model

    def _draw(self) -> dict:
        """One step's draws: the global batch from the shared generator, this process's share of
        it, re-paired by the coupling, on the device (keys idx, x0, x1, t, cond, labels)."""
        cfg, m, dist = self.config, self.manifold, self.dist
        train = self.data.train
        # The global batch, drawn identically by every process from the shared generator ...
        # (premetric_times r > 1: batch_size / r pairs, each with r stratified times)
        r = cfg.premetric_times if self.path_kind == "premetric" else 1
        pairs, local = cfg.batch_size // r, self.local_batch // r
        idx = torch.randint(0, train.shape[0], (pairs,), generator=self.gen)
        x1 = train[idx]
        x0 = m.random_base(pairs, generator=self.gen, dtype=x1.dtype)
        if r == 1:
            t = torch.rand(pairs, generator=self.gen, dtype=x1.dtype)
        else:
            t = (torch.arange(r, dtype=x1.dtype) + torch.rand(pairs, r, generator=self.gen, dtype=x1.dtype)) / r
        cond = labels = None
        if self.conditional:
            labels = self.data.labels["train"][idx]
            cond = self.model.drop_cond(labels, cfg.cond_drop, generator=self.gen)
        if dist.world_size > 1:  # ... of which this process keeps rows [rank * b, (rank + 1) * b)
            share = slice(dist.rank * local, (dist.rank + 1) * local)
            x1, x0, t = x1[share], x0[share], t[share]
            cond = cond[share] if cond is not None else None
            labels = labels[share] if labels is not None else None
        if self.coupling is not None:
            # Re-pair this process's share: x1 (and so its labels and dropped labels) stay in
            # place and x0 is re-ordered (exact) or redrawn from the plan (Sinkhorn, by x1).
            x0 = self.coupling(x0, x1, labels)[0] if labels is not None else self.coupling(x0, x1)[0]
        if self.device.type != "cpu":
            x1, x0, t = x1.to(self.device), x0.to(self.device), t.to(self.device)
            cond = cond.to(self.device) if cond is not None else None
        return dict(idx=idx, x0=x0, x1=x1, t=t, cond=cond, labels=labels)

    @property
    def chunk(self) -> int:
        """Steps whose premetric paths are simulated together (``config.premetric_chunk``; 1 without
        ``premetric_times`` > 1, where there is no shared grid)."""
        return self.config.premetric_chunk if self.path_kind == "premetric" and self.config.premetric_times > 1 else 1

    def _fill_chunk(self) -> None:
        """Draw the next ``chunk`` steps' batches (in the order single steps draw them, so the
        batches are those of ``premetric_chunk=1``) and simulate all their paths in one
        :meth:`PremetricPath.solve_grid` call; each step then takes its rows.  Records the
        generators' states before the draws, so that a checkpoint written mid-chunk resumes exactly."""
        self._chunk_start = (self.gen.get_state(), self.coupling_gen.get_state())
        draws = [self._draw() for _ in range(self.chunk)]
        grid = self.path.solve_grid(torch.cat([d["x0"] for d in draws]), torch.cat([d["x1"] for d in draws]))
        lo = 0
        for d in draws:
            n = d["x0"].shape[0]
            d["grid"] = self.path.grid_rows(grid, slice(lo, lo + n))
            lo += n
        self._pending = draws

    def train_step(self) -> float:
        """One optimisation step on a global batch; returns its loss (the mean over all processes)."""
        cfg, m, dist = self.config, self.manifold, self.dist
        r = cfg.premetric_times if self.path_kind == "premetric" else 1
        if self.chunk > 1:
            if not self._pending:
                self._fill_chunk()
            b = self._pending.pop(0)
        else:
            b = self._draw()
        idx, x0, x1, t, cond = b["idx"], b["x0"], b["x1"], b["t"], b["cond"]
        if r == 1:
            sample = self.path.sample(x0, x1, t)
        else:
            sample = self.path.sample_times(x0, x1, t, grid=b.get("grid"))
            cond = cond.repeat_interleave(r, 0) if cond is not None else None
        if self.path_kind == "affine":
            loss = cfm_loss(self.train_model, sample, cond=cond)
        else:
            loss = rcfm_loss(m, self.train_model, sample, cond=cond, normal_weight=self.config.normal_weight)
        # Equal shares: the mean of the per-process means is the global mean (DDP averages the gradients alike).
        global_loss = dist.mean(loss.detach())
        if not torch.isfinite(global_loss):
            raise TrainingDiverged(
                f"loss is {float(global_loss)} at step {self.step} (batch indices {idx[:8].tolist()}...); "
                f"the last good checkpoint is {self.out / 'last.pt'}; lower --lr or raise --grad-clip"
            )
        optimizer_step(loss, self.model, self.opt, self.sched, self.ema, cfg.grad_clip)
        self.step += 1
        return float(global_loss)

    def nll(self, x: torch.Tensor, *, model=None, steps=None, method=None, batch: int = 2048) -> torch.Tensor:
        """Per-point negative log-likelihood of ``x`` under the (EMA) model."""
        from ..solvers import log_likelihood

        model = self.eval_model() if model is None else model
        divergence = self.divergence
        gen = torch.Generator(device=self.device).manual_seed(self.config.seed + 3) if divergence != "exact" else None
        out = []
        for chunk in x.split(batch):
            lp = log_likelihood(
                model, chunk.to(self.device), self.manifold, method=method or self.config.nll_method,
                steps=steps or self.config.nll_steps, divergence=divergence, generator=gen,
            )
            out.append(-lp.detach().cpu())
        return torch.cat(out)

    @property
    def divergence(self) -> str:
        """The divergence of likelihoods ("auto": exact up to 64 dimensions, Hutchinson above)."""
        return resolve_divergence(self.config.nll_divergence, self.manifold)

    def importance_weights(self, model=None, n: int | None = None, *, seed: int = 0) -> dict:
        """Samples of the model with their importance weights against the data's energy.

        Draws ``n`` base points (seeded), integrates the flow to x (``nll_method``,
        ``nll_steps``), computes log q(x) with :meth:`nll` and log w = -E(x) - log q(x).
        Returns ``samples``, ``log_q``, ``energy``, ``log_w`` and ``ess``: the effective sample
        size (sum w)^2 / (n sum w^2) as a fraction of n (Kish), plus the mean energy of the
        samples and its self-normalised importance-weighted estimate.
        """
        from ..solvers import sample

        if self.data.energy is None:
            raise ValueError(f"dataset {self.config.dataset!r} has no energy; importance weights need a Boltzmann dataset")
        model = self.eval_model() if model is None else model
        n = self.config.ess_samples if n is None else n
        g = torch.Generator().manual_seed(seed)
        x0 = self.manifold.random_base(n, generator=g, dtype=self.data.train.dtype).to(self.device)
        with torch.no_grad():
            xs = torch.cat([sample(model, c, self.manifold, method=self.config.nll_method, steps=self.config.nll_steps)
                            for c in x0.split(1024)]).cpu()
        log_q = -self.nll(xs, model=model, batch=1024).double()
        energy = self.data.energy(xs.double())
        log_w = torch.where(torch.isfinite(energy) & torch.isfinite(log_q), -energy - log_q,
                            torch.full_like(log_q, -math.inf))
        w = torch.softmax(log_w, 0)
        ess = float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)) / n)
        finite = torch.isfinite(energy)
        return {
            "samples": xs, "log_q": log_q, "energy": energy, "log_w": log_w, "ess": ess,
            "energy_mean": float(energy[finite].mean()), "energy_reweighted": float((w[finite] * energy[finite]).sum()),
        }

    @torch.no_grad()
    def flow_matching_loss(self, split: str, *, model=None, repeats: int = 4) -> float:
        """CFM loss of the (EMA) model on a split, with fixed noise (seeded by ``config.seed``).

        Each point is paired with ``repeats`` base samples and times drawn from a generator seeded
        with ``seed + 2`` (the training random streams are not touched); labelled sets use their
        labels (the conditional loss).
        """
        model = self.eval_model() if model is None else model
        x = getattr(self.data, split)
        labels = self.data.labels[split] if self.conditional else None
        if self.config.val_points and x.shape[0] > self.config.val_points:
            keep = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(self.config.seed + 2))
            keep = keep[: self.config.val_points]
            x, labels = x[keep], (labels[keep] if labels is not None else None)
        g = torch.Generator().manual_seed(self.config.seed + 2)
        total = 0.0
        for _ in range(repeats):
            x0 = self.manifold.random_base(x.shape[0], generator=g, dtype=x.dtype)
            t = torch.rand(x.shape[0], generator=g, dtype=x.dtype)
            if self.device.type != "cpu":
                x0, t = x0.to(self.device), t.to(self.device)
            sample = self.path.sample(x0, x.to(self.device), t)
            cond = labels.to(self.device) if labels is not None else None
            if self.path_kind == "affine":
                total += float(cfm_loss(model, sample, cond=cond))
            else:
                total += float(rcfm_loss(self.manifold, model, sample, cond=cond, normal_weight=self.config.normal_weight))
        return total / repeats

    def validate(self) -> float:
        if self.val_metric == "loss":
            return self.flow_matching_loss("val")
        val = self.data.val
        if self.config.val_points and val.shape[0] > self.config.val_points:
            g = torch.Generator().manual_seed(self.config.seed + 2)
            val = val[torch.randperm(val.shape[0], generator=g)[: self.config.val_points]]
        return float(self.nll(val).mean())

    # ---------------------------------------------------------------- run
    def fit(self) -> dict:
        """Train to ``config.steps`` (resuming from ``out/last.pt``), then :meth:`finish`; returns the metrics."""
        cfg, dist = self.config, self.dist
        if dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.maybe_resume()
        t_start = time.time()
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.dataset}", disable=not self.progress,
                   dynamic_ncols=True)
        while self.step < cfg.steps:
            loss = self.train_step()
            self.running_loss = running = loss if self.running_loss is None else 0.98 * self.running_loss + 0.02 * loss
            bar.update(1)
            if self.step % 50 == 0:
                bar.set_postfix(loss=f"{running:.4f}", lr=f"{self.sched.get_last_lr()[0]:.2e}")
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                val = dist.run_on_main(self.validate)
                self.history.append({"step": self.step, "loss": running, f"val_{self.val_metric}": val})
                improved = val < self.best_val
                if improved:
                    self.best_val = val
                if dist.enabled:  # every rank's RNG states go into rank 0's checkpoint
                    dist.run_on_main(self._saver(improved, dist.gather(self.rng_state())))
                else:
                    self.save("last.pt")
                    if improved:
                        self.save("best.pt")
                what = "val NLL" if self.val_metric == "nll" else "val loss"
                if dist.is_main:
                    bar.write(f"step {self.step}: loss {running:.4f}  {what} {val:.4f}{'  (best)' if improved else ''}")
        bar.close()
        seconds = time.time() - t_start
        return dist.run_on_main(lambda: self.finish(seconds))

    def _saver(self, improved: bool, rng_ranks: list[dict]):
        def save():
            state = self.state_dict(rng_ranks=rng_ranks)
            save_checkpoint(state, self.out / "last.pt")
            if improved:
                save_checkpoint(state, self.out / "best.pt")

        return save

    def finish(self, seconds: float) -> dict:
        """Test NLL (or loss) of the best checkpoint's EMA model; writes ``metrics.json`` (rank 0's job)."""
        best = load_checkpoint(self.out / "best.pt") if (self.out / "best.pt").exists() else self.state_dict()
        model = build_model(self.config, self.manifold, num_classes=self.data.num_classes).to(self.device)
        model = eval_weights(model, best, self.config.ema_decay)
        test = self.data.test
        if self.config.test_points and test.shape[0] > self.config.test_points:
            g = torch.Generator().manual_seed(self.config.seed + 4)
            test = test[torch.randperm(test.shape[0], generator=g)[: self.config.test_points]]
        if self.val_metric == "nll":
            test_nll = float(self.nll(test, model=model).mean())
            scores = {"test_nll": test_nll, "best_val_nll": self.best_val}
        else:
            test_nll = None
            scores = {"test_nll": None, "test_loss": self.flow_matching_loss("test", model=model),
                      "best_val_loss": self.best_val}
        if self.data.energy is not None and self.config.ess_samples > 0:
            iw = self.importance_weights(model)
            scores.update(
                ess=iw["ess"], ess_samples=self.config.ess_samples,
                energy={"samples": iw["energy_mean"], "reweighted": iw["energy_reweighted"],
                        "test": float(self.data.energy(self.data.test.double()).mean())},
            )
        metrics = {
            "dataset": self.config.dataset,
            **scores,
            "best_step": int(best["step"]),
            "steps": self.step,
            "train_seconds": seconds,
            "n_train": int(self.data.train.shape[0]),
            "n_test": int(test.shape[0]),
            "seed": self.config.seed,
            "world_size": self.dist.world_size,
            "config": self.config.to_dict(),
        }
        tmp = self.out / "metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=2))
        tmp.replace(self.out / "metrics.json")
        if test_nll is not None:
            self.log(f"test NLL ({self.config.dataset}, {test.shape[0]} points): {test_nll:.4f}")
            if isinstance(self.manifold, Mesh):
                self.log(f"note: on a mesh the solver converges at first order where paths cross edges; to check this "
                         f"number run: python benchmarks/mesh_nll_check.py {self.out / 'best.pt'} (NLL at 5/20/80 steps)")
        else:
            self.log(f"test CFM loss ({self.config.dataset}, {self.data.test.shape[0]} points): {metrics['test_loss']:.4f}")
        if "ess" in metrics:
            e = metrics["energy"]
            self.log(f"ESS {100 * metrics['ess']:.2f}% of {metrics['ess_samples']} samples; mean energy: samples "
                     f"{e['samples']:.2f}, reweighted {e['reweighted']:.2f}, test data {e['test']:.2f}")
        return metrics


def _device_kind(device: str) -> str:
    """"cuda" for "cuda" / "cuda:N", else the string itself."""
    return str(device).split(":", 1)[0]


def _rank_seed(seed: int, rank: int, step: int) -> int:
    """A seed for rank ``rank``'s own torch stream (rank 0 keeps the single-process one)."""
    return (seed * 1_000_003 + rank * 7_919 + step) % 2**63


def train(config: TrainConfig, **kwargs) -> dict:
    """Train (or resume) a run and return its metrics (see :class:`Trainer`)."""
    return Trainer(config, **kwargs).fit()
