"""Riemannian flow matching on S^2: geoflow against flow_matching 1.0.10 in one run.

Measures, with the same MLP (512 wide, 6 hidden layers) and batch (512), float32, on the CPU:

1. path sampling alone: ``GeodesicPath.sample`` (closed form, ``validate=False`` as the trainer
   builds it: data are checked once at load time) vs flow_matching's
   ``GeodesicProbPath.sample`` (vmap of jvp); goal: ours at least 5x faster;
2. a whole training step (path + loss + forward + backward + AdamW) against the bare network's
   forward and backward on the same batch; goal: path and loss add at most 10%;
3. sampling 512 points with the midpoint and rk4 steppers, 50 steps: ours
   (``geoflow.solvers.sample``, exp-map steps) vs flow_matching's ``RiemannianODESolver``
   (projected steps), with the error of each against a 1000-step reference of the same ODE.

Usage:  python benchmarks/compare_rfm.py [--json benchmarks/results/rfm_speed.json] [--rounds 30]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import manifolds as M
from geoflow.losses import rcfm_loss
from geoflow.nn import MLPVelocity
from geoflow.paths import CondOTScheduler, GeodesicPath
from geoflow.solvers import sample


def _median_ms(fn, rounds, warmup=3):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def _interleaved(fns: dict, rounds: int, warmup: int = 3) -> dict:
    for f in fns.values():
        for _ in range(warmup):
            f()
    ts = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in ts.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(torch.get_num_threads())
    from flow_matching.path import GeodesicProbPath
    from flow_matching.path.scheduler import CondOTScheduler as FMCondOT
    from flow_matching.solver import RiemannianODESolver
    from flow_matching.utils import ModelWrapper
    from flow_matching.utils.manifolds import Sphere as FMSphere

    import flow_matching

    B = args.batch
    S2, fm_s2 = M.Sphere(2), FMSphere()
    g = torch.Generator().manual_seed(0)
    x0, x1 = S2.random_base(B, generator=g), S2.random_base(B, generator=g)
    t = torch.rand(B, generator=g)
    ours_path, fm_path = GeodesicPath(S2, CondOTScheduler(), validate=False), GeodesicProbPath(FMCondOT(), fm_s2)
    a, b = ours_path.sample(x0, x1, t), fm_path.sample(x0, x1, t)
    err_x = float((a.x_t - b.x_t).abs().max())
    err_v = float((a.dx_t - b.dx_t).abs().max())
    res = {"date": _dt.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "flow_matching": getattr(flow_matching, "__version__", "1.0.10"), "batch": B,
           "path_agreement": {"max_abs_x_t": err_x, "max_abs_dx_t": err_v}}
    print(f"# RFM speed on S^2, batch {B}, float32, {res['threads']} threads, torch {torch.__version__}, "
          f"flow_matching {res['flow_matching']}, {res['date']}")
    print(f"path agreement with flow_matching: max |x_t| diff {err_x:.2e}, max |dx_t| diff {err_v:.2e}")

    # 1. path sampling
    with torch.no_grad():
        p = _interleaved({"ours": lambda: ours_path.sample(x0, x1, t),
                          "flow_matching": lambda: fm_path.sample(x0, x1, t)}, args.rounds)
    res["path_ms"] = p
    res["path_speedup"] = p["flow_matching"] / p["ours"]
    print(f"1. path sampling: ours {p['ours']:.3f} ms, flow_matching {p['flow_matching']:.3f} ms, "
          f"speed-up {res['path_speedup']:.1f}x (goal >= 5x: {'met' if res['path_speedup'] >= 5 else 'MISSED'})")

    # 2. training step
    net = MLPVelocity(S2, hidden=512, depth=6)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    target = torch.randn(B, 3)
    xt_fixed = a.x_t.detach()

    def bare():
        out = net(xt_fixed, t)
        loss = (out - target).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def ours_step():
        s = ours_path.sample(S2.random_base(B), x1, torch.rand(B))
        loss = rcfm_loss(S2, net, s)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def fm_step():
        s = fm_path.sample(fm_s2.projx(torch.randn(B, 3)), x1, torch.rand(B))
        loss = (net(s.x_t, s.t.reshape(-1)) - s.dx_t).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    st = _interleaved({"bare": bare, "ours": ours_step, "flow_matching": fm_step}, args.rounds)
    res["train_step_ms"] = st
    res["train_overhead"] = st["ours"] / st["bare"] - 1
    print(f"2. training step: bare network {st['bare']:.1f} ms, ours {st['ours']:.1f} ms "
          f"(+{100 * res['train_overhead']:.1f}%, goal <= 10%: {'met' if res['train_overhead'] <= 0.10 else 'MISSED'}), "
          f"flow_matching {st['flow_matching']:.1f} ms")

    # 3. sampling
    class Wrap(ModelWrapper):
        def forward(self, x, t, **extras):
            return self.model(x, t.expand(x.shape[0]) if t.dim() == 0 else t)

    fm_solver = RiemannianODESolver(fm_s2, Wrap(net))
    z = S2.random_base(B, generator=g)
    res["sampling"] = {}
    with torch.no_grad():
        ref = sample(net, z, S2, method="rk4", steps=1000)
        for method in ["midpoint", "rk4"]:
            ms = _interleaved({
                "ours": lambda: sample(net, z, S2, method=method, steps=50),
                "flow_matching": lambda: fm_solver.sample(z, step_size=1 / 50, method=method),
            }, max(5, args.rounds // 5), warmup=1)
            e_ours = float(S2.dist(sample(net, z, S2, method=method, steps=50), ref).max())
            e_fm = float(S2.dist(fm_solver.sample(z, step_size=1 / 50, method=method), ref).max())
            res["sampling"][method] = {"ms": ms, "max_err_vs_1000_step_rk4": {"ours": e_ours, "flow_matching": e_fm}}
            print(f"3. sampling ({method}, 50 steps): ours {ms['ours']:.0f} ms (max error {e_ours:.1e}), "
                  f"flow_matching {ms['flow_matching']:.0f} ms (max error {e_fm:.1e})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
