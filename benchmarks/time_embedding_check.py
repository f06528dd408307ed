"""Does the time embedding's highest frequency make the learned field rough in t?

Trains the same flow twice (volcano, 3000 steps, MLP 512 x 5, same seed) with
``--time-max-freq`` 1000 (the DDPM-style value) and 10, then integrates 512 fixed base points with
euler / midpoint / rk4 at 4..64 steps and prints the mean geodesic distance to a 200-step rk4
solution, plus each model's test NLL.  A field that is smooth in t shows errors falling as h,
h^2, h^4; one that oscillates faster than the step stalls.

Usage:  python benchmarks/time_embedding_check.py [--steps 3000] [--json benchmarks/results/time_embedding.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from geoflow.cli import _load_model
from geoflow.solvers import sample


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="volcano")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--freqs", type=float, nargs="+", default=[1000.0, 10.0])
    ap.add_argument("--out-root", default="runs/time_embedding")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    results = {"command": " ".join(sys.argv), "dataset": args.dataset, "steps": args.steps, "runs": {}}
    for f in args.freqs:
        out = Path(args.out_root) / f"{args.dataset}-freq{f:g}"
        cmd = [sys.executable, "-m", "geoflow.cli", "train", args.dataset, "--out", str(out), "--steps", str(args.steps),
               "--hidden", "512", "--depth", "5", "--eval-every", "1000", "--time-max-freq", str(f), "--quiet", "--no-plot"]
        if not (out / "metrics.json").exists():
            subprocess.run(cmd, check=True)
        metrics = json.loads((out / "metrics.json").read_text())
        model, _, data = _load_model(out / "best.pt")
        m = data.manifold
        torch.manual_seed(0)
        x0 = m.random_base(512)
        row = {"test_nll": metrics["test_nll"], "errors": {}}
        with torch.no_grad():
            ref = sample(model, x0, m, method="rk4", steps=200)
            for method in ("euler", "midpoint", "rk4"):
                errs = {}
                for steps in (4, 8, 16, 32, 64):
                    errs[steps] = m.dist(sample(model, x0, m, method=method, steps=steps), ref).mean().item()
                row["errors"][method] = errs
                print(f"max_freq {f:g}: {method:8s} " + " ".join(f"{k}:{v:.2e}" for k, v in errs.items()), flush=True)
        print(f"max_freq {f:g}: test NLL {metrics['test_nll']:.3f}")
        results["runs"][f"{f:g}"] = row
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
