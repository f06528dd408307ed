"""The mesh NLL table: eigenfunction densities on the Stanford bunny and Spot (Chen & Lipman 2023, Table 3).

Each (dataset, premetric, seed) is one `geoflow train` run (premetric path + RCFM loss, at most
15 minutes on a 2-core CPU); results accumulate in benchmarks/results/mesh_table.json (row
"DATASET/PREMETRIC" -> mean, std, per-seed values, minutes per run and the command that
reproduces a run), so the table can be filled over several sessions: runs already recorded with
the same settings are skipped; changing SETTINGS starts the row afresh.  The first run of a
(mesh, k) also solves the target's eigenproblem on the refined mesh (tens of seconds, then cached
in ~/.cache/geoflow).

Rows: bunny_k10 and spot_k100 with 3 seeds and both premetrics (the published cells), the other
k with 1 seed each.

Usage:
    python benchmarks/mesh_table.py                       # every row (see --help), one run at a time
    python benchmarks/mesh_table.py --threads 1           # one run at a time, one thread (two mesh runs
                                                          # at once each ran 2-2.5x slower on the 2-core machine)
    python benchmarks/mesh_table.py --datasets bunny_k10 --premetrics biharmonic --seeds 0
    python benchmarks/mesh_table.py --print               # the table beside the published numbers
    python benchmarks/mesh_table.py --markdown            # the same as a markdown table, every seed (for the README)
    python benchmarks/mesh_table.py --smoke               # tiny runs into a scratch file (checks the script)
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _table_runs as _runs  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "mesh_table.json"

#: Published test NLL (Chen & Lipman 2023, "Flow Matching on General Geometries", Table 3): (mesh_k, premetric) -> mean.
PUBLISHED = {
    ("bunny_k10", "biharmonic"): 1.06,
    ("bunny_k10", "diffusion"): 1.16,
    ("spot_k100", "biharmonic"): 1.29,
    ("spot_k100", "diffusion"): 1.08,
}
PREMETRICS = ("biharmonic", "diffusion")
#: Seeds per dataset (the published cells get 3).
SEEDS = {"bunny_k10": [0, 1, 2], "spot_k100": [0, 1, 2], "bunny_k50": [0], "bunny_k100": [0], "spot_k10": [0],
         "spot_k50": [0]}

#: Training settings shared by every row (each run fits in 15 minutes on the 2-core CPU; see the timing note in
#: the README).  --premetric-chunk 16 simulates 16 steps' paths in one call (the same batches, 2.7x cheaper steps),
#: which is what pays for 12000 steps.
SETTINGS = ["--steps", "12000", "--batch-size", "256", "--hidden", "256", "--depth", "4", "--lr", "1e-3",
            "--warmup", "200", "--time-max-freq", "10", "--premetric-steps", "32", "--normal-weight", "10",
            "--premetric-times", "8", "--premetric-chunk", "16"]
#: Per-row additions: 64 random Fourier features of scale 2 for the high-frequency targets (k = 50, 100; Spot k100
#: biharmonic 1.70 -> 1.35 with them), none for k = 10, whose smooth target they roughen (bunny k10 biharmonic
#: 1.549 without, 1.664 with; 4000-step runs).
ROW_SETTINGS = {ds: (["--fourier-features", "64", "--fourier-scale", "2"] if not ds.endswith("_k10")
                     else ["--fourier-features", "0"]) for ds in SEEDS}
#: (Earlier recipes: session 6's had 8 path steps, no Fourier features and 4000 steps: its table, 3 seeds on the
#: published cells, is results/mesh_table_recipe8.json (``--print --results benchmarks/results/mesh_table_recipe8.json``);
#: session 7's (32 path steps, Fourier features on every row, 4000 steps) is results/mesh_table_recipe32.json.)
COMMON = ["--eval-every", "1000", "--val-points", "500", "--test-points", "5000", "--nll-steps", "20", "--quiet",
          "--no-plot"]
SMOKE = ["--steps", "2", "--batch-size", "16", "--hidden", "16", "--depth", "2", "--n-samples", "200",
         "--premetric-steps", "2", "--eval-every", "2", "--val-points", "8", "--test-points", "8", "--nll-steps", "2",
         "--quiet", "--no-plot"]


def row_args(ds):
    """The `geoflow train` options of a row: SETTINGS, the row's own ROW_SETTINGS, COMMON."""
    return [*SETTINGS, *ROW_SETTINGS.get(ds, []), *COMMON]


def run(rows, seeds, out_root, device_note, jobs=1, threads=None, *, args=None, results=RESULTS):
    """Run the missing (dataset, premetric, seed) triples, ``jobs`` at a time, each with ``threads`` torch threads
    (``args``: options for every row instead of :func:`row_args`, e.g. the smoke settings)."""
    table = _runs.load(results)
    todo = []
    for ds, pm in rows:
        row = row_args(ds) if args is None else args
        settings = shlex.join(row)

        def make_run(seed, ds=ds, pm=pm, row=row):
            out = Path(out_root) / f"{ds}-{pm}-seed{seed}"
            return out, ["geoflow", "train", ds, "--premetric", pm, "--seed", str(seed), "--out", str(out), *row]

        todo += _runs.pending(table, f"{ds}/{pm}", settings, seeds if seeds is not None else SEEDS[ds], make_run)
    _runs.run_pool(todo, table, results, device_note=device_note, jobs=jobs, threads=threads)


