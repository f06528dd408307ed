"""The entropy of a Boltzmann target, estimated with a trained flow: how far is a test NLL from the best possible?

For a dataset with an energy (dw4, lj13, lj55) the target is p(x) = exp(-E(x)) / Z on the
centre-of-mass-free subspace.  Its entropy H(p) = E_p[E] + log Z is the lowest test NLL any
model can reach in the same units, and it fixes the convention: a published NLL below it was
computed in other units (another dimension count, scaling or energy convention).

log Z is estimated by importance sampling with the flow q of a checkpoint:
Z = E_q[exp(-E(x)) / q(x)], log Z ~ logsumexp(log w) - log n with log w = -E(x) - log q(x)
(q's samples and exact log-likelihoods from the same fixed-step solver); E_p[E] is the mean
energy of the test split.  The estimate is biased low by at most the KL(q || p) gap it cannot
see (Jensen), and its standard error comes from the delta method on the weights; the ESS says
how much to trust it.  The script also recomputes the model's test NLL with the same solver, so
that NLL - H = KL(p || q) >= 0 is a like-for-like difference.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/boltzmann_entropy.py runs/equivariant_flows/dw4-ot/best.pt \\
        --n 20000 --json benchmarks/results/boltzmann_entropy.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch


def log_partition(log_w: torch.Tensor) -> tuple[float, float, float]:
    """(log Z estimate, its standard error, Kish ESS fraction) from log importance weights (finite entries)."""
    log_w = log_w[torch.isfinite(log_w)].double()
    n = log_w.numel()
    if n < 2:
        raise ValueError("`log_w` must hold at least two finite weights")
    log_z = torch.logsumexp(log_w, 0) - math.log(n)
    w = torch.exp(log_w - log_z)  # mean 1
    se = float(w.std() / math.sqrt(n))  # standard error of the mean of w, relative: delta method on log
    ess = float(w.sum() ** 2 / (n * (w * w).sum()))
    return float(log_z), se, ess


def measure(checkpoint: str, n: int, steps: int, n_test: int, seed: int) -> dict:
    from geoflow.cli import _load_model
    from geoflow.solvers import log_likelihood, sample

    model, config, data = _load_model(checkpoint)
    if data.energy is None:
        raise ValueError(f"{checkpoint}: dataset {config.dataset!r} has no energy (not a Boltzmann target)")
    m = data.manifold
    dtype = torch.float64
    model = model.to(dtype)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    x0 = m.random_base(n, generator=g, dtype=dtype)
    with torch.no_grad():
        xs = torch.cat([sample(model, c, m, method="rk4", steps=steps) for c in x0.split(2048)])
    log_q = torch.cat([log_likelihood(model, c, m, method="rk4", steps=steps).detach() for c in xs.split(2048)])
    energy = data.energy(xs)
    log_w = torch.where(torch.isfinite(energy) & torch.isfinite(log_q), -energy - log_q,
                        torch.full_like(log_q, -math.inf))
    log_z, se, ess = log_partition(log_w)
    test = data.test.to(dtype)
    e_test = data.energy(test)
    sub = test[torch.randperm(test.shape[0], generator=g)[:n_test]]
    nll = -torch.cat([log_likelihood(model, c, m, method="rk4", steps=steps).detach() for c in sub.split(2048)])
    entropy = float(e_test.mean()) + log_z
    return {
        "checkpoint": str(checkpoint), "dataset": config.dataset, "dim": int(m.dim), "n": n, "rk4_steps": steps,
        "ess": ess, "log_z": log_z, "log_z_se": se, "test_energy_mean": float(e_test.mean()),
        "entropy": entropy, "test_nll": float(nll.mean()), "test_nll_se": float(nll.std() / math.sqrt(nll.numel())),
        "n_test": int(nll.numel()), "kl_gap": float(nll.mean()) - entropy, "seconds": time.perf_counter() - t0,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--n", type=int, default=20000, help="importance samples (default 20000)")
    ap.add_argument("--steps", type=int, default=50, help="rk4 steps of sampling and likelihoods (default 50)")
    ap.add_argument("--n-test", type=int, default=2000, help="test points for the NLL (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="merge the results into this JSON, keyed by checkpoint")
    a = ap.parse_args(argv)
    out = {}
    for ck in a.checkpoints:
        r = measure(ck, a.n, a.steps, a.n_test, a.seed)
        out[ck] = r
        print(f"{ck}: {r['dataset']} (dim {r['dim']}): log Z {r['log_z']:.3f} +- {r['log_z_se']:.3f} (ESS {100 * r['ess']:.1f} %), "
              f"E_test {r['test_energy_mean']:.3f}, entropy H = {r['entropy']:.3f} nats; model test NLL "
              f"{r['test_nll']:.3f} +- {r['test_nll_se']:.3f}: KL(p || q) ~ {r['kl_gap']:.3f}  ({r['seconds']:.0f} s)", flush=True)
    if a.json:
        path = Path(a.json)
        old = json.loads(path.read_text()) if path.exists() else {}
        old.update(out)
        path.write_text(json.dumps(old, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
