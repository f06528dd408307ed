"""benchmarks/boltzmann_entropy.py: the importance-sampling estimate of log Z and of the target's entropy."""

import math

import torch

from geoflow.train import TrainConfig, Trainer

from ._bench import load_benchmark

be = load_benchmark("boltzmann_entropy")


def test_log_partition_against_closed_forms():
    g = torch.Generator().manual_seed(0)
    # q = p: constant weights give log Z exactly and full ESS
    log_z, se, ess = be.log_partition(torch.full((100,), 2.5, dtype=torch.float64))
    assert abs(log_z - 2.5) < 1e-12 and se < 1e-12 and abs(ess - 1) < 1e-12
    # target exp(-x^2 / 2) in 1-D (Z = sqrt(2 pi)) with proposal N(0, 1.5^2)
    x = 1.5 * torch.randn(200_000, generator=g, dtype=torch.float64)
    log_q = -0.5 * (x / 1.5) ** 2 - math.log(1.5 * math.sqrt(2 * math.pi))
    log_z, se, ess = be.log_partition(-0.5 * x**2 - log_q)
    assert abs(log_z - 0.5 * math.log(2 * math.pi)) < 4 * se + 1e-3
    assert 0.5 < ess < 1  # Kish ESS of N(0, 1) from N(0, 1.5^2): 0.8
    # -inf weights (samples with infinite energy) are left out; too few finite weights are refused
    lz2, _, _ = be.log_partition(torch.tensor([0.0, 0.0, -math.inf], dtype=torch.float64))
    assert lz2 == 0.0
    try:
        be.log_partition(torch.tensor([1.0, -math.inf]))
    except ValueError as exc:
        assert "two finite weights" in str(exc)
    else:
        raise AssertionError("one finite weight must be refused")


def test_measure_on_a_small_dw4_checkpoint(tmp_path):
    cfg = TrainConfig.for_dataset("dw4", steps=2, batch_size=16, n_samples=200, hidden=8, depth=1, time_dim=8,
                                  eval_every=2, val_points=8, test_points=8, ess_samples=8, nll_steps=2, warmup=1,
                                  out=str(tmp_path / "run"), device="cpu")
    Trainer(cfg, progress=False, log=lambda *_: None).fit()
    r = be.measure(str(tmp_path / "run" / "best.pt"), n=64, steps=2, n_test=16, seed=0)
    assert r["dataset"] == "dw4" and r["dim"] == 6 and r["n_test"] == 16
    for k in ("log_z", "entropy", "test_nll", "kl_gap", "ess"):
        assert math.isfinite(r[k]), k
    assert abs(r["entropy"] - (r["test_energy_mean"] + r["log_z"])) < 1e-9
    assert abs(r["kl_gap"] - (r["test_nll"] - r["entropy"])) < 1e-9
