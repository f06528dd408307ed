"""Molecule generation on QM9: hybrid transport of coordinates and atom types with an EGNN.

Each molecule is a graph of its real atoms (no padding): positions x in R^(n x 3) on the
centre-of-mass-free subspace and atom-type features h in R^(n x 5) (one-hot H C N O F times
``TYPE_SCALE``).  Both move on the conditional OT path from noise, x_t = t x1 + (1 - t) x0 and
h_t = t h1 + (1 - t) h0, with x0 the CoM-free Gaussian of the molecule's size and h0 ~ N(0, I):
the hybrid transport of EquiFM (Song et al. 2023, "Equivariant Flow Matching with Hybrid
Probability Transport for 3D Molecule Generation", NeurIPS), here with one schedule for both
channels.  An E(3)-equivariant EGNN (:class:`geoflow.nn.EGNNVelocity` with ``cond_dim=5`` and
``feature_out_dim=5``) predicts both velocities; the loss is the mean squared error of the two,
per atom.  Samples draw the number of atoms from the training histogram, integrate from t = 0 to
1 and read the types as argmax h_1; :func:`geoflow.data.molecules.stability` scores them.

The density is invariant under rotations *and reflections* (EGNN is E(3)-equivariant), so it
cannot tell enantiomers apart; ``TrainConfig.chiral`` (``geoflow train qm9 --chiral``) trains the
SE(3)-equivariant EGNN instead (:class:`geoflow.nn.ChiralEGNNLayer`), whose density can.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.molecules import QM9_ELEMENTS, load_qm9, pad_molecules, stability, validity
from ..nn import EMA, EGNNVelocity
from .checkpoint import eval_weights, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .trainer import TrainingDiverged, _lr_lambda, optimizer_step

__all__ = ["MoleculeTrainer", "sample_molecules", "TYPE_SCALE"]


def _has_rdkit() -> bool:
    """RDKit validity is reported when RDKit is installed (``geoflow[chem]``); stability always."""
    import importlib.util

    return importlib.util.find_spec("rdkit") is not None

#: Scale of the one-hot atom-type channel (EDM's normalisation of categorical features).
TYPE_SCALE = 0.25
_K = len(QM9_ELEMENTS)


def _graph(pos, feats, batch, t):
    from torch_geometric.data import Data

    return Data(pos=pos, x=feats, batch=batch), t


def _centre(x: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Subtract each graph's mean position."""
    counts = torch.bincount(batch, minlength=num_graphs).clamp_min(1).to(x.dtype)
    mean = torch.zeros(num_graphs, x.shape[-1], dtype=x.dtype, device=x.device).index_add_(0, batch, x) / counts[:, None]
    return x - mean[batch]


def _velocity(model, x, h, batch, t_graph):
    g, t = _graph(x, h, batch, t_graph)
    return model(g, t)


@torch.no_grad()
def sample_molecules(model, sizes, *, steps: int = 50, method: str = "euler", generator=None, dtype=torch.float32):
    """Sample molecules with ``sizes[i]`` atoms each: ``(positions list, types list)``, on the CPU.

    ``method`` "euler" (NFE = steps) or "rk4" (NFE = 4 steps) on the uniform grid of [0, 1].
    The noise is drawn from ``generator`` on its device (the CPU by default) and the flow is
    integrated on the model's device, so a model on a GPU starts from the noise of a CPU run.
    """
    if method not in ("euler", "rk4"):
        raise ValueError(f"`method` must be 'euler' or 'rk4', got {method!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive int, got {steps!r}")
    device = _model_device(model)
    sizes = torch.as_tensor(sizes, dtype=torch.long).cpu()
    B = sizes.numel()
    batch = torch.arange(B).repeat_interleave(sizes)
    N = int(sizes.sum())
    gdev = generator.device if generator is not None else torch.device("cpu")
    x = _centre(torch.randn(N, 3, generator=generator, dtype=dtype, device=gdev).cpu(), batch, B).to(device)
    h = torch.randn(N, _K, generator=generator, dtype=dtype, device=gdev).to(device)
    batch = batch.to(device)

    def f(x, h, s):
        v, u = _velocity(model, x, h, batch, torch.full((B,), s, dtype=dtype, device=device))
        return v, u

    dt = 1.0 / steps
    for k in range(steps):
        s = k * dt
        if method == "euler":
            v, u = f(x, h, s)
            x, h = x + dt * v, h + dt * u
        else:
            v1, u1 = f(x, h, s)
            v2, u2 = f(x + dt / 2 * v1, h + dt / 2 * u1, s + dt / 2)
            v3, u3 = f(x + dt / 2 * v2, h + dt / 2 * u2, s + dt / 2)
            v4, u4 = f(x + dt * v3, h + dt * u3, s + dt)
            x = x + dt / 6 * (v1 + 2 * v2 + 2 * v3 + v4)
            h = h + dt / 6 * (u1 + 2 * u2 + 2 * u3 + u4)
    types = h.argmax(-1)
    return list(x.cpu().split(sizes.tolist())), list(types.cpu().split(sizes.tolist()))


