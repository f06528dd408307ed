"""The Riemannian flow-matching NLL table: earth datasets on S^2 and RNA on T^7.

Each (dataset, seed) is one `geoflow train` run (at most 15 minutes on a 2-core CPU); results
accumulate in benchmarks/results/rfm_table.json (dataset -> mean, std, per-seed values,
minutes per run and the command that reproduces a run), so the table can be filled over
several sessions: runs already recorded with the same settings are skipped; changing SETTINGS starts the row afresh.

Usage:
    python benchmarks/rfm_table.py --datasets volcano earthquake --seeds 0 1 2 [--jobs 2 --threads 1]
    python benchmarks/rfm_table.py --print          # the table beside the published numbers
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _table_runs as _runs  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "rfm_table.json"

#: Published test NLL (mean, std): RSGM = De Bortoli et al. 2022, Table 4; RFM = Chen & Lipman 2023.
PUBLISHED = {
    "volcano": {"RSGM": (-4.92, 0.25), "RFM": (-7.93, 1.67)},
    "earthquake": {"RSGM": (-0.19, 0.07), "RFM": (-0.28, 0.08)},
    "flood": {"RSGM": (0.45, 0.17)},
    "fire": {"RSGM": (-1.33, 0.06), "RFM": (-1.86, 0.11)},
    "rna": {"RFM": (-5.20, 0.07)},
}

#: Training settings per dataset (each run fits in 15 minutes on the 2-core CPU).
SETTINGS = {
    ds: ["--steps", "8000", "--batch-size", "256", "--hidden", "512", "--depth", "5", "--lr", "1e-3",
         "--time-max-freq", "10"]
    for ds in ("volcano", "earthquake", "flood", "fire", "rna")
}
COMMON = ["--eval-every", "1000", "--nll-steps", "30", "--quiet", "--no-plot"]


def run(datasets, seeds, out_root, device_note, jobs=1, threads=None):
    """Run the missing (dataset, seed) pairs, ``jobs`` at a time, each with ``threads`` torch threads."""
    table = _runs.load(RESULTS)
    todo = []
    for ds in datasets:
        def make_run(seed, ds=ds):
            out = Path(out_root) / f"{ds}-seed{seed}"
            return out, ["geoflow", "train", ds, "--seed", str(seed), "--out", str(out), *SETTINGS[ds], *COMMON]

        todo += _runs.pending(table, ds, shlex.join([*SETTINGS[ds], *COMMON]), seeds, make_run)
    _runs.run_pool(todo, table, RESULTS, device_note=device_note, jobs=jobs, threads=threads)


def show():
    table = _runs.load(RESULTS)
    print(f"{'dataset':12s} {'geoflow (mean ± std, n)':28s} {'RSGM':>14s} {'RFM':>14s}  goal")
    for ds, pub in PUBLISHED.items():
        e = table.get(ds)
        ours = "not run"
        goal = ""
        if e:
            sd = f" ± {e['std']:.2f}" if e.get("std") is not None else ""
            ours = f"{e['mean']:.2f}{sd} (n={len(e['values'])})"
            best = min(v[0] for v in pub.values())
            goal = "better" if e["mean"] < best else "worse"
        cols = [f"{pub[k][0]:.2f} ± {pub[k][1]:.2f}" if k in pub else "-" for k in ("RSGM", "RFM")]
        print(f"{ds:12s} {ours:28s} {cols[0]:>14s} {cols[1]:>14s}  {goal}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="*", default=list(PUBLISHED))
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--out-root", default="runs/rfm_table")
    ap.add_argument("--device-note", default="cpu (2 cores)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (OMP_NUM_THREADS)")
    ap.add_argument("--print", action="store_true", help="only print the table")
    args = ap.parse_args(argv)
    if not args.print:
        run(args.datasets, args.seeds, args.out_root, args.device_note, args.jobs, args.threads)
    show()


if __name__ == "__main__":
    main()
