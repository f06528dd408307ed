"""Shared pieces of the coupling benchmarks (couplings_straightness.py, reflow.py, digits_inverse.py).

A small, self-contained training loop (these benchmarks do not go through ``geoflow.train``),
the spaces they run on, and the evaluation: exact W2 distances, the Euler-NFE needed for a fixed
sample quality, and the normalised path energy.

Quality and NFE (used by both the straightness and the reflow benchmark)
-----------------------------------------------------------------------
For a trained field v and n_eval base samples x0 (fixed, seeded):

* reference  X_ref = rk4 solution with ``ref_steps`` steps (4 ref_steps NFE, default 250 steps =
  1000 NFE): the flow's own converged samples;
* Euler-N    X_N = Euler solution with N steps (N NFE), N on the grid ``NFE_GRID``;
* W2(A, B)   exact 2-Wasserstein distance between two equal-size point sets (optimal
  permutation of the squared Euclidean cost, or squared geodesic cost on S^2);
* ``nfe_ref[tol]``: the smallest N on the grid with W2(X_N, X_ref) <= tol * W2(x0, X_ref), i.e. the
  discretisation error of the sample *distribution* is at most ``tol`` of the distance the flow
  transports (tol = 0.05 in the tables; 0.1 and 0.02 in the JSON).  The converged value is 0, so this
  isolates the solver error from the model error.
* ``nfe_data``: the smallest N on the grid with W2(X_N, D) <= (1 + 0.05) W2(X_ref, D), D the
  held-out data (same size): within 5 % of the W2 that the converged flow reaches against held-out
  data (this floor includes the finite-sample W2 and the model's error).
* None means "not reached on the grid" (printed ">256", or ">max_nfe" when the grid is cut).

Normalised path energy (Tong et al. 2023):  NPE = |PE - W2^2(x0, D)| / W2^2(x0, D) with
PE = mean_i int_0^1 |v(phi_t(x0_i), t)|^2 dt (rk4, ``pe_steps`` steps, Simpson in t) and
W2^2(x0, D) the exact OT cost between the n_eval base samples and n_eval held-out points
(:func:`geoflow.couplings.path_energy`); ``npe_signed`` is (PE - W2^2) / W2^2 without the absolute
value.  Caveat: W2^2 between two *finite* samples overestimates the population W2^2 (and the flow
only approximates the data), so for a nearly-OT flow PE falls below it and NPE measures that bias,
not curvature (seen on moons and on S^2).  Hence also

* ``npe_self`` = (PE - W2^2(x0, phi_1(x0))) / W2^2(x0, phi_1(x0)): the same ratio against the OT
  cost from the base samples to the flow's *own* endpoints.  It is >= 0 for every flow, up to the
  quadrature error of PE (PE >= mean |phi_1(x0_i) - x0_i|^2 >= the optimal matching of the two
  sets), and 0 exactly when the paths are straight at constant speed and the flow's pairing is
  optimal; for the OT map the empirical matching is the map itself, so there is no sample-size bias;
* straightness = PE / mean |phi_1(x0) - x0|^2 - 1 (0 iff straight, constant-speed paths; says
  nothing about crossing).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from geoflow.couplings import OTCoupling, exact_assignment, pairwise_cost, path_energy
from geoflow.losses import cfm_loss, rcfm_loss
from geoflow.nn import EMA
from geoflow.paths import AffinePath, CondOTScheduler, GeodesicPath
from geoflow.solvers import sample
from manifolds import Euclidean

#: Euler step counts tried for the NFE-at-fixed-quality measures.
NFE_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
#: Step counts always evaluated (for the printed W2 columns), even after both criteria are met.
ALWAYS = (1, 2, 4, 8)
REF_TOLS = (0.1, 0.05, 0.02)
DATA_TOL = 0.05


def header(threads: int, seed: int) -> dict:
    import scipy

    import geoflow

    return {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, {platform.platform()}",
        "threads": threads,
        "seed": seed,
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
                     "geoflow": getattr(geoflow, "__version__", "dev")},
    }  # fmt: skip


def write_json(path, results: dict) -> None:
    """Write ``results`` to ``path`` (folders created) and say so."""
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- spaces
@dataclass
class Space:
    """Where a flow lives: flat (``manifold`` None) or a Riemannian manifold such as Sphere(2)."""

    name: str
    manifold: Optional[object]
    point_shape: tuple

    @property
    def flat(self) -> bool:
        return self.manifold is None or isinstance(self.manifold, Euclidean)

    @property
    def solver_manifold(self):
        return None if self.flat else self.manifold

    def base(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """N(0, I) in flat space, the manifold's base (uniform on S^2) otherwise."""
        if self.flat:
            return torch.randn((n, *self.point_shape), generator=generator)
        return self.manifold.random_base(n, generator=generator)

    def path(self):
        return AffinePath(CondOTScheduler()) if self.flat else GeodesicPath(self.manifold, CondOTScheduler())

    def loss(self, model, sample_):
        return cfm_loss(model, sample_) if self.flat else rcfm_loss(self.manifold, model, sample_)


