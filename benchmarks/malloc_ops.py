"""Elementwise ops on one large CPU tensor: fresh output vs a preallocated one, under glibc's allocator settings.

The cost that ``geoflow.train.keep_freed_memory`` removes, isolated: for a tensor above glibc's mmap threshold
(at most 32 MiB by default), ``torch.nn.functional.silu(x)`` and ``x + x`` allocate a fresh ``mmap`` for the
result and fault its pages in; writing into a preallocated ``out=`` tensor does not.  ``--malloc keep`` applies
``keep_freed_memory()`` first, ``--malloc default`` leaves glibc as it is (run each in its own process: the
setting is process-wide and cannot be undone).  Default shape: (190 080, 64) float32, 46 MiB, the per-edge
activation of an EGNN on LJ55 at batch 64.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/malloc_ops.py --malloc default
    OMP_NUM_THREADS=1 python benchmarks/malloc_ops.py --malloc keep
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from geoflow.train import keep_freed_memory

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _table_runs as _runs  # noqa: E402


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _runs.add_malloc_option(p)
    p.add_argument("--rows", type=int, default=190_080)
    p.add_argument("--cols", type=int, default=64)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    applied = keep_freed_memory() if args.malloc == "keep" else False
    torch.set_num_threads(args.threads)
    x = torch.randn(args.rows, args.cols, generator=torch.Generator().manual_seed(0))
    out = torch.empty_like(x)
    silu = torch.nn.functional.silu
    res = {
        "silu_fresh_ms": _median_ms(lambda: silu(x), args.repeats),
        "silu_out_ms": _median_ms(lambda: torch.ops.aten.silu.out(x, out=out), args.repeats),
        "add_fresh_ms": _median_ms(lambda: x + x, args.repeats),
        "add_out_ms": _median_ms(lambda: torch.add(x, x, out=out), args.repeats),
    }
    mib = x.numel() * x.element_size() / 2**20
    print(f"malloc {args.malloc} (applied: {applied}); ({args.rows}, {args.cols}) float32 = {mib:.1f} MiB, "
          f"{args.threads} thread(s), median of {args.repeats}")
    print(f"silu: fresh {res['silu_fresh_ms']:.1f} ms, out= {res['silu_out_ms']:.1f} ms   "
          f"x + x: fresh {res['add_fresh_ms']:.1f} ms, out= {res['add_out_ms']:.1f} ms")
    info = {"malloc": args.malloc, "applied": applied, "shape": [args.rows, args.cols], "threads": args.threads,
            "repeats": args.repeats, **res}
    if args.json:
        _runs.save(info, args.json)
    return info


if __name__ == "__main__":
    main()
