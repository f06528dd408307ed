"""Shared machinery of the NLL-table scripts (``rfm_table.py``, ``mesh_table.py``), and the atomic JSON
load / save / merge the other benchmark scripts use for their results.

A table is a JSON file of rows ``key -> {"runs": {seed: {...}}, "settings", "command", "values",
"mean", "std", "minutes_per_run", "machine"}``.  Each run is one ``geoflow train`` process; the
pool keeps ``jobs`` of them going, records each finished run at once (atomic rewrite of the JSON),
so a table can be filled over several sessions, and skips runs already recorded with the same
settings (a row whose settings changed starts afresh).
"""

from __future__ import annotations

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


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def save(table: dict, path: Path) -> None:
    """Write atomically (a per-process temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(table, indent=2, sort_keys=True))
    tmp.replace(path)


def add_malloc_option(parser) -> None:
    """``--malloc keep|default`` of the speed scripts: apply ``geoflow.train.keep_freed_memory`` (as the CLI does)
    when ``args.malloc == "keep"``."""
    parser.add_argument("--malloc", choices=("keep", "default"), default="keep",
                        help="keep (default, as the geoflow CLI): glibc keeps freed CPU memory for reuse "
                             "(geoflow.train.keep_freed_memory); default: the C library's own settings, each tensor "
                             "over 32 MiB a fresh mmap")


def merge(path: Path, key: str, value) -> None:
    """Set ``key`` in the JSON at ``path`` as it is on disk now (other processes may be adding keys), atomically."""
    table = load(path)
    table[key] = value
    save(table, path)


def summarise(entry: dict) -> None:
    vals = [r["test_nll"] for r in entry["runs"].values()]
    entry["values"] = vals
    entry["mean"] = statistics.fmean(vals)
    entry["std"] = statistics.stdev(vals) if len(vals) > 1 else None
    entry["minutes_per_run"] = statistics.fmean(r["minutes"] for r in entry["runs"].values())


def pending(table: dict, key: str, settings: str, seeds, make_run) -> list:
    """The runs of row ``key`` still to do: ``make_run(seed) -> (out, cmd)`` for each seed not recorded
    with ``settings`` (a row recorded with other settings is emptied first)."""
    entry = table.setdefault(key, {"runs": {}})
    if entry.get("settings") not in (None, settings):
        entry["runs"] = {}  # new settings: earlier seeds no longer belong to this row
    entry["settings"] = settings
    todo = []
    for seed in seeds:
        if entry["runs"].get(str(seed), {}).get("settings") == settings:
            print(f"{key} seed {seed}: already recorded with these settings, skipped")
            continue
        out, cmd = make_run(seed)
        todo.append((key, seed, Path(out), settings, cmd))
    return todo


def run_pool(todo: list, table: dict, results: Path, *, device_note: str, jobs: int = 1, threads=None) -> None:
    """Run ``todo`` (from :func:`pending`) ``jobs`` at a time with ``threads`` torch threads each, recording
    every finished run's test NLL, minutes and settings in ``table`` (saved to ``results`` at once)."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        device_note = f"{device_note}, {threads} thread(s) per run, {jobs} run(s) at a time"
    todo, running = list(todo), []
    while todo or running:
        while todo and len(running) < jobs:
            key, seed, out, settings, cmd = todo.pop(0)
            if out.exists():
                shutil.rmtree(out)  # a stale run with other settings must not be resumed
            proc = subprocess.Popen([sys.executable, "-m", "geoflow.cli", *cmd[1:]], env=env)
            running.append((proc, time.time(), key, seed, out, settings, cmd))
        time.sleep(1.0)
        for item in list(running):
            proc, t0, key, seed, out, settings, cmd = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0:
                print(f"{key} seed {seed}: FAILED (exit {proc.returncode}); rerun the script to retry", flush=True)
                continue
            metrics = json.loads((out / "metrics.json").read_text())
            minutes = (time.time() - t0) / 60
            entry = table[key]
            entry["runs"][str(seed)] = {"test_nll": metrics["test_nll"], "minutes": minutes,
                                        "train_minutes": metrics["train_seconds"] / 60,
                                        "best_step": metrics["best_step"], "device": device_note, "settings": settings}
            entry["command"] = (shlex.join(cmd).replace(f"--seed {seed}", "--seed SEED")
                                .replace(str(out), str(out).replace(f"seed{seed}", "seedSEED")))
            entry["machine"] = platform.processor() or platform.machine()
            summarise(entry)
            save(table, results)
            print(f"{key} seed {seed}: test NLL {metrics['test_nll']:.3f} ({minutes:.1f} min) -> {results}", flush=True)
