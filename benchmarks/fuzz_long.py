"""Long hard-point fuzzing: >= 10^5 hypothesis draws per manifold and suite; writes a JSON summary.

Not part of CI (CI runs the same checks with the small "ci" profile:
``tests/manifolds/test_hard_points.py`` and ``tests/paths/test_fuzz_paths.py``).  Two suites,
each over every manifold of ``tests/manifolds/cases.py``:

* ``ops``: exp, log, dist, geodesic, norm, inner, base_log_prob give finite values and finite
  gradients at hard pairs (``tests.manifolds.hard_points.check_ops_at_hard_point``);
* ``paths``: ``GeodesicPath.sample`` (t = 0 and 1 exactly, and the drawn t; CondOT or cosine
  scheduler) and ``rcfm_loss``
  with a fixed small ``MLPVelocity`` give finite values and finite gradients w.r.t. the
  parameters, x0 and x1 (``tests.paths.test_fuzz_paths.check_path_and_loss_at_hard_point``).

Draws come from the shared strategies (``tests.manifolds.hard_points.DRAWS``: x == y, nearby
pairs 1e-12 .. 1e-2, the far end of each manifold, random pairs; float32 and float64).  A
failing draw is recorded (up to 20 examples per task) and the hunt goes on, so ``failures`` is
the number of failing draws out of ``draws``.  The JSON is rewritten after every finished task,
so an interrupted run keeps what it measured.

Run (measured 7-60 ms per draw on one core: torus2 ops 6.7 ms, sphere2 ops 9 ms, spd3_affine ops
about 23 ms without its pauses; a task of 10^5 draws is 11-100 minutes, the full job many hours on 2 cores)::

    OMP_NUM_THREADS=1 python benchmarks/fuzz_long.py                  # 10^5 draws, both suites, all manifolds
    python benchmarks/fuzz_long.py --draws 300 --manifolds sphere2,so3 --out /tmp/fuzz_smoke.json   # smoke test
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import multiprocessing as mp
import os
import platform
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HYPOTHESIS_PROFILE", "long")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SUITES = ("ops", "paths")
MAX_EXAMPLES_KEPT = 20


def _suite(suite: str):
    """(check(m, name, **draw), strategies) of a suite."""
    if suite == "ops":
        from tests.manifolds.hard_points import DRAWS, check_ops_at_hard_point

        return (lambda m, name, **d: check_ops_at_hard_point(m, name, **d)), DRAWS
    from tests.paths.test_fuzz_paths import PATH_DRAWS, check_path_and_loss_at_hard_point

    return (lambda m, name, **d: check_path_and_loss_at_hard_point(name, m=m, **d)), PATH_DRAWS


def run_task(task: tuple[str, str, int, int]) -> dict:
    """Hunt on one (suite, manifold) for ``draws`` hypothesis draws; return its summary."""
    suite, name, draws, seed = task
    import torch
    from hypothesis import HealthCheck, Phase, given, seed as hyp_seed, settings

    from tests.manifolds.cases import CASES

    torch.set_num_threads(1)
    m = CASES[name]()
    check, draws_from = _suite(suite)
    stats = {"draws": 0, "failures": 0, "examples": []}

    @hyp_seed(seed)
    @settings(max_examples=draws, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate], print_blob=False)
    @given(**draws_from)
    def hunt(**d):
        stats["draws"] += 1
        try:
            check(m, name, **d)
        except Exception as exc:  # record and keep hunting
            stats["failures"] += 1
            if len(stats["examples"]) < MAX_EXAMPLES_KEPT:
                stats["examples"].append({**{k: str(v) for k, v in d.items()},
                                          "error": f"{type(exc).__name__}: {str(exc)[:500]}"})

    t0 = time.perf_counter()
    crash = None
    try:
        hunt()
    except Exception:  # hypothesis itself gave up (should not happen: failures are caught above)
        crash = traceback.format_exc(limit=5)
    seconds = time.perf_counter() - t0
    return {"suite": suite, "manifold": name, "requested": draws, **stats, "seconds": round(seconds, 2),
            "draws_per_s": round(stats["draws"] / seconds, 1) if seconds > 0 else None, "crash": crash}


def _summary(results: list[dict], args, started: str, done: bool) -> dict:
    import hypothesis
    import torch

    per_manifold: dict = {}
    for r in results:
        e = per_manifold.setdefault(r["manifold"], {})
        e[r["suite"]] = {k: r[k] for k in ("draws", "failures", "seconds", "draws_per_s")}
    return {
        "what": "hypothesis hunts for NaN/inf in values and gradients at hard points (benchmarks/fuzz_long.py)",
        "started": started,
        "finished": _dt.datetime.now().isoformat(timespec="seconds") if done else None,
        "complete": done,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "jobs": args.jobs,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "hypothesis": hypothesis.__version__,
        "draws_requested_per_task": args.draws,
        "seed": args.seed,
        "total_draws": sum(r["draws"] for r in results),
        "total_failures": sum(r["failures"] for r in results),
        "all_passed": done and all(r["failures"] == 0 and r["crash"] is None and r["draws"] >= r["requested"]
                                   for r in results),
        "per_manifold": per_manifold,
        "tasks": results,
    }


def main(argv=None) -> int:
    from hypothesis import settings

    import tests.manifolds.hard_points  # noqa: F401  (registers the "ci" and "long" profiles)
    from tests.manifolds.cases import CASES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=settings.get_profile("long").max_examples,
                    help="draws per (suite, manifold) (default: the 'long' profile's max_examples, 100000)")
    ap.add_argument("--suites", default=",".join(SUITES), help=f"comma-separated, from {SUITES}")
    ap.add_argument("--manifolds", default="all", help=f"comma-separated names from tests/manifolds/cases.py: {sorted(CASES)}")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    ap.add_argument("--seed", type=int, default=0, help="hypothesis seed (tasks use seed + index)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fuzz_long.json"), help="JSON summary path")
    args = ap.parse_args(argv)
    suites = [s for s in args.suites.split(",") if s]
    names = sorted(CASES) if args.manifolds == "all" else [n for n in args.manifolds.split(",") if n]
    unknown = [s for s in suites if s not in SUITES] + [n for n in names if n not in CASES]
    if unknown or args.draws < 1 or args.jobs < 1:
        ap.error(f"unknown suites/manifolds {unknown}" if unknown else "--draws and --jobs must be >= 1")
    tasks = [(s, n, args.draws, args.seed + i) for i, (s, n) in enumerate((s, n) for s in suites for n in names)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now().isoformat(timespec="seconds")
    print(f"# fuzz_long: {len(tasks)} tasks x {args.draws} draws, {args.jobs} jobs -> {out}", flush=True)
    results: list[dict] = []

    def write(done: bool):
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(_summary(results, args, started, done), indent=2))
        tmp.replace(out)

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.jobs) as pool:
        for r in pool.imap_unordered(run_task, tasks):
            results.append(r)
            status = "ok" if r["failures"] == 0 and r["crash"] is None else f"{r['failures']} FAILED"
            print(f"{r['suite']:>5} {r['manifold']:<28} {r['draws']:>7} draws {r['seconds']:>8.1f} s  {status}", flush=True)
            write(done=False)
    results.sort(key=lambda r: (r["suite"], r["manifold"]))
    write(done=True)
    summary = _summary(results, args, started, True)
    print(f"total {summary['total_draws']} draws, {summary['total_failures']} failures; all passed: "
          f"{summary['all_passed']}; wrote {out}")
    return 0 if summary["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