def w2(a: torch.Tensor, b: torch.Tensor, space: Space) -> float:
    """Exact W2 between equal-size point sets (squared Euclidean or squared geodesic cost, float64)."""
    C = pairwise_cost(a.double(), b.double(), space.solver_manifold)
    col = exact_assignment(C)
    return math.sqrt(float(C[torch.arange(C.shape[0]), col].mean()))


# ----------------------------------------------------------------------------- couplings
class Identity:
    """No re-pairing: the independent coupling (or pairs that are already coupled, e.g. reflow pairs)."""

    def __call__(self, x0, x1):
        return x0, x1


class ChunkedOT:
    """Exact minibatch OT on sub-minibatches of size ``b`` of the training batch.

    The training batch (size B, a multiple of b) is cut into B / b consecutive chunks and each chunk
    of x0 is re-paired with its chunk of x1 by the exact OT permutation
    (:class:`geoflow.couplings.OTCoupling`, squared Euclidean or squared geodesic cost).  So the
    optimiser always sees B pairs, while the coupling is minibatch OT with minibatch size b:
    b = 1 is exactly the independent coupling, b = B is OT on the whole batch (Tong et al.'s
    OT-CFM).
    """

    def __init__(self, b: int, space: Space):
        self.b = b
        self.ot = OTCoupling("exact", manifold=space.solver_manifold)

    def __call__(self, x0, x1):
        if self.b == 1:
            return x0, x1
        B = x0.shape[0]
        if B % self.b:
            raise ValueError(f"training batch {B} is not a multiple of the OT minibatch size {self.b}")
        out = [self.ot(x0[i : i + self.b], x1[i : i + self.b])[0] for i in range(0, B, self.b)]
        return torch.cat(out), x1


