"""Is a mesh flow's likelihood trustworthy?  Solver convergence and normalisation of log q (issue 4).

For a checkpoint of ``geoflow train`` on a mesh dataset it measures, with the EMA weights:

* the test NLL with rk4 at ``--steps`` (default 5 20 80): an exact likelihood of a smooth flow
  converges as the solver is refined; on a polyhedral surface the projected dynamics are only
  piecewise smooth, so this is the first thing to look at;
* the normalisation area x E_uniform[q] (should be 1), with its standard error, at each step count;
* sample quality without likelihoods: the energy distance between model samples (rk4, 20 steps)
  and test points, beside uniform-vs-test and train-vs-test;
* the change of variables itself (:func:`jacobian_check`): the log-area change of tiny triangles
  under the map the sampler executes, against the likelihood's divergence integral.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/mesh_nll_check.py runs/mesh_probe/best.pt \\
        --json benchmarks/results/mesh_nll_check.json
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _table_runs as _runs  # noqa: E402


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def jacobian_check(model, m, steps=(20, 80), n: int = 200, eps: float = 1e-4, seed: int = 3) -> dict:
    """Change of variables of the map the sampler executes against the likelihood's divergence integral.

    For n base points x (float64) and two tangent offsets of eps x mesh size in x's face, the
    sampler moves the three points; log(area of the image triangle / area of the start triangle)
    is the log-Jacobian of the executed map, and -log(area) - log q(y) from ``log_likelihood`` at
    the image y is what the likelihood integrates.  They agree for an exact flow; the median and
    mean of their difference (nats) are returned per step count.
    """
    from geoflow.solvers import log_likelihood, sample

    model = model.double()
    g = torch.Generator().manual_seed(seed)
    x = m.random_base(n, generator=g, dtype=torch.float64)
    face, _ = m.locate(x)
    nf = m.face_normals.double()[face]
    e1 = torch.randn(n, 3, generator=g, dtype=torch.float64)
    e1 = e1 - (e1 * nf).sum(-1, keepdim=True) * nf
    e1 = e1 / e1.norm(dim=-1, keepdim=True)
    e2 = torch.linalg.cross(nf, e1, dim=-1)
    h = eps * m.scale
    start = m.projx(torch.cat([x, x + h * e1, x + h * e2]))  # (the few triangles across an edge are folded onto it)
    s0 = start
    area0 = torch.linalg.cross(s0[n : 2 * n] - s0[:n], s0[2 * n :] - s0[:n], dim=-1).norm(dim=-1)
    out = {}
    for k in steps:
        with torch.no_grad():
            y = sample(model, start, m, method="rk4", steps=k)
        y0, y1, y2 = y[:n], y[n : 2 * n], y[2 * n :]
        log_area = (torch.linalg.cross(y1 - y0, y2 - y0, dim=-1).norm(dim=-1) / area0).log()
        log_det = -math.log(m.total_area) - log_likelihood(model, y0, m, method="rk4", steps=k)
        diff = log_area - log_det
        out[str(k)] = {"median_abs": float(diff.abs().median()), "mean": float(diff.mean()),
                       "q90_abs": float(diff.abs().quantile(0.9))}
        print(f"rk4 {k:3d} steps: log-Jacobian of the executed map minus the likelihood's: median |.| "
              f"{out[str(k)]['median_abs']:.3f}, mean {out[str(k)]['mean']:.3f}, q90 |.| {out[str(k)]['q90_abs']:.3f} "
              "(0 for an exact likelihood)", flush=True)
    model.float()
    return out


def check(ckpt: str, steps=(5, 20, 80), n_test: int = 1000, n_uniform: int = 2000, seed: int = 0) -> dict:
    from geoflow.cli import _load_model
    from geoflow.solvers import log_likelihood, sample

    model, config, data = _load_model(ckpt)
    m = data.manifold
    g = torch.Generator().manual_seed(seed)
    test = data.test[torch.randperm(data.test.shape[0], generator=g)[:n_test]].float()
    xu = m.random_base(n_uniform, generator=g, dtype=torch.float32)
    out = {"checkpoint": ckpt, "dataset": config.dataset, "log_area": math.log(m.total_area), "by_steps": {}}
    for k in steps:
        t0 = time.time()
        nll = -log_likelihood(model, test, m, method="rk4", steps=k)
        q = log_likelihood(model, xu, m, method="rk4", steps=k).double().exp() * m.total_area
        out["by_steps"][str(k)] = {
            "test_nll": float(nll.mean()), "test_nll_se": float(nll.std() / math.sqrt(len(nll))),
            "normalisation": float(q.mean()), "normalisation_se": float(q.std() / math.sqrt(len(q))),
            "seconds": time.time() - t0,
        }
        r = out["by_steps"][str(k)]
        print(f"rk4 {k:3d} steps: test NLL {r['test_nll']:.3f} ± {r['test_nll_se']:.3f}   area x E_uniform[q] "
              f"{r['normalisation']:.3f} ± {r['normalisation_se']:.3f} (should be 1)   {r['seconds']:.0f} s", flush=True)
    with torch.no_grad():
        xs = sample(model, m.random_base(n_test, generator=g, dtype=torch.float32), m, method="rk4", steps=20)
    out["energy_distance"] = {"samples_test": energy_distance(xs, test), "uniform_test": energy_distance(xu[:n_test], test),
                              "train_test": energy_distance(data.train[:n_test].float(), test)}
    print("energy distance to test: samples {samples_test:.4f}, uniform {uniform_test:.4f}, train {train_test:.4f}"
          .format(**out["energy_distance"]))
    print(f"uniform NLL (log area) {out['log_area']:.3f}")
    out["jacobian"] = jacobian_check(model, m)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--steps", nargs="*", type=int, default=[5, 20, 80])
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--n-uniform", type=int, default=2000)
    ap.add_argument("--json", default=None, help="merge the result into this JSON under the checkpoint's path")
    args = ap.parse_args(argv)
    res = check(args.checkpoint, args.steps, args.n_test, args.n_uniform)
    if args.json:
        _runs.merge(Path(args.json), args.checkpoint, res)


if __name__ == "__main__":
    main()