def _model_device(model) -> torch.device:
    p = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    return p.device if p is not None else torch.device("cpu")


class MoleculeTrainer:
    """Trains the hybrid-transport EGNN on QM9 (``geoflow train qm9``).

    Uses the :class:`TrainConfig` fields ``steps``, ``batch_size`` (molecules per step), ``lr``,
    ``weight_decay``, ``warmup`` (then cosine decay), ``grad_clip``, ``ema_decay``, ``hidden``,
    ``depth`` (EGNN layers), ``time_dim``, ``eval_every`` (validation loss with fixed noise,
    checkpoints), ``seed``, ``out`` and ``ess_samples`` (molecules sampled at the end for the
    stability scores, at NFE 50 and 200 with Euler steps) and ``device`` (the network trains
    there; molecules, noise and times are drawn on the CPU from the seeded generator and moved,
    as in :class:`~geoflow.train.Trainer`).  The 2000 shipped molecules are split 80/10/10 with
    the seed.  Checkpoints are atomic and hold every RNG state: running again with the same
    ``out`` resumes exactly on the CPU (on a GPU the EGNN's atomic scatter-adds are not
    bit-reproducible: the resumed run follows the uninterrupted one up to that noise).
    """

    def __init__(self, config: TrainConfig, *, progress: bool = True, log=print):
        from .distributed import resolve_device

        if config.dataset != "qm9":
            raise ValueError(f"MoleculeTrainer trains dataset 'qm9', got {config.dataset!r}")
        if config.fourier_features:
            raise ValueError("fourier_features apply to MLP velocity networks; QM9 trains an EGNN, leave them at 0")
        self.device = resolve_device(config.device, None, name="TrainConfig.device")
        self.config, self.progress, self.log = config, progress, log
        self.out = Path(config.out)
        data = load_qm9()
        n = len(data["positions"])
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed)).tolist()
        n_val = n // 10  # val and test: a tenth each
        split = {"train": perm[: n - 2 * n_val], "val": perm[n - 2 * n_val : n - n_val], "test": perm[n - n_val :]}
        self.splits = {k: ([data["positions"][i] for i in v], [data["types"][i] for i in v]) for k, v in split.items()}
        self.sizes = torch.tensor([p.shape[0] for p in self.splits["train"][0]])
        torch.manual_seed(config.seed)
        self.model = EGNNVelocity(hidden=config.hidden, layers=config.depth, time_dim=config.time_dim,
                                  cond_dim=_K, feature_out_dim=_K, chiral=config.chiral).to(self.device)
        self.ema = EMA(self.model, config.ema_decay) if config.ema_decay > 0 else None
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(config))
        self.gen = torch.Generator().manual_seed(config.seed + 1)
        self.step, self.best_val, self.history = 0, math.inf, []
        random.seed(config.seed)
        np.random.seed(config.seed % 2**32)

    # ------------------------------------------------------------------ data
    def _batch(self, split: str, idx):
        pos, types = self.splits[split]
        x1 = torch.cat([pos[i] for i in idx])
        h1 = torch.nn.functional.one_hot(torch.cat([types[i] for i in idx]), _K).to(x1.dtype) * TYPE_SCALE
        sizes = torch.tensor([pos[i].shape[0] for i in idx])
        batch = torch.arange(len(idx)).repeat_interleave(sizes)
        return x1, h1, batch

    def loss(self, model, x1, h1, batch, generator) -> torch.Tensor:
        """Mean over atoms of |v_x - (x1 - x0)|^2 + |v_h - (h1 - h0)|^2 at t ~ U(0, 1) per molecule."""
        B = int(batch.max()) + 1
        x0 = _centre(torch.randn(x1.shape, generator=generator, dtype=x1.dtype), batch, B)
        h0 = torch.randn(h1.shape, generator=generator, dtype=h1.dtype)
        t = torch.rand(B, generator=generator, dtype=x1.dtype)
        if self.device.type != "cpu":
            x1, h1, x0, h0, t, batch = (a.to(self.device) for a in (x1, h1, x0, h0, t, batch))
        tn = t[batch][:, None]
        v, u = _velocity(model, tn * x1 + (1 - tn) * x0, tn * h1 + (1 - tn) * h0, batch, t)
        return ((v - (x1 - x0)) ** 2).sum(-1).mean() + ((u - (h1 - h0)) ** 2).sum(-1).mean()

    def train_step(self) -> float:
        cfg = self.config
        idx = torch.randint(0, len(self.splits["train"][0]), (cfg.batch_size,), generator=self.gen).tolist()
        x1, h1, batch = self._batch("train", idx)
        loss = self.loss(self.model, x1, h1, batch, self.gen)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss is {float(loss)} at step {self.step}; the last good checkpoint is "
                                   f"{self.out / 'last.pt'}; lower --lr or raise --grad-clip")
        optimizer_step(loss, self.model, self.opt, self.sched, self.ema, cfg.grad_clip)
        self.step += 1
        return float(loss.detach())

    def eval_model(self):
        return self.ema.module if self.ema is not None else self.model

    @torch.no_grad()
    def split_loss(self, split: str, model=None, repeats: int = 2) -> float:
        """Flow-matching loss on a split with fixed noise (the validation metric)."""
        model = self.eval_model() if model is None else model
        g = torch.Generator().manual_seed(self.config.seed + 7)
        n = len(self.splits[split][0])
        total = 0.0
        for _ in range(repeats):
            for lo in range(0, n, 256):
                idx = list(range(lo, min(n, lo + 256)))
                x1, h1, batch = self._batch(split, idx)
                total += float(self.loss(model, x1, h1, batch, g)) * len(idx)
        return total / (repeats * n)

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        return {
            "config": self.config.to_dict(), "step": self.step, "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None, "optimizer": self.opt.state_dict(),
            "lr_scheduler": self.sched.state_dict(), "best_val_nll": self.best_val, "val_metric": "loss",
            "history": self.history, "manifold": "QM9 molecules (CoMFree coordinates + atom types)",
            "device": str(self.device),
            "rng": {"torch": torch.get_rng_state(), "data": self.gen.get_state(), "numpy": np.random.get_state(),
                    "python": random.getstate(),
                    **({"cuda": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {})},
        }

    def load_state_dict(self, state: dict, source: str) -> None:
        saved = TrainConfig.from_dict(state["config"])
        if {**saved.to_dict(), "device": None} != {**self.config.to_dict(), "device": None}:
            raise ValueError(f"{source} was written with a different config; use another --out folder")
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["lr_scheduler"])
        self.step, self.best_val, self.history = int(state["step"]), float(state["best_val_nll"]), list(state["history"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        self.gen.set_state(rng["data"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    # ------------------------------------------------------------------ run
    def fit(self) -> dict:
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        last = self.out / "last.pt"
        if last.exists():
            self.load_state_dict(load_checkpoint(last), str(last))
            self.log(f"resumed from {last} at step {self.step}")
        t0 = time.time()
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.progress, desc="qm9")
        while self.step < cfg.steps:
            loss = self.train_step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                val = self.split_loss("val")
                improved = val < self.best_val
                self.best_val = min(self.best_val, val)
                self.history.append({"step": self.step, "loss": loss, "val_loss": val})
                if improved:
                    save_checkpoint(self.state_dict(), self.out / "best.pt")
                save_checkpoint(self.state_dict(), last)
                self.log(f"step {self.step}: loss {loss:.4f}  val loss {val:.4f}" + ("  (best)" if improved else ""))
        bar.close()
        return self.finish(time.time() - t0)

    def finish(self, seconds: float) -> dict:
        cfg = self.config
        best = load_checkpoint(self.out / "best.pt")
        model = EGNNVelocity(hidden=cfg.hidden, layers=cfg.depth, time_dim=cfg.time_dim, cond_dim=_K,
                             feature_out_dim=_K, chiral=cfg.chiral).to(self.device)
        model = eval_weights(model, best, cfg.ema_decay)
        metrics = {"dataset": "qm9", "test_loss": self.split_loss("test", model), "best_val_loss": self.best_val,
                   "best_step": int(best["step"]), "steps": self.step, "train_seconds": seconds, "seed": cfg.seed,
                   "n_train": len(self.splits["train"][0]), "stability": {}, "config": cfg.to_dict()}
        n = cfg.ess_samples
        if n > 0:
            g = torch.Generator().manual_seed(cfg.seed + 11)
            sizes = self.sizes[torch.randint(0, self.sizes.numel(), (n,), generator=g)]
            for nfe in (50, 200):
                pos, types = sample_molecules(model, sizes, steps=nfe, method="euler", generator=g)
                if nfe == 200:
                    self.samples = (pos, types)
                x, h, mask = pad_molecules(pos, types)
                s = stability(x, h.argmax(-1), mask)
                row = {"atom": s.atom_stable, "molecule": s.molecule_stable, "molecules": n}
                extra = ""
                if _has_rdkit():
                    v = validity(x, h.argmax(-1), mask)
                    row.update(valid=v.valid, unique=v.unique)
                    extra = f", RDKit validity {100 * v.valid:.1f} %, uniqueness {100 * v.unique:.1f} %"
                metrics["stability"][str(nfe)] = row
                self.log(f"NFE {nfe}: atom stability {100 * s.atom_stable:.1f} %, molecule stability "
                         f"{100 * s.molecule_stable:.1f} %{extra} ({n} molecules)")
        tmp = self.out / "metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=2))
        tmp.replace(self.out / "metrics.json")
        self.log(f"test loss (qm9, {len(self.splits['test'][0])} molecules): {metrics['test_loss']:.4f}")
        return metrics
