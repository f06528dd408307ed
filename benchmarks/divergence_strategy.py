"""Exact divergence: a loop of D backward calls against one ``is_grads_batched`` call.

``geoflow.solvers`` takes the exact trace tr(P J) from D vector-Jacobian products of one forward
pass.  It can run them as a Python loop of ``torch.autograd.grad`` calls or as one call with
``is_grads_batched=True`` (a vmap over the backward).  This script times both on the fields
people train (MLP on R^D; EGNN and TFN on LJ13, 13 particles in 3-D, D = 39) and one exact
log-likelihood solve of an EGNN on LJ13, prints the ratio loop / batched (below 1: the loop
is faster) and checks the two agree.  The library loops on CPU and batches above D = 16 on
other devices; the numbers behind that choice come from here.

Usage (about 4 min on one CPU thread):
    OMP_NUM_THREADS=1 python benchmarks/divergence_strategy.py
    python benchmarks/divergence_strategy.py --device cuda      # on a GPU
"""

from __future__ import annotations

import argparse
import time

import torch

import geoflow.solvers._impl_divergence as impl
from geoflow.nn import EGNNVelocity, MLPVelocity, TFNVelocity
from geoflow.solvers import log_likelihood
from manifolds import CoMFree, Euclidean


def _timed(fn, repeats: int, device: torch.device):
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _compare(name: str, fn, repeats: int, device: torch.device) -> None:
    original = impl._loop_vjps
    res = {}
    try:
        for loop in (True, False):
            impl._loop_vjps = lambda D, dev, loop=loop: loop
            res[loop] = _timed(fn, repeats, device)
    finally:
        impl._loop_vjps = original
    (t_loop, a), (t_batch, b) = res[True], res[False]
    diff = float((a - b).abs().max())
    print(f"| {name} | {t_loop * 1e3:.1f} ms | {t_batch * 1e3:.1f} ms | {t_loop / t_batch:.2f} | {diff:.1e} |", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per case (the best is kept)")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}")
    print("| case | loop | batched | loop / batched | max difference |")
    print("|---|---|---|---|---|")
    for dim, batch in ((20, 256), (39, 256), (64, 256), (64, 1024), (128, 256)):
        mlp = MLPVelocity(Euclidean(dim), hidden=256, depth=4).to(dev)
        x = torch.randn(batch, dim, device=dev)
        t = torch.full((batch,), 0.3, device=dev)
        _compare(f"divergence, MLP 256 x 4, D = {dim}, batch {batch}",
                 lambda: impl.divergence(lambda y: mlp(y, t), x), args.repeats, dev)
    lj13 = CoMFree(13, 3)
    egnn, tfn = EGNNVelocity().to(dev), TFNVelocity().to(dev)
    for batch in (16, 64):
        x = lj13.random_base(batch, generator=torch.Generator().manual_seed(batch)).to(dev)
        t = torch.full((batch,), 0.3, device=dev)
        _compare(f"divergence, EGNN 64 x 4, LJ13, batch {batch}",
                 lambda: impl.divergence(lambda y: egnn(y, t), x, lj13), args.repeats, dev)
    x = lj13.random_base(16, generator=torch.Generator().manual_seed(1)).to(dev)
    t = torch.full((16,), 0.3, device=dev)
    _compare("divergence, TFN (defaults), LJ13, batch 16",
             lambda: impl.divergence(lambda y: tfn(y, t), x, lj13), 1, dev)
    x = lj13.random_base(64, generator=torch.Generator().manual_seed(2)).to(dev)
    _compare("log_likelihood, EGNN, LJ13, 64 points, rk4 2 steps (8 evaluations)",
             lambda: log_likelihood(egnn, x, lj13, method="rk4", steps=2), 1, dev)


if __name__ == "__main__":
    main()
