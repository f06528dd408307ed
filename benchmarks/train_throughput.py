"""Training throughput of ``geoflow train`` on the CPU and on a GPU (steps per second).

Two measurements per device, same seed and settings:

* ``step``: :meth:`geoflow.train.Trainer.train_step` timed in-process (``--warmup`` untimed steps,
  then ``--steps`` timed ones; on a GPU the clock waits for the kernels, and every step already
  synchronises once when it reads the loss for the NaN check);
* ``cli``: the whole command ``geoflow train DATASET --steps N --eval-every N --device D`` run as a
  subprocess, and its own ``train_seconds`` from ``metrics.json`` (the loop including its one
  validation at the end, excluding the final test NLL), reported as ``steps / train_seconds``.

Usage (on a machine with a GPU):
    python benchmarks/train_throughput.py --dataset earthquake --devices cpu cuda --json results.json
Smoke test:
    python benchmarks/train_throughput.py --dataset vmf_mixture --steps 5 --cli-steps 10 --devices cpu
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _table_runs as _runs  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(dataset: str, device: str, steps: int, warmup: int, overrides: dict) -> dict:
    from geoflow.train import Trainer, TrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig.for_dataset(dataset, steps=warmup + steps, out=tmp, device=device, **overrides)
        tr = Trainer(cfg, progress=False, log=lambda *_: None)
        for _ in range(warmup):
            tr.train_step()
        _sync(tr.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            tr.train_step()
        _sync(tr.device)
        dt = time.perf_counter() - t0
    return {"steps": steps, "seconds": dt, "steps_per_s": steps / dt, "ms_per_step": 1e3 * dt / steps,
            "device": str(tr.device), "batch_size": cfg.batch_size}


def time_cli(dataset: str, device: str, steps: int, extra: list[str], malloc: str = "keep") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "geoflow.cli", "train", dataset, "--steps", str(steps), "--eval-every", str(steps),
               "--device", device, "--out", str(out), "--quiet", "--no-plot", *extra]
        t0 = time.perf_counter()
        env = dict(os.environ, GEOFLOW_MALLOC=malloc)
        subprocess.run(cmd, check=True, cwd=_ROOT, stdout=subprocess.DEVNULL, env=env)
        wall = time.perf_counter() - t0
        m = json.loads((out / "metrics.json").read_text())
    return {"command": " ".join(cmd[2:]).replace(str(out), "OUT"), "train_seconds": m["train_seconds"],
            "steps_per_s": steps / m["train_seconds"], "wall_seconds_with_startup_and_test_nll": wall,
            "test_nll": m.get("test_nll")}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="earthquake")
    ap.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=200, help="timed train_step calls")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--cli-steps", type=int, default=500, help="steps of the timed geoflow train command (0: skip)")
    ap.add_argument("--cli-args", default="--val-points 500 --nll-steps 10",
                    help="extra geoflow train arguments of the timed command")
    ap.add_argument("--coupling", default=None, help="geoflow train --coupling (default: the dataset's, independent)")
    ap.add_argument("--batch-size", type=int, default=None, help="batch size (default: the dataset's)")
    _runs.add_malloc_option(ap)  # also GEOFLOW_MALLOC of the timed geoflow train command
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.malloc == "keep":
        from geoflow.train import keep_freed_memory

        keep_freed_memory()
    over = {"coupling": args.coupling} if args.coupling else {}
    cli_extra = args.cli_args.split() + (["--coupling", args.coupling] if args.coupling else [])
    if args.batch_size:
        over["batch_size"] = args.batch_size
        cli_extra += ["--batch-size", str(args.batch_size)]
    info = {"dataset": args.dataset, "coupling": args.coupling or "independent", "malloc": args.malloc,
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}, "results": {}}
    for dev in args.devices:
        r = {"step": time_steps(args.dataset, dev, args.steps, args.warmup, over)}
        print(f"{args.dataset} ({args.coupling or 'independent'}) {dev}: train_step {r['step']['ms_per_step']:.2f} ms ({r['step']['steps_per_s']:.1f} steps/s, "
              f"batch {r['step']['batch_size']})", flush=True)
        if args.cli_steps:
            r["cli"] = time_cli(args.dataset, dev, args.cli_steps, cli_extra, args.malloc)
            print(f"{args.dataset} {dev}: geoflow train {args.cli_steps} steps: train_seconds {r['cli']['train_seconds']:.1f} "
                  f"({r['cli']['steps_per_s']:.1f} steps/s incl. its validation), test NLL {r['cli']['test_nll']:.4f}",
                  flush=True)
        info["results"][dev] = r
    if args.json:
        _runs.save(info, args.json)
    return info


if __name__ == "__main__":
    main()