def show(results=RESULTS):
    """The table beside Chen & Lipman's numbers, the target's entropy (the lowest reachable test NLL;
    computing it solves each target's eigenproblem once if it is not cached yet) and the NLL of the
    target's area-smooth version (``geoflow.data.meshes.area_smooth_nll``: the eigenfunction exactly
    right, without the recipe's 1 / face-area weighting)."""
    from geoflow.data.meshes import area_smooth_nll, target_entropy

    table = _runs.load(results)
    print(f"{'dataset':12s} {'premetric':11s} {'geoflow (mean ± std, n)':28s} {'Chen & Lipman 2023':>18s}  "
          f"{'target entropy':>14s}  {'area-smooth':>11s}  goal")
    for ds in SEEDS:
        name, k = ds.split("_k")
        H, Hs = target_entropy(name, int(k)), area_smooth_nll(name, int(k))
        for pm in PREMETRICS:
            e = table.get(f"{ds}/{pm}")
            ours, goal = "not run", ""
            pub = PUBLISHED.get((ds, pm))
            if e and e.get("values"):
                sd = f" ± {e['std']:.2f}" if e.get("std") is not None else ""
                ours = f"{e['mean']:.2f}{sd} (n={len(e['values'])})"
                if pub is not None:
                    goal = "better" if e["mean"] < pub else "worse"
            print(f"{ds:12s} {pm:11s} {ours:28s} {(f'{pub:.2f}' if pub is not None else '-'):>18s}  {H:14.3f}  {Hs:11.3f}  {goal}")


def markdown(results=RESULTS):
    """The table in markdown: every seed's test NLL (3 decimals), mean ± std, minutes per run and the
    best-validation step of each run, beside Chen & Lipman's number, the target's entropy, the area-smooth NLL
    and the uniform density's NLL (log of the surface area).  Rows not run yet say so."""
    import math

    from geoflow.data.meshes import area_smooth_nll, load_mesh, target_entropy

    table = _runs.load(results)
    print("| dataset | premetric | geoflow test NLL (per seed; mean ± std) | minutes | best step | "
          "Chen & Lipman 2023 | goal | target entropy | area-smooth | uniform |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for ds in SEEDS:
        name, k = ds.split("_k")
        H, Hs = target_entropy(name, int(k)), area_smooth_nll(name, int(k))
        uniform = math.log(load_mesh(name, n_eigs=12).total_area)
        label = f"{'Spot' if name == 'spot' else name} k={k}"
        for pm in PREMETRICS:
            e = table.get(f"{ds}/{pm}") or {}
            runs = [(int(s), r) for s, r in (e.get("runs") or {}).items()]
            runs.sort()
            pub = PUBLISHED.get((ds, pm))
            if runs:
                vals = " / ".join(f"{r['test_nll']:.3f}" for _, r in runs)
                if len(runs) > 1:
                    vals += f"; {e['mean']:.3f} ± {e['std']:.3f}"
                mins = " / ".join(f"{r['minutes']:.1f}" for _, r in runs)
                best = " / ".join(str(r.get("best_step", "?")) for _, r in runs)
                seeds = ", ".join(str(s) for s, _ in runs)
                vals = f"{vals} (seed{'s' if len(runs) > 1 else ''} {seeds})"
                goal = "" if pub is None else ("better" if e["mean"] < pub else "worse")
            else:
                vals, mins, best, goal = "not run", "", "", ""
            print(f"| {label} | {pm} | {vals} | {mins} | {best} | {pub if pub is not None else '-'} | {goal} | "
                  f"{H:.3f} | {Hs:.3f} | {uniform:.3f} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="*", default=list(SEEDS), choices=list(SEEDS))
    ap.add_argument("--premetrics", nargs="*", default=list(PREMETRICS), choices=list(PREMETRICS))
    ap.add_argument("--seeds", nargs="*", type=int, default=None, help="seeds (default: 3 for the published rows, else 1)")
    ap.add_argument("--out-root", default="runs/mesh_table")
    ap.add_argument("--device-note", default="cpu (2 cores)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (OMP_NUM_THREADS)")
    ap.add_argument("--print", action="store_true", help="only print the table")
    ap.add_argument("--markdown", action="store_true",
                    help="only print the table in markdown, every seed with its minutes and best step")
    ap.add_argument("--results", default=None,
                    help=f"the results JSON (default {RESULTS.relative_to(RESULTS.parents[2])}; "
                         "results/mesh_table_recipe8.json and mesh_table_recipe32.json hold the session-6 and session-7 recipes' tables)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny runs (2 steps, 200 points) written to results/mesh_table_smoke.json, to check the script")
    args = ap.parse_args(argv)
    results = RESULTS.with_name("mesh_table_smoke.json") if args.smoke else Path(args.results) if args.results else RESULTS
    if args.markdown:
        markdown(results)
        return
    if not args.print:
        rows = [(ds, pm) for ds in args.datasets for pm in args.premetrics]
        run(rows, args.seeds, args.out_root, args.device_note, args.jobs, args.threads,
            args=SMOKE if args.smoke else None, results=results)
    show(results)


if __name__ == "__main__":
    main()
