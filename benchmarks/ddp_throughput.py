"""Throughput of `geoflow train earthquake` with 1 and 2 processes (issue 7, "Measure").

Runs the real command line, once per configuration, with the same global batch and steps:

* ``1proc-Nthreads``: ``python -m geoflow.cli train ...`` with ``OMP_NUM_THREADS`` = all cores
  (the plain single-process run on the whole machine);
* ``1proc-1thread``: the same with one thread (what each torchrun worker gets);
* ``2proc``: ``torchrun --standalone --nproc_per_node 2 -m geoflow.cli train ...`` (gloo, one
  thread per process, each process half of the global batch).

Steps/s come from ``train_seconds`` in ``metrics.json`` (the training loop, which here includes
one small validation and checkpoint at the last step; process start-up and the final test NLL are
excluded); samples/s = steps/s x global batch.  The wall clock of the whole command is recorded
too.  Scaling efficiency of 2 processes: steps/s(2proc) / (2 x steps/s(1proc-1thread)); the
speed-up over the plain single-process run is steps/s(2proc) / steps/s(1proc-Nthreads).

The machine's load average is recorded before and after each run: on a busy machine the numbers
measure the contention as much as the code.

Usage:
    OMP_NUM_THREADS= python benchmarks/ddp_throughput.py \
        [--steps 300 --hidden 512 --depth 5 --batch-size 512 --repeats 1] \
        [--json benchmarks/results/ddp_throughput.json]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _cmd(args, out: Path, procs: int) -> list[str]:
    train = ["train", args.dataset, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
             "--hidden", str(args.hidden), "--depth", str(args.depth), "--eval-every", str(args.steps),
             "--val-points", "64", "--nll-steps", "2", "--seed", str(args.seed), "--quiet", "--no-plot",
             "--out", str(out)]
    if procs == 1:
        return [sys.executable, "-m", "geoflow.cli", *train]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
            "-m", "geoflow.cli", *train]


def _run(args, name: str, procs: int, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with tempfile.TemporaryDirectory(prefix=f"ddp-{name}-") as tmp:
        out = Path(tmp) / "run"
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        r = subprocess.run(_cmd(args, out, procs), cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"{name} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == args.steps and metrics["world_size"] == procs, metrics
    sps = args.steps / metrics["train_seconds"]
    res = {"processes": procs, "threads_per_process": threads, "train_seconds": metrics["train_seconds"],
           "wall_seconds": wall, "steps_per_s": sps, "samples_per_s": sps * args.batch_size,
           "test_nll": metrics["test_nll"], "load_avg_1min_before": load_before,
           "load_avg_1min_after": os.getloadavg()[0]}
    print(f"{name:>16}: {sps:7.2f} steps/s  {sps * args.batch_size:9.0f} samples/s  "
          f"(loop {metrics['train_seconds']:.1f} s, wall {wall:.1f} s, load {load_before:.1f})", flush=True)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="earthquake")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=512, help="global batch (default 512)")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="runs per configuration; the median is reported")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    cores = os.cpu_count() or 1
    configs = [(f"1proc-{cores}threads", 1, cores), ("1proc-1thread", 1, 1), ("2proc", 2, 1)]
    print(f"{platform.machine()} {platform.processor() or ''} {cores} cores, torch {torch.__version__}, "
          f"{args.dataset}: MLP {args.hidden}x{args.depth}, global batch {args.batch_size}, {args.steps} steps")
    results = {}
    for name, procs, threads in configs:
        runs = [_run(args, name, procs, threads) for _ in range(args.repeats)]
        med = statistics.median(r["steps_per_s"] for r in runs)
        best = min(runs, key=lambda r: abs(r["steps_per_s"] - med))
        results[name] = {**best, "steps_per_s_all": [r["steps_per_s"] for r in runs]}

    one_t1, one_all, two = (results[n]["steps_per_s"] for n in (configs[1][0], configs[0][0], "2proc"))
    summary = {
        "scaling_efficiency_2proc_vs_1proc_1thread": two / (2 * one_t1),
        "speedup_2proc_vs_1proc_1thread": two / one_t1,
        "speedup_2proc_vs_1proc_all_threads": two / one_all,
    }
    for k, v in summary.items():
        print(f"{k}: {v:.3f}")
    doc = {
        "date": _dt.date.today().isoformat(),
        "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "cores": cores,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "backend": "gloo",
        "command": f"{args.dataset} --steps {args.steps} --batch-size {args.batch_size} --hidden {args.hidden} "
                   f"--depth {args.depth} --eval-every {args.steps} --val-points 64 --nll-steps 2",
        "steps": args.steps,
        "global_batch": args.batch_size,
        "repeats": args.repeats,
        "results": results,
        **summary,
        "note": "steps/s from metrics.json train_seconds (training loop incl. one small validation + checkpoint); "
                "load_avg fields show how busy the machine was",
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
