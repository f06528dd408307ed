"""pytest-benchmark suite: expmap, logmap and dist of our manifolds against geoopt, flow_matching and geomstats.

Each (manifold, op) is one benchmark group ``"<manifold>-<op>"`` with one entry per
implementation (``ours`` and every installed peer that has the manifold and op).  All entries
of a group get the same seeded float32 points (1e6, or 1e5 for SPD(3) and SO3); before
timing, each peer's output is checked against ours (a test fails on a convention mismatch).
Missing peers and ops a peer lacks are skipped with the reason.

Not part of the normal test run (pytest's testpaths is ``tests/``).  Run::

    pytest benchmarks/test_bench_manifolds.py --benchmark-columns=median,iqr,min,rounds \
        --benchmark-sort=name [--benchmark-json=benchmarks/results/manifolds_pytest.json]

``BENCH_N_SCALE=0.01`` shrinks every N (smoke run).
"""

from __future__ import annotations

import itertools

import pytest

import _manifold_cases as mc

mc.setup_torch()

CASES = list(itertools.product(mc.MANIFOLDS, mc.OPS, mc.IMPLS))


@pytest.mark.parametrize(("manifold", "op", "impl"), CASES, ids=["-".join(c) for c in CASES])
def test_manifold_op(benchmark, manifold, op, impl):
    mc.setup_torch()
    try:
        case = mc.make_case(manifold, op, impl)
    except mc.Skip as exc:
        pytest.skip(str(exc))
    stats = mc.check_case(case)  # AssertionError on a convention mismatch
    benchmark.group = f"{manifold}-{op}"
    benchmark.extra_info.update({"manifold": manifold, "op": op, "impl": impl, "n": mc.n_points(manifold), **stats})
    rounds = mc.rounds_for(stats["seconds_first_call"], budget=3.0, lo=5, hi=30)
    benchmark.pedantic(mc._run, args=(case.fn,), rounds=rounds, warmup_rounds=1, iterations=1)
