"""Rectified flow (reflow) against minibatch OT: NFE at fixed quality and path energy (issue 5, couplings).

Liu, Gong & Liu 2022 ("Flow Straight and Fast", ICLR 2023): a flow trained on independent pairs
(1-RF) is used to couple fresh base samples with its own ODE endpoints,
``ReflowCoupling(model).generate(n_pairs)``; a new flow trained on these fixed pairs (2-RF) has
straighter paths; repeating once more gives 3-RF.  Each reflow round starts from the previous
round's weights (as in Liu et al.'s and InstaFlow's recipes) and trains ``--reflow-steps`` steps on
the straight (or geodesic) interpolation between the pairs.  Beside them: OT-CFM, exact minibatch OT
on the whole training batch, trained from scratch with the 1-RF budget.

Tasks (``--tasks``):

* ``plane``: N(0, I_2) -> ``--plane-dataset`` (default ``eight_gaussians``; or ``moons``,
  ``checkerboard``), MLPVelocity hidden 256 depth 3, batch 256;
* ``sphere``: uniform -> ``--sphere-dataset`` (default ``fire``) on S^2, the same MLP on ambient
  coordinates, geodesic path, reflow along geodesics (pairs from the manifold rk4 stepper),
  squared geodesic OT cost;
* ``digits``: N(0, I) -> the 8x8 digits (unconditional), UNetVelocity (base ``--unet-base`` 16,
  two levels), batch 128, lr 2e-3 with 100 warm-up steps, EMA 0.995; quality in pixel space.

Reported for 1-RF, 2-RF, 3-RF and OT-CFM (definitions in benchmarks/_flowbench.py): NFE@5% (fewest
Euler steps within W2 <= 5 % of the transport distance of the flow's own rk4-converged samples),
NFE@data (fewest Euler steps whose W2 to held-out data is within 5 % of the converged flow's), the
normalised path energy NPE (against held-out data) and NPEself (against the flow's own endpoints),
the straightness, W2 to held-out data after 1, 2, 4 Euler steps and
for the converged flow (reflow keeps the marginals only up to the 1-RF's own error, so watch that
column too).  Pair generation: rk4 with ``--gen-steps`` steps (4 x NFE each), cost reported.

Usage:
    python benchmarks/reflow.py --json benchmarks/results/reflow.json
    python benchmarks/reflow.py --quick                     # smoke check, about 3 minutes
    python benchmarks/reflow.py --tasks plane --plane-dataset moons
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _flowbench as fb  # noqa: E402

from geoflow.couplings import ReflowCoupling  # noqa: E402
from geoflow.data import load_dataset  # noqa: E402
from geoflow.nn import MLPVelocity, UNetVelocity  # noqa: E402
from manifolds import Euclidean  # noqa: E402

TASKS = ("plane", "sphere", "digits")


def task_setup(task: str, args):
    """(space, train data, held-out data, model factory, training options, evaluation options)."""
    seed = args.seed
    if task == "plane":
        ds = load_dataset(args.plane_dataset, seed=seed, n_samples=args.n_samples)
        space = fb.Space(args.plane_dataset, Euclidean(2), (2,))
        heldout = ds.test
        make = lambda: MLPVelocity(space.manifold, hidden=args.hidden, depth=args.depth)  # noqa: E731
        opts = dict(steps=args.steps, batch=args.batch, lr=args.lr, warmup=0, ema=args.ema)
        n_eval, n_pairs = args.n_eval, args.n_pairs
    elif task == "sphere":
        ds = load_dataset(args.sphere_dataset, seed=seed)
        space = fb.Space(args.sphere_dataset, ds.manifold, tuple(ds.manifold.point_shape))
        heldout = ds.test
        make = lambda: MLPVelocity(space.manifold, hidden=args.hidden, depth=args.depth)  # noqa: E731
        opts = dict(steps=args.steps, batch=args.batch, lr=args.lr, warmup=0, ema=args.ema)
        n_eval, n_pairs = args.n_eval, args.n_pairs
    else:
        ds = load_dataset("digits", seed=seed)
        space = fb.Space("digits", None, tuple(ds.train.shape[1:]))
        heldout = torch.cat([ds.val, ds.test])  # nothing is tuned on val here
        make = lambda: UNetVelocity(base=args.unet_base, channel_mults=(1, 2))  # noqa: E731
        opts = dict(steps=args.digits_steps, batch=args.digits_batch, lr=2e-3, warmup=100, ema=args.digits_ema)
        n_eval, n_pairs = args.digits_n_eval, args.digits_n_pairs
    n_eval = min(n_eval, heldout.shape[0])
    ref_steps = args.digits_ref_steps if task == "digits" else args.ref_steps
    return space, ds.train, heldout, make, opts, n_eval, n_pairs, ref_steps


def run_task(task: str, args) -> dict:
    space, train_data, heldout, make, opts, n_eval, n_pairs, ref_steps = task_setup(task, args)
    seed = args.seed
    g_eval = torch.Generator().manual_seed(10_000 + seed)
    x0_eval = space.base(n_eval, g_eval)
    data_eval = heldout[torch.randperm(heldout.shape[0], generator=g_eval)[:n_eval]]
    reflow_steps = opts["steps"] if (task == "digits" or args.reflow_steps is None) else args.reflow_steps
    out = {"space": repr(space.manifold) if space.manifold is not None else f"R^{tuple(space.point_shape)}",
           "dataset": space.name, "n_eval": n_eval, "train_options": opts, "reflow_steps": reflow_steps,
           "n_pairs": n_pairs, "gen": f"rk4, {args.gen_steps} steps ({4 * args.gen_steps} NFE)", "rows": [],
           "pair_generation_seconds": []}  # fmt: skip

    def fit(model, draw, coupling, steps, label):
        return fb.train(model, space, draw, coupling, steps=steps, lr=opts["lr"], seed=seed, warmup=opts["warmup"],
                        ema_decay=opts["ema"], label=label, log_every=args.log_every)  # fmt: skip

    def record(name, model, stats, total_train_s):
        ev = fb.evaluate(model, space, x0_eval, data_eval, ref_steps=ref_steps, pe_steps=args.pe_steps,
                         max_nfe=args.max_nfe)
        row = {"method": name, "train": stats, "cumulative_train_seconds": total_train_s, **ev}
        out["rows"].append(row)
        print_row(task, row)

    data = fb.data_draw(space, train_data, opts["batch"])
    torch.manual_seed(seed)
    model, stats = fit(make(), data, fb.Identity(), opts["steps"], f"{task} 1-RF")
    cumulative = stats["seconds"]
    record("1-RF (independent)", model, stats, cumulative)
    g_pairs = torch.Generator().manual_seed(20_000 + seed)
    for k in (2, 3):
        t0 = time.perf_counter()
        rc = ReflowCoupling(model, space.solver_manifold, steps=args.gen_steps, method="rk4", batch_size=2048)
        x0p, x1p = rc.generate(n_pairs, shape=space.point_shape, generator=g_pairs)
        gen_s = time.perf_counter() - t0
        out["pair_generation_seconds"].append(gen_s)
        cumulative += gen_s
        student = copy.deepcopy(model).train()
        for p in student.parameters():
            p.requires_grad_(True)
        model, stats = fit(student, fb.pair_draw(x0p, x1p, opts["batch"]), fb.Identity(), reflow_steps,
                           f"{task} {k}-RF")  # fmt: skip
        cumulative += stats["seconds"]
        record(f"{k}-RF (reflow round {k - 1})", model, stats, cumulative)
    torch.manual_seed(seed)
    model, stats = fit(make(), data, fb.ChunkedOT(opts["batch"], space), opts["steps"], f"{task} OT-CFM")
    record(f"OT-CFM (exact, b={opts['batch']})", model, stats, stats["seconds"])
    return out


HEAD = (f"{'task':<7} {'method':<26} {'train s':>7} | {'NPE':>6} {'NPEself':>7} {'straight':>8} | "
        f"{'NFE@5%':>6} {'NFE@data':>8} | "
        f"W2 data @1,2,4 Euler | {'W2 conv':>7}")  # fmt: skip


def print_row(task: str, r: dict) -> None:
    c = r["curve"]
    w = " ".join(f"{c[str(n)]['w2_data']:6.3f}" if str(n) in c else "     -" for n in (1, 2, 4))
    print(f"{task:<7} {r['method']:<26} {r['cumulative_train_seconds']:7.0f} | {r['npe']:6.3f} {r['npe_self']:7.4f} "
          f"{r['straightness']:8.4f} | {fb.fmt_nfe(r['nfe_ref']['0.05'], r['max_nfe']):>6} "
          f"{fb.fmt_nfe(r['nfe_data'], r['max_nfe']):>8} | "
          f"{w} | {r['w2_ref_to_data']:7.3f}", flush=True)  # fmt: skip


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of plane, sphere, digits")
    ap.add_argument("--plane-dataset", default="eight_gaussians", choices=("eight_gaussians", "moons", "checkerboard"))
    ap.add_argument("--sphere-dataset", default="fire",
                    help="an S^2 dataset (fire, flood, earthquake, volcano, vmf_mixture)")
    ap.add_argument("--steps", type=int, default=8000, help="1-RF and OT-CFM training steps (plane, sphere)")
    ap.add_argument("--reflow-steps", type=int, default=None,
                    help="steps of each reflow round, plane and sphere (default: as 1-RF; digits: --digits-steps)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--n-samples", type=int, default=20000, help="points drawn for the 2-D set")
    ap.add_argument("--n-pairs", type=int, default=20000, help="reflow pairs per round (plane, sphere)")
    ap.add_argument("--gen-steps", type=int, default=50, help="rk4 steps used to generate reflow pairs")
    ap.add_argument("--n-eval", type=int, default=2000)
    ap.add_argument("--ref-steps", type=int, default=250, help="rk4 steps of the reference solution (plane, sphere)")
    ap.add_argument("--max-nfe", type=int, default=256, help="largest Euler step count tried for the NFE measures")
    ap.add_argument("--pe-steps", type=int, default=100)
    ap.add_argument("--digits-steps", type=int, default=3000)
    ap.add_argument("--digits-batch", type=int, default=128)
    ap.add_argument("--digits-ema", type=float, default=0.995)
    ap.add_argument("--digits-n-pairs", type=int, default=4000)
    ap.add_argument("--digits-n-eval", type=int, default=358, help="held-out digits (val + test: 358)")
    ap.add_argument("--digits-ref-steps", type=int, default=100)
    ap.add_argument("--unet-base", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--log-every", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help="smoke check: 500 steps (digits 80), 2000 pairs (digits 256), 300 eval points (digits 120), "
                         "Euler up to 32 steps")
    ap.add_argument("--json", default=None, help="write the results here (e.g. benchmarks/results/reflow.json)")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.n_pairs, args.n_eval, args.gen_steps = 500, 2000, 300, 20
        args.ref_steps, args.pe_steps = 40, 20
        args.ema = min(args.ema, 0.99)
        args.digits_steps, args.digits_n_pairs, args.digits_n_eval, args.digits_ref_steps = 80, 256, 120, 25
        args.digits_ema, args.max_nfe = 0.95, 32
    tasks = [s.strip() for s in args.tasks.split(",") if s.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        ap.error(f"unknown tasks {unknown}; valid: {', '.join(TASKS)}")
    fb.set_threads(args.threads)
    res = fb.header(args.threads, args.seed)
    res["config"] = {k: v for k, v in vars(args).items() if k != "json"}
    res["tasks"] = {}
    t0 = time.perf_counter()
    print(f"# reflow vs minibatch OT: {args.threads} thread(s){', QUICK' if args.quick else ''}; "
          f"'train s' = cumulative training + pair generation")  # fmt: skip
    print(HEAD)
    for task in tasks:
        res["tasks"][task] = run_task(task, args)
    res["total_seconds"] = time.perf_counter() - t0
    print(f"# total {res['total_seconds']:.0f} s")
    if args.json:
        fb.write_json(args.json, res)


if __name__ == "__main__":
    main()
