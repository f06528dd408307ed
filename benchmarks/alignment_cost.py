"""Cost of the alignment coupling (issue 6): Kabsch + Hungarian for every pair, then minibatch OT.

For a batch of B base samples x0 (CoM-free standard Gaussian) and B data samples x1 (LJ clusters
from ``geoflow.data.particles.sample_lj``, or a Gaussian cloud with ``--data gaussian``) it times

* ``AlignmentCoupling(starts=s, n_iter=k)(x0, x1)`` for each ``--settings`` pair ``s,k`` (or
  ``AlignmentCoupling(rotations=False)``, the particle order alone, for ``perm``), split
  into the pairwise alignment of the B^2 pairs and the OT assignment on the B x B aligned cost,
  and reports the mean squared distance of the coupled pairs (the transport cost) and the median
  distance |x1 - x0| of a pair (the length of a straight path; a learned flow's trajectories are
  at least about this long, Klein et al. 2023 compare median path lengths);
* for comparison the same transport cost with the independent coupling (given pairs, centred),
  with plain minibatch OT (``OTCoupling("exact")`` on the centred, flattened clouds), and with
  that OT pairing followed by aligning only the B chosen pairs (``AlignmentCoupling(ot=False)``:
  B instead of B^2 alignments);
* a training-step proxy without an equivariant network: forward + backward + Adam step of a
  plain MLP velocity field (4 layers of 256, SiLU) on the flattened clouds at batch B, with the
  conditional flow-matching loss.  The lead combines the alignment time with the EGNN timing
  separately; the proxy only gives a scale.

The goal of the issue is an alignment cost of at most 50% of a training step on LJ55 at batch
256.  The alignment work grows as B^2 (pairs) x starts+rounds (Hungarian problems of size n
each), so small runs extrapolate: the script prints the time per pair.

Usage (LJ55-sized, the issue's setting; minutes on one core):
    python benchmarks/alignment_cost.py --batch 256 --particles 55 \
        --json benchmarks/results/alignment_cost.json
Small check:
    python benchmarks/alignment_cost.py --batch 32 --particles 55 --data gaussian
Assignment solvers and cost forms side by side (``--solver-table``): the Hungarian problems of
the first start (x1 particles against the principal-axes-rotated x0 particles) for the first
``--solver-pairs`` pairs, solved by lapx's batched Jonker-Volgenant solver and by scipy's
``linear_sum_assignment`` on three equivalent costs: -<b_k, R a_l>, |b_k|^2 - 2 <b_k, R a_l>
(what the coupling hands lapx) and that with each column's minimum subtracted (the scipy
fallback); one thread, us per problem.  ``--solver scipy`` times the whole coupling with the
scipy fallback instead of lapx.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
from pathlib import Path

import torch

import numpy as np
from scipy.optimize import linear_sum_assignment

from geoflow.couplings import AlignmentCoupling, OTCoupling
from geoflow.couplings import alignment as _alignment
from geoflow.couplings._solve import assignment
from geoflow.data.particles import sample_lj
from geoflow.train import keep_freed_memory

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _table_runs as _runs  # noqa: E402


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def centred(x):
    return x - x.mean(-2, keepdim=True)


def _pair_sq(a, b):
    """|a - b|^2 per pair of centred clouds."""
    return (centred(a) - centred(b)).square().sum((-2, -1))


def pair_cost(a, b):
    return float(_pair_sq(a, b).mean())


def pair_distance_median(a, b):
    """Median over pairs of |a - b| (centred clouds; the straight-line path length)."""
    return float(_pair_sq(a, b).sqrt().median())


def time_coupling(x0, x1, starts, n_iter, repeats, rotations=True):
    coupling = AlignmentCoupling(starts=starts, n_iter=n_iter, rotations=rotations)
    best = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        C, _, _ = coupling.pairwise(x0, x1)
        t1 = time.perf_counter()
        assignment(C)
        t2 = time.perf_counter()
        if best is None or t2 - t0 < best[0]:
            best = (t2 - t0, t1 - t0, t2 - t1)
    y0, y1 = coupling(x0, x1)  # the full call (pairwise + OT + applying the alignment)
    return {
        "starts": starts if rotations else None,
        "n_iter": n_iter if rotations else None,
        "rotations": rotations,
        "ms_per_call": 1e3 * best[0],
        "ms_pairwise": 1e3 * best[1],
        "ms_ot": 1e3 * best[2],
        "us_per_pair": 1e6 * best[1] / x0.shape[0] ** 2,
        "transport_cost": pair_cost(y0, y1),
        "median_distance": pair_distance_median(y0, y1),
    }


def solver_table(x0, x1, pairs, repeats=3):
    """us per assignment problem: {cost form: {solver: us}}, and whether all solvers agree."""
    from lap import lapjvr_batch

    B = x0.shape[0]
    i, j = torch.arange(B).repeat_interleave(B)[:pairs], torch.arange(B).repeat(B)[:pairs]
    a, b = centred(x0[i]), centred(x1[j])
    aligner = AlignmentCoupling(starts=1, n_iter=0)._aligner(a.shape[1])
    R = aligner._frames(a, b)[:, 0]
    row = _alignment._assignment_cost(a, b, R)  # |b_k|^2 - 2 <b_k, R a_l>, what the coupling hands lapx
    G = b @ (a @ R.mT).mT  # <b_k, R a_l>
    forms = {"-<b,Ra>": -G, "|b|^2-2<b,Ra>": row, "column-reduced": row - row.amin(-2, keepdim=True)}

    def lapx(C):
        return np.stack(lapjvr_batch(C, n_threads=1, return_cost=False)[1])

    def scipy(C):
        return np.stack([linear_sum_assignment(c)[1] for c in C])

    table, cols = {}, []
    for name, C in forms.items():
        C = np.ascontiguousarray(C.numpy())
        table[name] = {}
        for solver, f in (("lapx", lapx), ("scipy", scipy)):
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                out = f(C)
                best = min(best, time.perf_counter() - t0)
            table[name][solver] = 1e6 * best / len(C)
            cols.append(out)
    agree = float(np.mean([(c == cols[0]).all(-1).mean() for c in cols[1:]]))
    return table, agree


def train_step_proxy(B, n, dim, repeats, seed=0):
    """ms per forward + backward + Adam step of a plain MLP CFM on flattened clouds."""
    g = torch.Generator().manual_seed(seed)
    d = n * dim
    net = torch.nn.Sequential(
        torch.nn.Linear(d + 1, 256), torch.nn.SiLU(), torch.nn.Linear(256, 256), torch.nn.SiLU(),
        torch.nn.Linear(256, 256), torch.nn.SiLU(), torch.nn.Linear(256, d),
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x0, x1 = torch.randn(B, d, generator=g), torch.randn(B, d, generator=g)
    best = float("inf")
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        t = torch.rand(B, 1, generator=g)
        xt = (1 - t) * x0 + t * x1
        loss = (net(torch.cat((xt, t), -1)) - (x1 - x0)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--particles", type=int, default=55)
    p.add_argument("--data", choices=("mcmc", "gaussian"), default="mcmc")
    p.add_argument("--burn-in", type=int, default=1000, help="MCMC burn-in for --data mcmc")
    p.add_argument("--settings", default="1,0 2,2",
                   help="space-separated 'starts,n_iter' pairs; 'perm': the particle order only (rotations=False)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--solver", choices=("lapx", "scipy"), default="lapx",
                   help="assignment solver of the alignment (scipy: the fallback without lapx)")
    p.add_argument("--solver-table", action="store_true",
                   help="also time lapx and scipy on the Hungarian problems of --solver-pairs pairs (one thread)")
    p.add_argument("--solver-pairs", type=int, default=2048)
    _runs.add_malloc_option(p)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.malloc == "keep":
        keep_freed_memory()
    _alignment._SOLVER = args.solver
    B, n = args.batch, args.particles
    info = machine()
    print(f"machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, torch threads {info['torch_threads']}, "
          f"load {info['load_average_1_5_15min']}, torch {info['torch']}")  # fmt: skip
    g = torch.Generator().manual_seed(args.seed)
    x0 = centred(torch.randn(B, n, 3, generator=g))
    t0 = time.perf_counter()
    if args.data == "mcmc":
        x1 = sample_lj(n, B, seed=args.seed, n_chains=B, burn_in=args.burn_in, thin=1)
    else:
        x1 = centred(0.7 * torch.randn(B, n, 3, generator=g))
    print(f"data: {args.data} LJ{n}-sized clouds, batch {B} ({time.perf_counter() - t0:.1f} s to make)")
    solvers = agree = None
    if args.solver_table:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        solvers, agree = solver_table(x0, x1, args.solver_pairs)
        torch.set_num_threads(threads)
        print(f"  assignment problems of {min(args.solver_pairs, B * B)} pairs, us per problem (one thread); "
              f"solutions agree on {100 * agree:.2f}% of problems:")
        for name, r in solvers.items():
            print(f"    {name:16s} lapx {r['lapx']:7.1f}   scipy {r['scipy']:7.1f}")
    rows = []
    for s in args.settings.split():
        if s == "perm":
            r = time_coupling(x0, x1, 1, 0, args.repeats, rotations=False)
            label = "order only (rotations=False)"
        else:
            starts, n_iter = (int(v) for v in s.split(","))
            r = time_coupling(x0, x1, starts, n_iter, args.repeats)
            label = f"starts={starts} n_iter={n_iter}"
        r["label"] = label
        rows.append(r)
        print(f"  alignment {label}: {r['ms_per_call']:.0f} ms per call "
              f"(pairwise {r['ms_pairwise']:.0f} ms = {r['us_per_pair']:.0f} us/pair, OT {r['ms_ot']:.1f} ms); "
              f"transport cost {r['transport_cost']:.2f}, median distance {r['median_distance']:.3f}")  # fmt: skip
    indep = pair_cost(x0, x1)
    t0 = time.perf_counter()
    ot0, ot1 = OTCoupling("exact")(centred(x0).reshape(B, -1), centred(x1).reshape(B, -1))
    t_ot = time.perf_counter() - t0
    ot0, ot1 = ot0.reshape(B, n, 3), ot1.reshape(B, n, 3)
    ot_cost = pair_cost(ot0, ot1)
    # cheap alternative: OT on the unaligned cost, then align only the B chosen pairs
    t0 = time.perf_counter()
    y0, y1 = AlignmentCoupling(ot=False)(ot0, ot1)
    t_pairs = time.perf_counter() - t0
    ot_then_align = pair_cost(y0, y1)
    dist = {"independent": pair_distance_median(x0, x1),
            "ot": pair_distance_median(ot0, ot1),
            "ot_then_align_pairs": pair_distance_median(y0, y1)}
    print(f"  transport cost: independent {indep:.2f}, minibatch OT {ot_cost:.2f} ({1e3 * t_ot:.1f} ms), "
          f"OT then align the B pairs {ot_then_align:.2f} ({1e3 * (t_ot + t_pairs):.0f} ms)")  # fmt: skip
    print("  median distance of a pair: " + ", ".join(f"{k} {v:.3f}" for k, v in dist.items()))
    step = train_step_proxy(B, n, 3, max(args.repeats, 3))
    print(f"  training-step proxy (MLP 4x256 on flattened clouds, fwd+bwd+Adam, batch {B}): {step:.1f} ms")
    for r in rows:
        r["fraction_of_proxy_step"] = r["ms_per_call"] / (r["ms_per_call"] + step)
        print(f"  {r['label']}: alignment / (alignment + proxy step) = "
              f"{100 * r['fraction_of_proxy_step']:.0f}%")  # fmt: skip
    if args.json is not None:
        out = {
            "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "machine": info,
            "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
            "batch": B,
            "particles": n,
            "data": args.data,
            "malloc": args.malloc,
            "solver": args.solver,
            "solver_table_us_per_problem": solvers,
            "solver_table_agreement": agree,
            "alignment": rows,
            "transport_cost_independent": indep,
            "transport_cost_ot": ot_cost,
            "transport_cost_ot_then_align_pairs": ot_then_align,
            "ms_ot_then_align_pairs": 1e3 * (t_ot + t_pairs),
            "median_distance": dist,
            "train_step_proxy_ms": step,
        }
        _runs.save(out, args.json)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
