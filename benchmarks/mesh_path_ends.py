"""Do the premetric conditional paths of mesh training reach x1?  (issue 4 diagnostics)

For training pairs (x0 uniform on the surface, x1 a training point) the conditional flow is
integrated on the grid s = j / n as training does (``PremetricPath.solve_grid``, n projected
Euler steps, the last one a Newton step onto x1) and without the final guard that puts x_t = x1
at t = 1.  Printed per (dataset, premetric, n):

* |x_end - x1| / mesh size (quantiles, and the share of pairs ending more than 2 % of the mesh
  size away): where the path ends short of x1, the training targets near t = 1 ask for a
  velocity toward x1 from points that are not near it, and the learned flow blurs the target at
  that scale;
* max_j |d(x_j, x1) / d0 - (1 - s_j)| (quantiles, share above 0.1): how far the iterates stray
  from the premetric level sets the conditional flow is defined by.

With ``--tail T`` the grid has PremetricPath's T tail points in its last interval (keys "N+tailT").

Usage:
    OMP_NUM_THREADS=1 python benchmarks/mesh_path_ends.py --datasets bunny_k10 spot_k100 --steps 8 16 32 \\
        --json benchmarks/results/mesh_path_ends.json
    OMP_NUM_THREADS=1 python benchmarks/mesh_path_ends.py --steps 32 --tail 6 --json benchmarks/results/mesh_path_ends.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _table_runs as _runs  # noqa: E402


def path_ends(dataset: str, premetric: str, steps, pairs: int = 2048, seed: int = 0, tail: int = 0) -> dict:
    from geoflow.data.datasets import load_dataset
    from geoflow.data.meshes import load_mesh
    from geoflow.paths import PremetricPath

    data = load_dataset(dataset)
    m = load_mesh(dataset.split("_k")[0], premetric=premetric)
    g = torch.Generator().manual_seed(seed)
    x1 = data.train[torch.randint(0, data.train.shape[0], (pairs,), generator=g)].double()
    x0 = m.random_base(pairs, generator=g, dtype=torch.float64)
    q = torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)
    out = {}
    for n in steps:
        t0 = time.time()
        path = PremetricPath(m, premetric, steps=n, tail=tail, validate=False)
        states, _, d0, _, _ = path.solve_grid(x0, x1)
        grid = path.s_grid()
        err = (states[-1] - x1).norm(dim=-1) / m.scale
        dev = torch.stack([(m.dist(states[j], x1) / d0 - (1 - grid[j])) for j in range(grid.numel() - 1)])
        dev = dev.abs().max(0).values
        key = str(n) if not tail else f"{n}+tail{tail}"
        out[key] = {
            "end_error_q50": float(err.quantile(q)[0]), "end_error_q90": float(err.quantile(q)[1]),
            "end_error_q99": float(err.quantile(q)[2]), "share_end_error_above_0.02": float((err > 0.02).double().mean()),
            "level_dev_q50": float(dev.quantile(q)[0]), "level_dev_q90": float(dev.quantile(q)[1]),
            "level_dev_q99": float(dev.quantile(q)[2]), "share_level_dev_above_0.1": float((dev > 0.1).double().mean()),
            "seconds": time.time() - t0,
        }
        r = out[key]
        print(f"{dataset:10s} {premetric:10s} n={key:>3s}: |x_end - x1| / size 50/90/99 % {r['end_error_q50']:.1e} / "
              f"{r['end_error_q90']:.1e} / {r['end_error_q99']:.1e}, share > 0.02: {r['share_end_error_above_0.02']:.1%};"
              f"  level-set deviation 50/90/99 % {r['level_dev_q50']:.3f} / {r['level_dev_q90']:.3f} / "
              f"{r['level_dev_q99']:.3f}, share > 0.1: {r['share_level_dev_above_0.1']:.1%}", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="*", default=["bunny_k10", "spot_k100"])
    ap.add_argument("--premetrics", nargs="*", default=["biharmonic", "diffusion"])
    ap.add_argument("--steps", nargs="*", type=int, default=[8, 16, 32])
    ap.add_argument("--pairs", type=int, default=2048)
    ap.add_argument("--tail", type=int, default=0, help="PremetricPath tail steps (keys N+tailT in the JSON)")
    ap.add_argument("--json", default=None, help="merge the results into this JSON (key DATASET/PREMETRIC)")
    args = ap.parse_args(argv)
    for ds in args.datasets:
        for pm in args.premetrics:
            res = path_ends(ds, pm, args.steps, args.pairs, tail=args.tail)
            if args.json:
                old = _runs.load(Path(args.json)).get(f"{ds}/{pm}", {}).get("steps", {})
                _runs.merge(Path(args.json), f"{ds}/{pm}", {"pairs": args.pairs, "steps": {**old, **res}})


if __name__ == "__main__":
    main()
