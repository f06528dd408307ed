"""How stiff is a trained equivariant flow?  Jacobians of the learned velocity along its own paths (issue 6).

Open question from the LJ13 coupling table (benchmarks/README.md, "Second seed of all four"): minibatch
OT on the unaligned clouds gives shorter, straighter paths than independent pairs but a worse test NLL
(21.2-21.9 against 17.2-17.9 nats) and more high-energy samples, on both seeds, with the likelihood
solver converged.  One explanation: on a density with many symmetric copies of each configuration
(13! orderings x rotations), raw-coordinate OT pairs a base point with whichever copy happens to be
close, so the coupled map jumps between copies across decision boundaries in x0; a smooth network
can only average across those boundaries, which costs likelihood and sends samples between the
copies.  Aligned couplings remove the copies before pairing (one copy per orbit), independent
pairs never have the jumps (their target field is an average over all copies, smooth).  If that
is so, the OT model's field should be the stiffest: large Jacobians where it tries to follow
the jumps.

For each checkpoint this integrates ``--n`` base samples with rk4 (``--steps``) and, at the
times ``--times`` on those trajectories, computes the full Jacobian dv/dx of the velocity
(n_particles * dim backward passes; the model treats the clouds of a batch independently) and
prints, per time, the median over samples of its spectral norm (largest singular value: the
local Lipschitz constant, how fast nearby paths separate) and of its Frobenius norm divided by
sqrt(n * dim), and the mean |divergence|.  It also pulls ``--test-points`` test clouds back to t = 0 (rk4, same
steps, backwards) and compares the squared norms |x0|^2 with the base's chi-squared law on the
d = (n_particles - 1) * dim free coordinates: the mean (d for a perfect flow) and the fractions
beyond its 1 % and 99 % quantiles (1 % each for a perfect flow): where the model's density is
wrong on the base side.  And it samples ``--samples`` clouds (rk4, same steps) and says what is wrong
with those above the highest test energy: an overlapping pair (smallest pair distance below the
smallest in the whole test set) or a particle flung out (distance from the centre above the test
set's largest).

Usage (the LJ13 runs of the coupling table, seed 0 and seed 1; with the defaults 3.5-6 minutes per
checkpoint on one CPU thread, most of it the 500 test clouds and 500 samples):
    OMP_NUM_THREADS=1 python benchmarks/field_stiffness.py RUN_DIR/best.pt [...] --json OUT.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

import torch
from scipy.stats import chi2

from geoflow.cli import _load_model
from geoflow.solvers import sample
from geoflow.train import keep_freed_memory

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _table_runs as _runs  # noqa: E402


def jacobians(model, x, t):
    """dv/dx for each cloud: (B, N*D, N*D), from N*D backward passes of the summed outputs."""
    B = x.shape[0]
    x = x.detach().requires_grad_(True)
    v = model(x, torch.full((B,), t, dtype=x.dtype)).reshape(B, -1)
    rows = []
    for i in range(v.shape[1]):
        (g,) = torch.autograd.grad(v[:, i].sum(), x, retain_graph=i < v.shape[1] - 1)
        rows.append(g.reshape(B, -1))
    return torch.stack(rows, 1)  # (B, out, in)


def geometry(x, data) -> dict:
    """Overlaps and flung-out particles in samples ``x``, against the whole test set."""

    def min_pair_and_radius(c):
        d = torch.cdist(c, c) + torch.eye(c.shape[1], dtype=c.dtype) * torch.finfo(c.dtype).max
        return d.amin((-2, -1)), c.norm(dim=-1).amax(-1)

    test = data.test.to(x.dtype)
    t_pair, t_rad = min_pair_and_radius(test)
    pair, rad = min_pair_and_radius(x)
    e, e_test = data.energy(x.double()), data.energy(test.double())
    high = ~(e <= e_test.max())  # NaN counts as high
    overlap, far = pair < t_pair.min(), rad > t_rad.max()
    k = max(int(high.sum()), 1)
    return {"n": int(x.shape[0]), "frac_above_test_max_energy": float(high.double().mean()),
            "frac_overlapping_pair": float(overlap.double().mean()), "frac_flung_out": float(far.double().mean()),
            "of_high_energy_overlapping": float((high & overlap).sum()) / k,
            "of_high_energy_flung_out": float((high & far).sum()) / k,
            "min_pair_distance_median": float(pair.median()), "test_min_pair_distance_median": float(t_pair.median()),
            "test_min_pair_distance_min": float(t_pair.min())}


def stiffness(checkpoint: Path, n: int, steps: int, times: list[float], seed: int, test_points: int,
              n_samples: int) -> dict:
    model, config, data = _load_model(checkpoint)
    m = data.manifold
    g = torch.Generator().manual_seed(seed)
    x0 = m.random_base(n, generator=g, dtype=data.train.dtype)
    out = {"coupling": config.coupling, "seed": config.seed, "dataset": config.dataset, "by_time": {}}
    with torch.no_grad():
        _, path = sample(model, x0, m, method="rk4", steps=steps, return_path=True)
        xs = sample(model, m.random_base(n_samples, generator=g, dtype=data.train.dtype), m, method="rk4", steps=steps)
        back = sample(model, data.test[:test_points].to(x0.dtype), m, method="rk4", steps=steps, t0=1.0, t1=0.0)
    out["samples"] = geometry(xs, data)
    sq = back.square().sum((-2, -1)).double()
    dof = (back.shape[-2] - 1) * back.shape[-1]
    lo, hi = chi2.ppf(0.01, dof), chi2.ppf(0.99, dof)
    out["pullback"] = {"dof": dof, "test_points": int(sq.numel()), "mean_sq_norm": float(sq.mean()),
                       "frac_below_q01": float((sq < lo).double().mean()), "frac_above_q99": float((sq > hi).double().mean())}
    for t in times:
        x = path[round(t * steps)]
        J = jacobians(model, x, t).double()
        d = J.shape[-1]
        spec = torch.linalg.matrix_norm(J, ord=2)
        frob = torch.linalg.matrix_norm(J) / d**0.5
        div = J.diagonal(dim1=-2, dim2=-1).sum(-1)
        out["by_time"][str(t)] = {
            "spectral_median": float(spec.median()), "spectral_p90": float(spec.quantile(0.9)),
            "frobenius_rms_median": float(frob.median()), "abs_divergence_mean": float(div.abs().mean()),
        }
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--n", type=int, default=64, help="base samples (default 64)")
    p.add_argument("--steps", type=int, default=100, help="rk4 steps of the trajectories (default 100)")
    p.add_argument("--times", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 0.9, 1.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=500, help="samples for the overlap count (default 500)")
    p.add_argument("--test-points", type=int, default=500, help="test clouds pulled back to t=0 (default: the first 500)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    keep_freed_memory()
    rows = {}
    for ckpt in args.checkpoints:
        r = stiffness(ckpt, args.n, args.steps, args.times, args.seed, args.test_points, args.samples)
        rows[str(ckpt)] = r
        print(f"{ckpt}: {r['dataset']} coupling {r['coupling']}, seed {r['seed']}")
        sm = r["samples"]
        print(f"  {sm['n']} samples: {100 * sm['frac_above_test_max_energy']:.1f}% above the highest test energy; "
              f"{100 * sm['frac_overlapping_pair']:.1f}% with an overlapping pair, {100 * sm['frac_flung_out']:.1f}% flung out; "
              f"of the high-energy ones {100 * sm['of_high_energy_overlapping']:.0f}% overlap, "
              f"{100 * sm['of_high_energy_flung_out']:.0f}% flung out; median smallest pair distance "
              f"{sm['min_pair_distance_median']:.3f} (test {sm['test_min_pair_distance_median']:.3f})")
        pb = r["pullback"]
        print(f"  test set pulled back to t=0: mean |x0|^2 {pb['mean_sq_norm']:.2f} (base: {pb['dof']}), "
              f"{100 * pb['frac_below_q01']:.0f}% below the base's 1% quantile, {100 * pb['frac_above_q99']:.0f}% above its 99%")
        for t, s in r["by_time"].items():
            print(f"  t={float(t):.2f}  spectral median {s['spectral_median']:8.2f} (p90 {s['spectral_p90']:8.2f})  "
                  f"frobenius/sqrt(d) {s['frobenius_rms_median']:7.3f}  |div| {s['abs_divergence_mean']:8.2f}")
    if args.json is not None:
        cmd = " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))
        _runs.save({"date": _dt.datetime.now().isoformat(timespec="seconds"), "command": cmd,
                    "n": args.n, "steps": args.steps, "runs": rows}, args.json)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
