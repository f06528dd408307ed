"""Minibatch OT coupling speed: geoflow's OTCoupling against torchcfm's OTPlanSampler in one run.

For each batch size n and dimension d, a seeded batch x0 ~ N(0, I_d), x1 ~ N(1, 0.5^2 I_d)
(float32, fresh every round, the same for every contender) is coupled by

* ``ours-exact``:    ``OTCoupling("exact")(x0, x1)`` (scipy assignment on Sinkhorn-reduced
  float64 costs; returns the optimal permutation of x0),
* ``ours-sinkhorn``: ``OTCoupling("sinkhorn", reg=0.05)(x0, x1)`` (eps = 0.05 mean cost, then
  one x0 drawn per x1 from the plan),
* ``torchcfm-exact``: ``OTPlanSampler("exact").sample_plan(x0, x1)`` (POT's network simplex
  ``ot.emd`` with its default numItermax = 100000, then n pairs drawn from the plan with
  replacement by ``np.random.choice``),

interleaved round by round; the median wall time of each is reported with the ratio
torchcfm-exact / ours (> 1: ours faster; goal >= 1).  Quality columns: the mean squared
distance of the returned pairs relative to the exact optimum (1.000 = optimal; torchcfm's
pairs are drawn with replacement, so their mean can fall below it), how often POT stopped at
its iteration limit before optimality (its plan is then not the OT plan), and the fraction of
distinct x0 in torchcfm's output (ours-exact: always 1, a permutation).

Usage:
    python benchmarks/compare_couplings.py [--sizes 256,512,1024,2048,4096] [--dims 2,64]
        [--rounds 5] [--threads N] [--json benchmarks/results/couplings_speed.json]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from geoflow.couplings import OTCoupling


def _pair_cost(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).pow(2).sum(-1).mean())


def run_case(n: int, d: int, rounds: int, seed: int) -> dict:
    from torchcfm.optimal_transport import OTPlanSampler

    exact, sink = OTCoupling("exact"), OTCoupling("sinkhorn", reg=0.05, generator=torch.Generator().manual_seed(seed))
    peer = OTPlanSampler(method="exact")
    fns = {
        "ours-exact": lambda x0, x1: exact(x0, x1),
        "ours-sinkhorn": lambda x0, x1: sink(x0, x1),
        "torchcfm-exact": lambda x0, x1: peer.sample_plan(x0, x1),
    }
    times = {k: [] for k in fns}
    quality = {k: [] for k in fns}
    capped, unique = 0, []
    for r in range(rounds + 1):  # round 0 is a warm-up
        g = torch.Generator().manual_seed(seed + 1000 * r)
        x0 = torch.randn(n, d, generator=g)
        x1 = 1.0 + 0.5 * torch.randn(n, d, generator=g)
        np.random.seed(seed + r)
        opt = None
        for name, fn in fns.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                t0 = time.perf_counter()
                a, b = fn(x0, x1)
                dt = time.perf_counter() - t0
            if name == "ours-exact":
                opt = _pair_cost(a, b)
            if r == 0:
                continue
            times[name].append(dt)
            quality[name].append(_pair_cost(a, b) / opt)
            if name == "torchcfm-exact":
                capped += any("numItermax" in str(w.message) for w in caught)
                unique.append(torch.unique(a, dim=0).shape[0] / n)
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    return {
        "n": n,
        "d": d,
        "ms": med,
        "speedup_exact": med["torchcfm-exact"] / med["ours-exact"],
        "speedup_sinkhorn": med["torchcfm-exact"] / med["ours-sinkhorn"],
        "cost_vs_optimum": {k: statistics.mean(v) for k, v in quality.items()},
        "torchcfm_emd_iteration_limit_hit": f"{capped}/{rounds}",
        "torchcfm_unique_x0_fraction": statistics.mean(unique),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="256,512,1024,2048,4096")
    ap.add_argument("--dims", default="2,64")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import ot
    import scipy
    import torchcfm

    res = {
        "date": _dt.date.today().isoformat(),
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "scipy": scipy.__version__, "pot": ot.__version__,
                     "torchcfm": getattr(torchcfm, "__version__", "1.0.7"), "numpy": np.__version__},
        "rounds": args.rounds,
        "cases": [],
    }  # fmt: skip
    print(f"# minibatch OT coupling speed, float32, {res['threads']} threads, {res['machine']}, {res['date']}")
    print("# " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()))
    print(f"# median of {args.rounds} interleaved rounds; ratio = torchcfm-exact / ours (> 1: ours faster)")
    head = (f"{'n':>5} {'d':>3} | {'ours-exact':>11} {'ours-sinkh':>11} {'torchcfm':>11} "
            f"| {'x exact':>7} {'x sinkh':>7} "
            f"| cost/opt: {'sinkh':>6} {'tcfm':>6} | POT capped | tcfm distinct x0")  # fmt: skip
    print(head)
    for d in [int(s) for s in args.dims.split(",")]:
        for n in [int(s) for s in args.sizes.split(",")]:
            c = run_case(n, d, args.rounds, args.seed)
            res["cases"].append(c)
            ms, q = c["ms"], c["cost_vs_optimum"]
            print(f"{n:>5} {d:>3} | {ms['ours-exact']:>8.1f} ms {ms['ours-sinkhorn']:>8.1f} ms "
                  f"{ms['torchcfm-exact']:>8.1f} ms "
                  f"| {c['speedup_exact']:>6.2f}x {c['speedup_sinkhorn']:>6.2f}x | {q['ours-sinkhorn']:>16.3f} "
                  f"{q['torchcfm-exact']:>6.3f} | {c['torchcfm_emd_iteration_limit_hit']:>10} "
                  f"| {c['torchcfm_unique_x0_fraction']:.2f}", flush=True)  # fmt: skip
    worst = min(c["speedup_exact"] for c in res["cases"])
    res["min_speedup_exact"] = worst
    print(f"exact goal (at least as fast as torchcfm exact everywhere): {'met' if worst >= 1 else 'MISSED'} "
          f"(min ratio {worst:.2f})")  # fmt: skip
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
