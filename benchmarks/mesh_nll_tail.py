"""Where a mesh flow's test NLL loses to the target's entropy (issue 4 diagnostics).

For a checkpoint of ``geoflow train`` on a mesh dataset (EMA weights) it prints:

* the test NLL's mean, median and 90 % quantile beside the target's own -log p at the same points
  (a gap in the mean but not the median is a tail: regions the model under-covers);
* the worst 10 % of test points: how much of their neighbourhood is also in the worst 10 %
  (spatial coherence), the target density there against all points, the model's excess NLL
  there and elsewhere, their share next to zero-density faces and their distance to the edges of
  their face (barycentric minimum);
* a coarse check of the samples without likelihoods: the cross-entropy of test points under
  histograms on P face patches (k-means of the face centroids) built from model samples and
  from as many training points (the data's own histogram is the floor at that resolution);
* the premetric path's target speeds |u| on training rows (heavy-tailed where the spectral
  distance is nearly flat) and the share of the model's squared error in the top 1 % of rows.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/mesh_nll_tail.py runs/mesh_table/bunny_k10-biharmonic-seed0/best.pt \\
        --json benchmarks/results/mesh_nll_tail.json
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _table_runs as _runs  # noqa: E402


def tail(model, config, data, n_test: int = 2000, steps: int = 20, seed: int = 0) -> dict:
    from scipy.spatial import cKDTree

    from geoflow.data.meshes import target_face_density
    from geoflow.solvers import log_likelihood

    m = data.manifold
    g = torch.Generator().manual_seed(seed)
    test = data.test[torch.randperm(data.test.shape[0], generator=g)[:n_test]].float()
    nll = -log_likelihood(model, test, m, method="rk4", steps=steps).double().numpy()
    face, b = m.barycentric(test.double())
    face = face.numpy()
    name, k = config.dataset.split("_k")
    dens = target_face_density(name, int(k)).numpy()
    target = -np.log(dens[face])  # -log p at the test points
    bad = nll > np.quantile(nll, 0.9)
    x = test.numpy()
    _, idx = cKDTree(x).query(x, k=6)
    adjf = np.where(m._adj >= 0, m._adj // 3, np.arange(len(m._F))[:, None])
    zero = dens <= 0
    near0 = zero[adjf].any(1) | zero
    bmin = b.min(-1).values.numpy()
    excess = nll - target
    return {
        "n_test": n_test, "steps": steps,
        "nll": {"mean": float(nll.mean()), "median": float(np.median(nll)), "q90": float(np.quantile(nll, 0.9))},
        "target_neg_log_p": {"mean": float(target.mean()), "median": float(np.median(target))},
        "worst10": {
            "neighbours_also_worst": float(bad[idx[bad, 1:]].mean()),
            "target_density_median": float(np.median(np.exp(-target[bad]))),
            "target_density_median_all": float(np.median(np.exp(-target))),
            "excess_nll_median": float(np.median(excess[bad])),
            "excess_nll_median_rest": float(np.median(excess[~bad])),
            "next_to_zero_density_face": float(near0[face][bad].mean()),
            "next_to_zero_density_face_all": float(near0[face].mean()),
            "barycentric_min_median": float(np.median(bmin[bad])),
            "barycentric_min_median_all": float(np.median(bmin)),
        },
    }


def coarse(model, data, n: int = 5000, patches=(30, 100, 300), steps: int = 20, seed: int = 0) -> dict:
    from scipy.cluster.vq import kmeans2

    from geoflow.solvers import sample

    m = data.manifold
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        xs = torch.cat([sample(model, m.random_base(min(5000, n - i), generator=g, dtype=torch.float32), m,
                               method="rk4", steps=steps) for i in range(0, n, 5000)])
    test = data.test.float()
    f_test, _ = m.locate(test.double())
    f_model, _ = m.locate(xs.double())
    f_train, _ = m.locate(data.train[:n].double())
    out = {"n": n, "steps": steps, "uniform": math.log(m.total_area)}
    for P in patches:
        _, lab = kmeans2(m._centroids, P, minit="++", seed=np.random.default_rng(seed), iter=20)
        parea = np.bincount(lab, weights=m._areas, minlength=P)

        def ce(faces, alpha=0.5):
            c = np.bincount(lab[faces.numpy()], minlength=P) + alpha
            dens = c / c.sum() / np.maximum(parea, 1e-300)
            return float(-np.log(dens[lab[f_test.numpy()]]).mean())

        out[str(P)] = {"model_samples": ce(f_model), "train_data": ce(f_train)}
    return out


def velocity_tail(model, config, data, pairs: int = 2048, r: int = 8, seed: int = 0) -> dict:
    """Quantiles of the premetric path's target speed |u| on ``pairs`` x ``r`` training rows (the table's
    sampling: stratified times, ``sample_times``), and the share of the model's squared error in the top 1 %."""
    from geoflow.train.trainer import build_path

    m = data.manifold
    path = build_path(config, m)
    g = torch.Generator().manual_seed(seed)
    x1 = data.train[torch.randint(0, data.train.shape[0], (pairs,), generator=g)].float()
    x0 = m.random_base(pairs, generator=g, dtype=torch.float32)
    t = (torch.arange(r, dtype=x1.dtype) + torch.rand(pairs, r, generator=g)) / r
    s = path.sample_times(x0, x1, t)
    speed = s.dx_t.norm(dim=-1)
    with torch.no_grad():
        err = ((model(s.x_t, s.t) - s.dx_t) ** 2).sum(-1)
    q = speed.quantile(torch.tensor([0.5, 0.99, 0.999]))
    top = err.argsort(descending=True)[: max(1, err.numel() // 100)]
    return {"rows": int(speed.numel()), "speed_median": float(q[0]), "speed_q99": float(q[1]), "speed_q999": float(q[2]),
            "speed_max": float(speed.max()), "top1pct_error_share": float(err[top].sum() / err.sum())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--n-test", type=int, default=2000, help="test points for the likelihood part (default 2000)")
    ap.add_argument("--n-samples", type=int, default=5000, help="model samples for the histograms (default 5000)")
    ap.add_argument("--patches", nargs="*", type=int, default=[30, 100, 300])
    ap.add_argument("--steps", type=int, default=20, help="rk4 steps (default 20)")
    ap.add_argument("--json", default=None, help="merge the result into this JSON under the checkpoint's path")
    args = ap.parse_args(argv)
    from geoflow.cli import _load_model

    model, config, data = _load_model(args.checkpoint)
    t0 = time.time()
    res = {"checkpoint": args.checkpoint, "dataset": config.dataset, **tail(model, config, data, args.n_test, args.steps)}
    n, t, w = res["nll"], res["target_neg_log_p"], res["worst10"]
    print(f"{config.dataset}: test NLL mean {n['mean']:.3f} median {n['median']:.3f} q90 {n['q90']:.3f}  |  "
          f"target -log p mean {t['mean']:.3f} median {t['median']:.3f}  ({args.n_test} points, rk4 {args.steps})")
    print(f"worst 10 %: {w['neighbours_also_worst']:.0%} of their 5 nearest test points also worst (10 % by chance); "
          f"target density median {w['target_density_median']:.3f} (all {w['target_density_median_all']:.3f}); "
          f"model NLL - target -log p median {w['excess_nll_median']:.2f} (rest {w['excess_nll_median_rest']:.2f}); "
          f"next to a zero-density face {w['next_to_zero_density_face']:.0%} (all {w['next_to_zero_density_face_all']:.0%}); "
          f"barycentric min median {w['barycentric_min_median']:.3f} (all {w['barycentric_min_median_all']:.3f})")
    res["coarse"] = coarse(model, data, args.n_samples, args.patches, args.steps)
    for P in args.patches:
        c = res["coarse"][str(P)]
        print(f"{P:4d} patches: cross-entropy of test points under the histogram of {args.n_samples} model samples "
              f"{c['model_samples']:.3f}, of as many training points {c['train_data']:.3f} (uniform "
              f"{res['coarse']['uniform']:.3f})")
    v = res["velocity"] = velocity_tail(model, config, data)
    print(f"target speed |u| on {v['rows']} training rows: median {v['speed_median']:.2f}, 99 % {v['speed_q99']:.1f}, "
          f"99.9 % {v['speed_q999']:.1f}, max {v['speed_max']:.0f}; the top 1 % of rows carry "
          f"{v['top1pct_error_share']:.0%} of the model's squared error")
    res["seconds"] = time.time() - t0
    print(f"{res['seconds']:.0f} s")
    if args.json:
        _runs.merge(Path(args.json), args.checkpoint, res)


if __name__ == "__main__":
    main()
