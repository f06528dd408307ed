"""Straightness of flows trained with independent vs minibatch-OT couplings (issue 5, couplings).

For N(0, I_2) -> ``eight_gaussians``, ``moons``, ``checkerboard`` (R^2, squared Euclidean cost) and
uniform -> an earth dataset on S^2 (default ``fire``; geodesic path, squared geodesic cost), a small
MLP flow (``MLPVelocity``, hidden 256, depth 3) is trained with the same seed, initial weights,
data stream and budget for every coupling:

* the training batch is always ``--batch`` (256) pairs;
* the coupling is exact minibatch OT (``OTCoupling("exact")``) computed on sub-minibatches of
  size b in ``--ot-sizes`` (default 1, 16, 64, 256): the batch is cut into 256 / b chunks and each
  chunk of base samples is re-paired with its chunk of data by the optimal permutation.  b = 1 is
  exactly the independent coupling (I-CFM), b = 256 is OT-CFM on the whole batch (Tong et al.
  2023).  So "batch size b" in the issue means the OT minibatch size, not the optimiser's batch.

Path: x_t = (1 - t) x0 + t x1 (CondOT, sigma_min = 0) in R^2, the geodesic path on S^2; loss CFM /
Riemannian CFM; Adam, lr 1e-3 with cosine decay to 1e-4, EMA 0.999 (the EMA weights are evaluated).

Measured on ``--n-eval`` held-out points and as many fixed base samples (see benchmarks/_flowbench.py
for the exact definitions):

* NPE: normalised path energy |PE - W2^2(q0, q1)| / W2^2(q0, q1), W2^2 between the base samples
  and held-out data (Tong et al. 2023 report 0.018 for OT-CFM and 0.222 for I-CFM, N(0, I) -> 8
  Gaussians; their network, step budget and path (sigma = 0.1 around the straight line) differ
  from ours, so compare orders of magnitude).  For nearly-OT flows this is dominated by the
  finite-sample bias of W2^2, so also NPEself: the same ratio against W2^2 from the base samples to
  the flow's own endpoints (>= 0, no sample bias); straightness PE / mean |phi_1(x0) - x0|^2 - 1
  (0 for straight, constant-speed paths);
* NFE@5%: the fewest Euler steps whose samples are within W2 <= 0.05 W2(x0, X_ref) of the flow's
  own converged samples X_ref (rk4, 1000 NFE);  NFE@data: the fewest Euler steps whose W2 to the
  held-out data is within 5 % of the converged flow's;
* W2 to held-out data after 1, 2, 4, 8 Euler steps and for the converged flow.

Usage:
    python benchmarks/couplings_straightness.py --json benchmarks/results/couplings_straightness.json
    python benchmarks/couplings_straightness.py --quick            # smoke check, about 2-3 minutes
    python benchmarks/couplings_straightness.py --datasets eight_gaussians --ot-sizes 1,256 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _flowbench as fb  # noqa: E402

from geoflow.data import load_dataset  # noqa: E402
from geoflow.nn import MLPVelocity  # noqa: E402
from manifolds import Euclidean  # noqa: E402

PLANE = ("eight_gaussians", "moons", "checkerboard")
TONG_2023 = {"dataset": "eight_gaussians", "npe": {"OT-CFM": 0.018, "I-CFM": 0.222},
             "source": "Tong et al. 2023, 'Improving and generalizing flow-based generative models with minibatch "
                       "optimal transport', TMLR 2024: normalised path energy, N(0, I) -> 8 Gaussians"}  # fmt: skip


def load(name: str, seed: int, n_samples: int):
    if name in PLANE:
        ds = load_dataset(name, seed=seed, n_samples=n_samples)
        return ds, fb.Space(name, Euclidean(2), (2,))
    ds = load_dataset(name, seed=seed)
    return ds, fb.Space(name, ds.manifold, tuple(ds.manifold.point_shape))


def coupling_name(b: int, batch: int) -> str:
    if b == 1:
        return "independent (OT b=1)"
    return f"OT exact b={b}" + (" (OT-CFM)" if b == batch else "")


def run(args) -> dict:
    res = fb.header(args.threads, args.seeds[0])
    res["config"] = {k: v for k, v in vars(args).items() if k != "json"}
    res["reference"] = TONG_2023
    res["runs"] = []
    for name in args.datasets:
        for seed in args.seeds:
            ds, space = load(name, seed, args.n_samples)
            n_eval = min(args.n_eval, ds.test.shape[0])
            g_eval = torch.Generator().manual_seed(10_000 + seed)
            x0_eval = space.base(n_eval, g_eval)
            data_eval = ds.test[torch.randperm(ds.test.shape[0], generator=g_eval)[:n_eval]]
            for b in args.ot_sizes:
                torch.manual_seed(seed)  # the same initial weights for every coupling
                model = MLPVelocity(space.manifold, hidden=args.hidden, depth=args.depth)
                label = f"{name} {coupling_name(b, args.batch)} seed {seed}"
                model, stats = fb.train(model, space, fb.data_draw(space, ds.train, args.batch), fb.ChunkedOT(b, space),
                                        steps=args.steps, lr=args.lr, seed=seed, ema_decay=args.ema, label=label,
                                        log_every=args.log_every)  # fmt: skip
                ev = fb.evaluate(model, space, x0_eval, data_eval, ref_steps=args.ref_steps, pe_steps=args.pe_steps,
                                 max_nfe=args.max_nfe)
                row = {"dataset": name, "space": repr(space.manifold), "seed": seed, "ot_minibatch": b,
                       "coupling": coupling_name(b, args.batch), "train": stats, **ev}  # fmt: skip
                res["runs"].append(row)
                print_row(row)
    return res


HEAD = (f"{'dataset':<16} {'coupling':<26} {'train s':>7} {'loss':>7} | {'NPE':>6} {'NPEself':>7} {'straight':>8} | "
        f"{'NFE@5%':>6} {'NFE@data':>8} | W2 data @1,2,4,8 Euler steps  | {'W2 conv':>7}")  # fmt: skip


def print_row(r: dict) -> None:
    c = r["curve"]
    w = " ".join(f"{c[str(n)]['w2_data']:6.3f}" if str(n) in c else "     -" for n in (1, 2, 4, 8))
    print(f"{r['dataset']:<16} {r['coupling']:<26} {r['train']['seconds']:7.0f} {r['train']['final_loss']:7.3f} | "
          f"{r['npe']:6.3f} {r['npe_self']:7.4f} {r['straightness']:8.4f} | "
          f"{fb.fmt_nfe(r['nfe_ref']['0.05'], r['max_nfe']):>6} "
          f"{fb.fmt_nfe(r['nfe_data'], r['max_nfe']):>8} | {w}   | {r['w2_ref_to_data']:7.3f}", flush=True)  # fmt: skip


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(PLANE) + ",fire",
                    help="comma-separated: eight_gaussians, moons, checkerboard (R^2) and/or an S^2 dataset "
                         "(fire, flood, earthquake, volcano, vmf_mixture); default: the three 2-D sets and fire")
    ap.add_argument("--ot-sizes", default="1,16,64,256", help="OT minibatch sizes b (1 = independent coupling)")
    ap.add_argument("--batch", type=int, default=256, help="training batch (a multiple of every b)")
    ap.add_argument("--steps", type=int, default=8000, help="training steps per run")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, default=0.999, help="EMA decay of the evaluated weights")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--n-samples", type=int, default=20000, help="points drawn for the 2-D sets (10 %% are test)")
    ap.add_argument("--n-eval", type=int, default=2000, help="held-out points and base samples for evaluation")
    ap.add_argument("--ref-steps", type=int, default=250, help="rk4 steps of the reference solution")
    ap.add_argument("--max-nfe", type=int, default=256, help="largest Euler step count tried for the NFE measures")
    ap.add_argument("--pe-steps", type=int, default=100, help="rk4 steps of the path-energy integral")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--log-every", type=int, default=0, help="print the loss every this many steps (0: never)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke check: b in {1, 256}, 1000 steps, EMA 0.99, 500 eval points, short reference solves, "
                         "Euler up to 128 steps")
    ap.add_argument("--json", default=None,
                    help="write the results here (e.g. benchmarks/results/couplings_straightness.json)")
    args = ap.parse_args(argv)
    if args.quick:
        args.ot_sizes, args.steps, args.n_eval, args.ref_steps, args.pe_steps = "1,256", 1000, 500, 50, 40
        args.ema, args.max_nfe = min(args.ema, 0.99), 128
    args.datasets = [s.strip() for s in args.datasets.split(",") if s.strip()]
    args.ot_sizes = [int(s) for s in args.ot_sizes.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    bad = [b for b in args.ot_sizes if b < 1 or args.batch % b]
    if bad:
        ap.error(f"--ot-sizes {bad} must be >= 1 and divide --batch {args.batch}")
    fb.set_threads(args.threads)
    t0 = time.perf_counter()
    print(f"# couplings straightness: {args.threads} thread(s), steps {args.steps}, batch {args.batch}, "
          f"n_eval {args.n_eval}{', QUICK' if args.quick else ''}")  # fmt: skip
    print(f"# Tong et al. 2023, N(0,I) -> 8 Gaussians: NPE {TONG_2023['npe']['OT-CFM']} (OT-CFM) vs "
          f"{TONG_2023['npe']['I-CFM']} (I-CFM)")  # fmt: skip
    print(HEAD)
    res = run(args)
    res["total_seconds"] = time.perf_counter() - t0
    print(f"# total {res['total_seconds']:.0f} s")
    if args.json:
        fb.write_json(args.json, res)


if __name__ == "__main__":
    main()