# ----------------------------------------------------------------------------- training
def train(
    model: torch.nn.Module,
    space: Space,
    draw: Callable[[torch.Generator], tuple],
    coupling: Callable,
    *,
    steps: int,
    lr: float,
    seed: int,
    warmup: int = 0,
    ema_decay: float = 0.999,
    label: str = "",
    log_every: int = 0,
):
    """Adam with linear warm-up and cosine decay to lr / 10; EMA of the weights.

    Each step: (x0, x1) = draw(generator) -> coupling -> t ~ U(0, 1) -> (R)CFM loss.
    Returns (the EMA model in eval mode, {"seconds", "final_loss", "steps"}).
    """
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def factor(k):
        if k < warmup:
            return (k + 1) / warmup
        p = (k - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    ema = EMA(model, ema_decay)
    path = space.path()
    model.train()
    losses = []
    t_start = time.perf_counter()
    for k in range(steps):
        x0, x1 = draw(g)
        x0, x1 = coupling(x0, x1)
        t = torch.rand(x1.shape[0], generator=g)
        loss = space.loss(model, path.sample(x0, x1, t))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema.update(model)
        losses.append(loss.item())
        if log_every and (k + 1) % log_every == 0:
            print(f"    [{label}] step {k + 1}/{steps} loss {np.mean(losses[-log_every:]):.4f} "
                  f"({time.perf_counter() - t_start:.0f} s)", flush=True)  # fmt: skip
    seconds = time.perf_counter() - t_start
    tail = losses[-max(1, min(200, steps // 10)):]
    return ema.module.eval(), {"seconds": seconds, "final_loss": float(np.mean(tail)), "steps": steps}


def data_draw(space: Space, data: torch.Tensor, batch: int):
    """Independent base and data batches (data drawn with replacement from ``data``)."""

    def draw(g):
        idx = torch.randint(data.shape[0], (batch,), generator=g)
        return space.base(batch, g), data[idx]

    return draw


def pair_draw(x0: torch.Tensor, x1: torch.Tensor, batch: int):
    """Minibatches of fixed pairs (x0_i, x1_i) (reflow training)."""

    def draw(g):
        idx = torch.randint(x0.shape[0], (batch,), generator=g)
        return x0[idx], x1[idx]

    return draw


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def solve(model, x0, space: Space, method: str, steps: int, chunk: int = 4096) -> torch.Tensor:
    out = [sample(model, x0[i : i + chunk], space.solver_manifold, method=method, steps=steps, requires_grad=False)
           for i in range(0, x0.shape[0], chunk)]  # fmt: skip
    return torch.cat(out)


def first_reached(curve: dict, ok) -> Optional[int]:
    for n in sorted(curve):
        if ok(curve[n]):
            return n
    return None


def evaluate(model, space: Space, x0: torch.Tensor, data: torch.Tensor, *, ref_steps: int = 250,
             pe_steps: int = 100, max_nfe: int = max(NFE_GRID)) -> dict:  # fmt: skip
    """Quality-vs-NFE curve, NFE at fixed quality and normalised path energy (see the module docstring)."""
    t0 = time.perf_counter()
    grid = [n for n in NFE_GRID if n <= max_nfe]
    model.eval()
    ref = solve(model, x0, space, "rk4", ref_steps)
    base_dist = w2(x0, ref, space)
    floor = w2(ref, data, space)
    curve = {}
    for n in grid:
        xn = solve(model, x0, space, "euler", n)
        curve[n] = {"w2_ref": w2(xn, ref, space), "w2_data": w2(xn, data, space)}
        done = (curve[n]["w2_ref"] <= min(REF_TOLS) * base_dist and curve[n]["w2_data"] <= (1 + DATA_TOL) * floor)
        if done and n >= max(ALWAYS):
            break
    nfe_ref = {str(tol): first_reached(curve, lambda c, tol=tol: c["w2_ref"] <= tol * base_dist) for tol in REF_TOLS}
    nfe_data = first_reached(curve, lambda c: c["w2_data"] <= (1 + DATA_TOL) * floor)
    pe = path_energy(model, x0, space.solver_manifold, x1=data, steps=pe_steps)
    w2_self = w2(x0, pe.x1, space) ** 2
    return {
        "n_eval": x0.shape[0],
        "ref": f"rk4, {ref_steps} steps ({4 * ref_steps} NFE)",
        "w2_base_to_ref": base_dist,
        "w2_ref_to_data": floor,
        "max_nfe": max(grid),
        "nfe_ref": nfe_ref,
        "nfe_data": nfe_data,
        "curve": {str(k): v for k, v in curve.items()},
        "path_energy": pe.energy,
        "w2_sq_base_data": pe.w2_sq,
        "npe": pe.normalized,
        "npe_signed": (pe.energy - pe.w2_sq) / pe.w2_sq,
        "w2_sq_base_endpoints": w2_self,
        "npe_self": (pe.energy - w2_self) / w2_self,
        "straightness": pe.straightness,
        "eval_seconds": time.perf_counter() - t0,
    }


def fmt_nfe(n, max_nfe: int = max(NFE_GRID)) -> str:
    return f">{max_nfe}" if n is None else str(n)
