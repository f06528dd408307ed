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
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

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


def _load():
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def _save(table):
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=2, sort_keys=True))
    tmp.replace(RESULTS)


def _summarise(entry):
    vals = [r["test_nll"] for r in entry["runs"].values()]
    entry["values"] = vals
    entry["mean"] = statistics.fmean(vals)
    entry["std"] = statistics.stdev(vals) if len(vals) > 1 else None
    entry["minutes_per_run"] = statistics.fmean(r["minutes"] for r in entry["runs"].values())


def _record(table, ds, seed, out, settings, cmd, minutes, device_note):
    entry = table[ds]
    metrics = json.loads((out / "metrics.json").read_text())
    entry["runs"][str(seed)] = {"test_nll": metrics["test_nll"], "minutes": minutes,
                                "best_step": metrics["best_step"], "device": device_note,
                                "settings": settings}
    entry["command"] = shlex.join(cmd).replace(f"--seed {seed}", "--seed SEED").replace(str(out), f"runs/{ds}-seedSEED")
    entry["machine"] = platform.processor() or platform.machine()
    _summarise(entry)
    _save(table)
    print(f"{ds} seed {seed}: test NLL {metrics['test_nll']:.3f} ({minutes:.1f} min) -> {RESULTS}", flush=True)


def run(datasets, seeds, out_root, device_note, jobs=1, threads=None):
    """Run the missing (dataset, seed) pairs, ``jobs`` at a time, each with ``threads`` torch threads."""
    table = _load()
    todo = []
    for ds in datasets:
        settings = shlex.join([*SETTINGS[ds], *COMMON])
        entry = table.setdefault(ds, {"runs": {}})
        if entry.get("settings") not in (None, settings):
            entry["runs"] = {}  # new settings: earlier seeds no longer belong to this row
        entry["settings"] = settings
        for seed in seeds:
            if entry["runs"].get(str(seed), {}).get("settings") == settings:
                print(f"{ds} seed {seed}: already recorded with these settings, skipped")
                continue
            out = Path(out_root) / f"{ds}-seed{seed}"
            cmd = ["geoflow", "train", ds, "--seed", str(seed), "--out", str(out), *SETTINGS[ds], *COMMON]
            todo.append((ds, seed, out, settings, cmd))
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        device_note = f"{device_note}, {threads} thread(s) per run, {jobs} run(s) at a time"
    running = []
    while todo or running:
        while todo and len(running) < jobs:
            ds, seed, out, settings, cmd = todo.pop(0)
            if out.exists():
                shutil.rmtree(out)  # a stale run with other settings must not be resumed
            proc = subprocess.Popen([sys.executable, "-m", "geoflow.cli", *cmd[1:]], env=env)
            running.append((proc, time.time(), ds, seed, out, settings, cmd))
        time.sleep(1.0)
        for item in list(running):
            proc, t0, ds, seed, out, settings, cmd = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0:
                print(f"{ds} seed {seed}: FAILED (exit {proc.returncode}); rerun the script to retry", flush=True)
                continue
            _record(table, ds, seed, out, settings, cmd, (time.time() - t0) / 60, device_note)


def show():
    table = _load()
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
