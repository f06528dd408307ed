"""Mesh premetrics: precomputation time and the cost of simulation-based training (issue 4).

1. Precomputation per mesh (bunny, Spot) and premetric: cotangent Laplacian, the n_eigs + 1
   smallest generalised eigenpairs (biharmonic and diffusion share them), and the vertex
   geodesic matrix of the ``"geodesic"`` reference (edge-graph Dijkstra; heat method when
   potpourri3d is installed).  Also the eigenfunction-k target of ``geoflow.data.meshes``.
2. PremetricPath: error of x_t with ``steps`` projected Euler steps against a 512-step solve
   (median and 90% quantile of |x_t - x_t^ref| relative to the mesh size, and of the premetric
   identity |d(x_t, x1) - (1 - t) d(x0, x1)| / d(x0, x1)), and training iterations per second of
   one RCFM step (path sample + MLPVelocity forward/backward + Adam) with each ``steps`` against
   the 200-step simulation baseline (Chen & Lipman's default ``nsteps: 200``, projected Euler).
   With ``--times r ...`` also the grid form (``PremetricPath.sample_times``, the trainer's
   ``--premetric-times r``): the batch is batch / r simulated pairs with r times each; its error
   column is the grid form's x_t (one time per pair) against the same reference.  With
   ``--chunks c ...`` also c steps' pairs simulated in one call (the trainer's ``--premetric-chunk``).

Seeded; prints the machine.  Usage (the real measurement):
    OMP_NUM_THREADS=1 python benchmarks/mesh_premetric.py --batch 256 --iters 20 \
        --json benchmarks/results/mesh_premetric.json
A quick check: ``python benchmarks/mesh_premetric.py --quick``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from geoflow.data.meshes import eigenfunction_density, load_mesh
from geoflow.losses import rcfm_loss
from geoflow.nn import MLPVelocity
from geoflow.paths.premetric import PremetricPath


def _machine() -> str:
    return f"{platform.platform()} | {platform.processor() or platform.machine()} | torch {torch.__version__} | threads {torch.get_num_threads()}"


def precompute(names, n_eigs, upsample, heat):
    rows = []
    for name in names:
        for prem in ("biharmonic", "diffusion"):
            t0 = time.perf_counter()
            m = load_mesh(name, n_eigs=n_eigs, premetric=prem)
            rows.append(dict(mesh=name, what=f"Mesh({prem}, n_eigs={n_eigs})", seconds=time.perf_counter() - t0, **m.timings))
        for method in ("dijkstra",) + (("heat",) if heat else ()):
            t0 = time.perf_counter()
            m = load_mesh(name, n_eigs=2, premetric="geodesic", geodesic_method=method)
            rows.append(dict(mesh=name, what=f"geodesic matrix ({method})", seconds=time.perf_counter() - t0,
                             geodesic=m.timings["geodesic"]))
        t0 = time.perf_counter()
        eigenfunction_density(name, 10, upsample=upsample)
        rows.append(dict(mesh=name, what=f"eigenfunction-10 target (upsample={upsample})", seconds=time.perf_counter() - t0))
    return rows


def path_costs(name, n_eigs, batch, iters, steps_list, baseline_steps, seed, times_list=(1,), chunks=(1,)):
    m = load_mesh(name, n_eigs=n_eigs)
    g = torch.Generator().manual_seed(seed)
    x0, x1 = m.random_base(batch, generator=g), m.random_base(batch, generator=g)
    t = torch.rand(batch, generator=g)
    ref = PremetricPath(m, steps=512, validate=False).solve(x0.double(), x1.double(), t.double())[0]
    d0 = m.dist(x0.double(), x1.double())
    out = []
    runs = [(steps, r, c) for steps in steps_list for r in times_list for c in (chunks if r > 1 else (1,))]
    for steps, r, chunk in runs + [(baseline_steps, 1, 1)]:
        path = PremetricPath(m, steps=steps, validate=False)
        if r == 1:
            x = path.solve(x0.double(), x1.double(), t.double())[0]
        else:
            x = path.sample_times(x0.double(), x1.double(), t.double()[:, None]).x_t
        err = (x - ref).norm(dim=-1) / m.scale
        ident = (m.dist(x, x1.double()) - (1 - t.double()) * d0).abs() / d0
        torch.manual_seed(seed)
        model = MLPVelocity(m, hidden=256, depth=4) if _mlp_has(["hidden", "depth"]) else MLPVelocity(m)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        pairs = batch // r

        queue = []

        def draw():
            if chunk > 1:  # the trainer's --premetric-chunk: `chunk` steps' pairs simulated in one call
                if not queue:
                    a, b = m.random_base(chunk * pairs, generator=g), m.random_base(chunk * pairs, generator=g)
                    grid = path.solve_grid(a, b)
                    queue.extend((a[i * pairs:(i + 1) * pairs], b[i * pairs:(i + 1) * pairs],
                                  path.grid_rows(grid, slice(i * pairs, (i + 1) * pairs))) for i in range(chunk))
                a, b, rows = queue.pop(0)
                return path.sample_times(a, b, (torch.arange(r) + torch.rand(pairs, r, generator=g)) / r, grid=rows)
            a, b = m.random_base(pairs, generator=g), m.random_base(pairs, generator=g)
            if r == 1:
                return path.sample(a, b, torch.rand(batch, generator=g))
            return path.sample_times(a, b, (torch.arange(r) + torch.rand(pairs, r, generator=g)) / r)

        def step():
            loss = rcfm_loss(m, model, draw())
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()  # warm-up
        queue.clear()
        t0 = time.perf_counter()
        n = iters if steps <= 64 else max(2, iters // 10)
        n = -(-n // chunk) * chunk  # whole chunks
        for _ in range(n):
            step()
        dt = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        queue.clear()
        for _ in range(n):
            draw()
        ds = (time.perf_counter() - t0) / n
        out.append(dict(mesh=name, steps=steps, times=r, chunk=chunk, baseline=steps == baseline_steps,
                        err_median=float(err.median()), err_q90=float(err.quantile(0.9)),
                        identity_median=float(ident.median()), identity_q90=float(ident.quantile(0.9)),
                        sample_ms=1e3 * ds, train_it_per_s=1.0 / dt))
    return out


def _mlp_has(names):
    import inspect

    params = inspect.signature(MLPVelocity.__init__).parameters
    return all(n in params for n in names)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--meshes", nargs="+", default=["bunny", "spot"])
    ap.add_argument("--n-eigs", type=int, default=100)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--baseline-steps", type=int, default=200)
    ap.add_argument("--times", type=int, nargs="+", default=[1],
                    help="times per simulated pair (1: PremetricPath.sample; r > 1: sample_times, batch / r pairs)")
    ap.add_argument("--chunks", type=int, nargs="+", default=[1],
                    help="with --times r > 1: steps whose pairs are simulated in one solve_grid call (the trainer's "
                         "--premetric-chunk)")
    ap.add_argument("--upsample", type=int, default=3)
    ap.add_argument("--no-heat", action="store_true", help="skip the heat-method geodesic matrix (potpourri3d)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.meshes, a.n_eigs, a.batch, a.iters, a.steps, a.baseline_steps, a.upsample = ["spot"], 20, 16, 2, [4], 20, 0
        a.times, a.chunks = [1, 4], [1, 2]
    heat = not a.no_heat
    if heat:
        try:
            import potpourri3d  # noqa: F401
        except ImportError:
            heat = False
    print(_machine())
    res = {"machine": _machine(), "args": vars(a), "precompute": precompute(a.meshes, a.n_eigs, a.upsample, heat and not a.quick)}
    for r in res["precompute"]:
        print(f"{r['mesh']:6s} {r['what']:45s} {r['seconds']:8.2f} s", {k: round(v, 3) for k, v in r.items() if k in ("laplacian", "eigs", "geodesic")})
    res["path"] = []
    for name in a.meshes:
        for r in path_costs(name, a.n_eigs, a.batch, a.iters, a.steps, a.baseline_steps, a.seed, a.times,
                                a.chunks):
            res["path"].append(r)
            print(f"{name:6s} steps={r['steps']:4d} times={r['times']:2d} chunk={r.get('chunk', 1):2d}{' (baseline)' if r['baseline'] else '           '} "
                  f"err/size median {r['err_median']:.1e} q90 {r['err_q90']:.1e} | identity median {r['identity_median']:.1e} "
                  f"q90 {r['identity_q90']:.1e} | sample {r['sample_ms']:7.1f} ms | train {r['train_it_per_s']:6.2f} it/s")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
