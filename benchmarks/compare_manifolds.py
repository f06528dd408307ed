"""Time expmap / logmap / dist of our manifolds against geoopt, flow_matching and geomstats.

Runs the cases of ``_manifold_cases.py`` (the same ones as ``test_bench_manifolds.py``) in one
process and prints one row per (manifold, op): the median time of ours and of each peer,
the ratio (fastest peer) / ours, and whether the goal "ours at least as fast as the fastest
peer" is met.  Before timing, each peer's output is checked against ours on the same points.

Rounds of the implementations of one (manifold, op) are interleaved (ours, peer 1, peer 2,
ours, ...) so that load drifting on a busy machine hits every column alike.

Usage::

    python benchmarks/compare_manifolds.py [--json benchmarks/results/manifolds.json]
        [--manifolds Sphere SO3] [--ops dist] [--budget 4] [--min-rounds 7] [--max-rounds 40]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _manifold_cases as mc  # noqa: E402

#: "tie" when ours is within this fraction of the fastest peer (the noise on a 2-core box).
TIE = 0.05


def _time_interleaved(cases, rounds: int, warmup: int = 1, clock=time.perf_counter) -> dict[str, list[float]]:
    times = {c.impl: [] for c in cases}
    with torch.no_grad():
        for _ in range(warmup):
            for c in cases:
                mc._run(c.fn)
        for _ in range(rounds):
            for c in cases:
                t0 = clock()
                mc._run(c.fn)
                times[c.impl].append(clock() - t0)
    return times


def _verdict(ratio):
    if ratio is None:
        return "no peer"
    if ratio >= 1.0:
        return "yes"
    if ratio >= 1.0 - TIE:
        return "tie"
    return "NO"


def run(manifolds, ops, *, budget, min_rounds, max_rounds, threads=mc.NUM_THREADS, clock="wall", log=print) -> dict:
    mc.setup_torch()
    torch.set_num_threads(threads)
    timer = time.perf_counter if clock == "wall" else time.thread_time
    started = _dt.datetime.now().isoformat(timespec="seconds")
    machine_at_start = mc.machine_info()
    results = []
    for manifold in manifolds:
        for op in ops:
            row = {"manifold": manifold, "op": op, "n": mc.n_points(manifold), "impls": {}, "skipped": {}}
            cases = []
            for impl in mc.IMPLS:
                try:
                    case = mc.make_case(manifold, op, impl)
                    stats = mc.check_case(case)
                except mc.Skip as exc:
                    row["skipped"][impl] = str(exc)
                    continue
                except Exception as exc:  # a mismatch or a crash is reported, not timed
                    row["skipped"][impl] = f"FAILED: {type(exc).__name__}: {exc}"
                    log(f"FAILED {impl} {manifold}-{op}: {type(exc).__name__}: {exc}")
                    continue
                if impl == "ours":
                    stats.pop("bad_fraction")
                    stats.pop("bad_points")
                cases.append(case)
                row["impls"][impl] = {"check": stats}
            if "ours" not in row["impls"]:
                log(f"skip {manifold}-{op}: {row['skipped'].get('ours')}")
                results.append(row)
                continue
            slowest = max(c.info["seconds_first_call"] for c in cases)
            total = sum(c.info["seconds_first_call"] for c in cases)
            rounds = int(min(max_rounds, max(min_rounds, budget / max(total, 1e-6))))
            if slowest > 2.0:
                rounds = min(rounds, 5)
            times = _time_interleaved(cases, rounds, clock=timer)
            for impl, ts in times.items():
                q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
                row["impls"][impl].update(
                    {"median_ms": 1e3 * statistics.median(ts), "iqr_ms": 1e3 * (q[2] - q[0]), "min_ms": 1e3 * min(ts), "rounds": len(ts)}
                )
            peers = {k: v["median_ms"] for k, v in row["impls"].items() if k != "ours"}
            if peers:
                best = min(peers, key=peers.get)
                row["fastest_peer"] = best
                row["ratio"] = peers[best] / row["impls"]["ours"]["median_ms"]
            else:
                row["fastest_peer"], row["ratio"] = None, None
            row["goal"] = _verdict(row["ratio"])
            results.append(row)
            log(_format_row(row))
    return {
        "date": _dt.date.today().isoformat(),
        "started": started,
        "timestamp": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": mc.machine_info(),  # load average at the end; machine_at_start has it at the start
        "machine_at_start": machine_at_start,
        "versions": mc.peer_versions(),
        "seed": mc.SEED,
        "dtype": "float32",
        "statistic": "median over interleaved rounds, ms per call",
        "clock": clock,
        "torch_threads": threads,
        "results": results,
    }


def _cell(row, impl):
    if impl in row["impls"] and "median_ms" in row["impls"][impl]:
        return f"{row['impls'][impl]['median_ms']:.2f}"
    return "-"


def _format_row(row) -> str:
    ratio = f"{row['ratio']:.2f}" if row.get("ratio") is not None else "-"
    cells = [row["manifold"], row["op"], f"{row['n']:.0e}", _cell(row, "ours")] + [_cell(row, p) for p in mc.PEERS]
    cells += [row.get("fastest_peer") or "-", ratio, row.get("goal", "-")]
    return "| " + " | ".join(cells) + " |"


def table(report) -> str:
    head = ["manifold", "op", "N", "ours (ms)"] + [f"{p} (ms)" for p in mc.PEERS] + ["fastest peer", "peer/ours", "goal met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += [_format_row(r) for r in report["results"] if "ours" in r["impls"]]
    return "\n".join(lines)


def skipped(report) -> str:
    seen = {}
    for r in report["results"]:
        for impl, why in r["skipped"].items():
            seen.setdefault(f"{impl}: {why}", []).append(f"{r['manifold']}-{r['op']}")
    return "\n".join(f"- {k} ({', '.join(v)})" for k, v in seen.items())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, default=None, help="save the results as JSON to this path")
    ap.add_argument("--manifolds", nargs="+", default=mc.MANIFOLDS, choices=mc.MANIFOLDS)
    ap.add_argument("--ops", nargs="+", default=mc.OPS, choices=mc.OPS)
    ap.add_argument("--budget", type=float, default=4.0, help="seconds of timing per (manifold, op), all columns together")
    ap.add_argument("--min-rounds", type=int, default=7)
    ap.add_argument("--max-rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=mc.NUM_THREADS, help="torch threads (default 2, the target machine)")
    ap.add_argument(
        "--clock",
        choices=["wall", "thread"],
        default="wall",
        help="wall: elapsed time (default); thread: CPU time of the calling thread, use with --threads 1 "
        "for numbers that do not depend on other load on the machine",
    )
    args = ap.parse_args(argv)
    if args.clock == "thread" and args.threads != 1:
        ap.error("--clock thread measures one thread: use it with --threads 1")

    mc.setup_torch()
    torch.set_num_threads(args.threads)
    print(f"# manifold benchmark, {_dt.datetime.now().isoformat(timespec='seconds')}")
    for line in mc.header_lines():
        print("# " + line)
    clock = "wall-clock" if args.clock == "wall" else "CPU time of the calling thread"
    print(
        f"# float32, seed {mc.SEED}; N = 1e6 points (1e5 for SPD(3), SO3); torch threads {args.threads}; "
        f"median {clock} in ms per call over interleaved rounds"
    )
    report = run(
        args.manifolds, args.ops, budget=args.budget, min_rounds=args.min_rounds, max_rounds=args.max_rounds,
        threads=args.threads, clock=args.clock,
    )
    print()
    print(table(report))
    print()
    print("skipped:")
    print(skipped(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=lambda o: None if isinstance(o, float) and math.isnan(o) else o))
        print(f"\nsaved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
