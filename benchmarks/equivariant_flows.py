"""Equivariant flows on DW4 / LJ13 with independent, OT and alignment couplings (issue 6, "Measure").

For each system and coupling it trains ``geoflow train SYSTEM --coupling C`` (same settings
otherwise; a run already in ``--out-root`` with the same settings is reused) and measures, on
the best checkpoint (EMA weights):

* ``test_nll`` and ``ess`` (effective sample size of exp(-E) / q, as a fraction) and the mean
  energies (samples, reweighted, test), from the run's ``metrics.json``;
* ``transport_cost``: mean squared distance |x0 - x1|^2 of the coupled pairs of ``--cost-batches``
  training batches (the coupling applied to base samples and data exactly as in training);
* ``path_length``: median over ``--n`` samples of the length of the learned flow's trajectory,
  sum_k |x_{k+1} - x_k| over a 200-step rk4 solve (a straight flow has length |x1 - x0|);
* ``steps_needed``: the smallest number of rk4 steps in 1, 2, 4, ..., 64 from which on the energy
  distribution of the samples (same base points) stays within the noise floor of a 200-step
  reference: 1-Wasserstein distance W1(E_k, E_ref) <= W1 between the two halves of the reference
  (the sampling noise of ``--n`` / 2 energies);
* ``steps_needed_clipped``: the same on energies clipped to the test data's range widened by 10 % of
  its span on each side (non-finite energies count as the upper end). LJ energies have an r^-12
  tail: a handful of samples with overlapping particles (energies of 1e5-1e12) decide the plain
  W1 and its noise floor; clipped, those samples count as "far from the data" at a bounded cost
  and the histogram of the rest decides (None when no 200-step sample lies in the range: all
  histograms are then one overflow bin). ``energy_median`` and ``frac_above_test_max`` (of the
  200-step samples) say how heavy that tail is.

Usage (the real measurement; about 15 min per run on 2 cores, alignment runs longer; two systems
may run at once into the same JSON, each run is merged into the file as it lands):
    python benchmarks/equivariant_flows.py --json benchmarks/results/equivariant_flows.json
On a GPU, the four couplings of LJ13 trained at once (``--jobs 4``; training and evaluation on
``--device``; batches are still drawn and coupled on the CPU, as in every ``geoflow train``):
    python benchmarks/equivariant_flows.py --systems lj13 --device cuda --jobs 4 --json benchmarks/results/x.json
On a CPU, LJ13 with fewer likelihood evaluations (each exact LJ13 likelihood is ~39 backward
passes per ODE evaluation; see benchmarks/README.md), two runs at a time:
    OMP_NUM_THREADS=1 python benchmarks/equivariant_flows.py --systems lj13 --jobs 2 --n 500 \
        --train-args "--val-points 32 --test-points 100 --ess-samples 200" --json benchmarks/results/x.json
LJ55 (Klein et al.'s path-length comparison; a GPU job: one LJ55 EGNN step at batch 64 is ~7 s on a CPU thread):
    python benchmarks/equivariant_flows.py --systems lj55 --device cuda --jobs 4 --json benchmarks/results/x.json
Smoke test:
    python benchmarks/equivariant_flows.py --systems dw4 --steps 20 --n 64 --small
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _table_runs as _runs  # noqa: E402

COUPLINGS = ("independent", "ot", "ot-align", "alignment")
#: Also accepted by --couplings, not run by default (a diagnostic: the particle order aligned, no rotation).
EXTRA_COUPLINGS = ("alignment-perm",)
STEP_GRID = (1, 2, 4, 8, 16, 32, 64)


def _w1(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import wasserstein_distance

    a, b = a[torch.isfinite(a)], b[torch.isfinite(b)]
    return float(wasserstein_distance(a.numpy(), b.numpy()))


def _w1_clipped(a: torch.Tensor, b: torch.Tensor, lo: float, hi: float) -> float:
    """W1 between the energies clipped to [lo, hi]; NaN and +inf count as ``hi``, -inf as ``lo``."""
    from scipy.stats import wasserstein_distance

    def clip(e):
        e = torch.nan_to_num(e.double(), nan=hi, posinf=hi, neginf=lo)
        return e.clamp(lo, hi).numpy()

    return float(wasserstein_distance(clip(a), clip(b)))


def _steps_needed(w1: dict, floor: float):
    """The fewest steps k of the grid from which on every W1 is within the noise floor (None: never)."""
    return next((k for k in STEP_GRID if all(w1[j] <= floor for j in STEP_GRID if j >= k)), None)


def evaluate(out: Path, n: int, cost_batches: int, seed: int = 0, device: str = "cpu", checkpoint: str = "best.pt") -> dict:
    """The measurements above for the run in ``out``; the flow is solved on ``device`` from CPU-drawn base points.

    ``checkpoint`` (in ``out``) is the model whose paths and step counts are measured; ``test_nll``, ``ess`` and
    ``energy`` are always those of ``metrics.json`` (the run's best.pt).
    """
    from geoflow.cli import _load_model
    from geoflow.solvers import sample
    from geoflow.train import Trainer, TrainConfig, load_checkpoint

    model, config, data = _load_model(out / checkpoint, device=device)
    state = load_checkpoint(out / checkpoint)
    dev = next(model.parameters()).device
    m, energy = data.manifold, data.energy
    metrics = json.loads((out / "metrics.json").read_text())
    g = torch.Generator().manual_seed(seed)
    # Transport cost of the coupling, as in training.
    trainer = Trainer(TrainConfig.from_dict({**state["config"], "device": "cpu"}),
                      progress=False, log=lambda *_: None)
    costs = []
    for _ in range(cost_batches):
        idx = torch.randint(0, data.train.shape[0], (config.batch_size,), generator=g)
        x1 = data.train[idx]
        x0 = m.random_base(config.batch_size, generator=g, dtype=x1.dtype)
        if trainer.coupling is not None:
            x0 = trainer.coupling(x0, x1)[0]
        costs.append(float(((x0 - x1) ** 2).sum((-2, -1)).mean()))
    x0 = m.random_base(n, generator=g, dtype=data.train.dtype).to(dev)
    with torch.no_grad():
        _, path = sample(model, x0, m, method="rk4", steps=200, return_path=True)
    path = path.cpu()
    lengths = (path[1:] - path[:-1]).pow(2).sum((-2, -1)).sqrt().sum(0)
    e_ref = energy(path[-1].double())
    e_test = energy(data.test.double())
    span = float(e_test.max() - e_test.min())
    lo, hi = float(e_test.min()) - 0.1 * span, float(e_test.max()) + 0.1 * span
    floor = _w1(e_ref[: n // 2], e_ref[n // 2 :])
    floor_c = _w1_clipped(e_ref[: n // 2], e_ref[n // 2 :], lo, hi)
    w1, w1c = {}, {}
    for k in STEP_GRID:
        with torch.no_grad():
            ek = energy(sample(model, x0, m, method="rk4", steps=k).cpu().double())
        w1[k] = _w1(ek, e_ref)
        w1c[k] = _w1_clipped(ek, e_ref, lo, hi)
    return {
        "checkpoint": checkpoint, "checkpoint_step": state.get("step"), "best_step": metrics.get("best_step"),
        "test_nll": metrics.get("test_nll"), "ess": metrics.get("ess"), "energy": metrics.get("energy"),
        "transport_cost": sum(costs) / len(costs), "path_length_median": float(lengths.median()),
        "straight_length_median": float((path[-1] - path[0]).pow(2).sum((-2, -1)).sqrt().median()),
        "energy_w1_by_steps": {str(k): v for k, v in w1.items()}, "energy_w1_floor": floor,
        "steps_needed": _steps_needed(w1, floor), "train_seconds": metrics.get("train_seconds"),
        "energy_clip_range": [lo, hi], "energy_w1_clipped_by_steps": {str(k): v for k, v in w1c.items()},
        "energy_w1_clipped_floor": floor_c,
        # undefined when no reference sample lies in the range: every histogram is then one overflow bin
        "steps_needed_clipped": _steps_needed(w1c, floor_c) if bool(((e_ref >= lo) & (e_ref <= hi)).any()) else None,
        "energy_median": float(e_ref.nan_to_num(nan=float("inf")).median()),
        "frac_above_test_max": float((~(e_ref <= e_test.max())).double().mean()),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", nargs="*", default=["dw4", "lj13"])
    ap.add_argument("--couplings", nargs="*", default=list(COUPLINGS), choices=COUPLINGS + EXTRA_COUPLINGS)
    ap.add_argument("--steps", type=int, default=3000, help="training steps per run")
    ap.add_argument("--batch-size", type=int, default=None, help="batch size (default: the dataset's)")
    ap.add_argument("--n", type=int, default=2000, help="samples for path lengths and energy histograms")
    ap.add_argument("--cost-batches", type=int, default=4)
    ap.add_argument("--out-root", default="runs/equivariant_flows")
    ap.add_argument("--small", action="store_true", help="tiny networks and data (smoke test)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--device", default=None,
                    help="geoflow train --device for every run (default: geoflow's, auto), and where the evaluation "
                         "solves the flow (default cpu)")
    ap.add_argument("--seed", type=int, default=0,
                    help="geoflow train --seed for every run, and the seed of the evaluation's base points (default 0)")
    ap.add_argument("--jobs", type=int, default=1, help="training runs at a time (they share the device)")
    ap.add_argument("--checkpoint", choices=["best.pt", "last.pt"], default="best.pt",
                    help="the checkpoint of each run whose paths and step counts are measured (default best.pt; "
                         "last.pt compares couplings at equal training when best.pt is from different steps)")
    ap.add_argument("--train-args", default="",
                    help='further geoflow train options for every run, one string (e.g. "--val-points 32 --test-points 100")')
    args = ap.parse_args(argv)
    results = _runs.load(Path(args.json)) if args.json else {}
    todo = []
    for system in args.systems:
        for coupling in args.couplings:
            out = Path(args.out_root) / f"{system}-{coupling}"
            cmd = ["geoflow", "train", system, "--coupling", coupling, "--steps", str(args.steps),
                   "--seed", str(args.seed), "--out", str(out), "--quiet", "--no-plot"]
            if args.device:
                cmd += ["--device", args.device]
            if args.batch_size:
                cmd += ["--batch-size", str(args.batch_size)]
            cmd += shlex.split(args.train_args)
            if args.small:
                cmd += ["--hidden", "16", "--depth", "2", "--n-samples", "256", "--val-points", "32",
                        "--test-points", "64", "--ess-samples", "64", "--eval-every", str(args.steps)]
            key = f"{system}/{coupling}"
            settings = shlex.join(cmd)
            done = results.get(key, {})
            if (done.get("command") == settings and done.get("checkpoint", "best.pt") == args.checkpoint
                    and (out / "metrics.json").exists()):
                print(f"{key}: already measured with these settings")
                continue
            todo.append((key, out, cmd, settings))
    running = []  # (process or None, start time, key, out, settings)
    while todo or running:
        while todo and len(running) < max(1, args.jobs):
            key, out, cmd, settings = todo.pop(0)
            proc = None
            if not (out / "metrics.json").exists():
                proc = subprocess.Popen([sys.executable, "-m", "geoflow.cli", *cmd[1:]])
            running.append((proc, time.time(), key, out, settings))
        done = [r for r in running if r[0] is None or r[0].poll() is not None]
        if not done:
            time.sleep(1.0)
            continue
        for item in done:
            running.remove(item)
            proc, t0, key, out, settings = item
            if proc is not None and proc.returncode != 0:
                print(f"{key}: training FAILED (exit {proc.returncode}); rerun the script to retry", flush=True)
                continue
            res = evaluate(out, args.n, args.cost_batches, seed=args.seed, device=args.device or "cpu",
                           checkpoint=args.checkpoint)
            res.update(command=settings, minutes=(time.time() - t0) / 60, threads=os.environ.get("OMP_NUM_THREADS"),
                       device=args.device or "auto", jobs=args.jobs, seed=args.seed)
            results[key] = res
            print(f"{key}: NLL {res['test_nll']:.3f}  ESS {res['ess']:.4f}  transport {res['transport_cost']:.3f}  "
                  f"path {res['path_length_median']:.3f} (straight {res['straight_length_median']:.3f})  "
                  f"steps needed {res['steps_needed']} (clipped {res['steps_needed_clipped']})  "
                  f"median energy {res['energy_median']:.2f}  ({res['minutes']:.1f} min)", flush=True)
            if args.json:  # another system may run beside this one: merge into the file as it is now
                _runs.merge(Path(args.json), key, res)
    return results


if __name__ == "__main__":
    main()
