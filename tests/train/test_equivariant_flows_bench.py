"""benchmarks/equivariant_flows.py: the clipped energy W1 and the "rk4 steps needed" rule."""

import math

import torch
from scipy.stats import wasserstein_distance

from ._bench import load_benchmark

ef = load_benchmark("equivariant_flows")


def test_clipped_w1_bounds_the_tail_and_counts_non_finite_energies():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1000, generator=g, dtype=torch.float64)
    b = torch.randn(1000, generator=g, dtype=torch.float64)
    # inside the range, clipping changes nothing: scipy's W1 on the raw values
    assert math.isclose(ef._w1_clipped(a, b, -50.0, 50.0), wasserstein_distance(a.numpy(), b.numpy()), rel_tol=1e-12)
    # one overlapping pair at 1e12: the plain W1 is 1e9, the clipped one at most (hi - lo) / n above the bulk's
    a_tail = a.clone()
    a_tail[0] = 1e12
    assert ef._w1(a_tail, b) > 1e8
    bulk = ef._w1_clipped(a, b, -5.0, 5.0)
    tail = ef._w1_clipped(a_tail, b, -5.0, 5.0)
    assert bulk < tail <= bulk + 10.0 / 1000 + 1e-12
    # +inf and NaN count as the upper end (the plain W1 drops them): same as an energy of hi
    a_inf, a_nan, a_hi = a.clone(), a.clone(), a.clone()
    a_inf[0], a_nan[0], a_hi[0] = math.inf, math.nan, 5.0
    ref = ef._w1_clipped(a_hi, b, -5.0, 5.0)
    assert ef._w1_clipped(a_inf, b, -5.0, 5.0) == ref == ef._w1_clipped(a_nan, b, -5.0, 5.0)
    assert ref > bulk


def test_steps_needed_is_the_first_step_count_from_which_on_all_are_within_the_floor():
    grid = ef.STEP_GRID
    w1 = dict(zip(grid, [5.0, 0.05, 0.3, 0.01, 0.01, 0.0, 0.0]))
    assert ef._steps_needed(w1, 0.1) == 8  # 2 steps dips below, 4 steps does not: not settled before 8
    assert ef._steps_needed(w1, 1.0) == 2
    assert ef._steps_needed(w1, 10.0) == 1
    assert ef._steps_needed({k: 1.0 for k in grid}, 0.5) is None


def test_the_script_measures_the_chosen_checkpoint_and_remeasures_when_it_changes(tmp_path, capsys):
    """A tiny DW4 run end to end: the seed reaches training; best.pt by default, last.pt on request (no retraining)."""
    import json

    out, js = tmp_path / "runs", tmp_path / "res.json"
    base = ["--systems", "dw4", "--couplings", "ot-align", "--steps", "4", "--n", "16", "--cost-batches", "1",
            "--small", "--out-root", str(out), "--json", str(js), "--seed", "1"]
    first = ef.main(base)["dw4/ot-align"]
    assert first["seed"] == 1 and "--seed 1" in first["command"]
    assert json.loads((out / "dw4-ot-align" / "metrics.json").read_text())["seed"] == 1  # trained with it
    assert first["checkpoint"] == "best.pt" and first["checkpoint_step"] == first["best_step"]
    assert math.isfinite(first["path_length_median"]) and first["transport_cost"] > 0
    ef.main(base)  # same settings, same checkpoint: nothing to do
    assert "already measured" in capsys.readouterr().out
    mtime = (out / "dw4-ot-align" / "last.pt").stat().st_mtime_ns
    last = ef.main([*base, "--checkpoint", "last.pt"])["dw4/ot-align"]
    assert last["checkpoint"] == "last.pt" and last["checkpoint_step"] == 4
    assert (out / "dw4-ot-align" / "last.pt").stat().st_mtime_ns == mtime  # measured, not retrained
    assert json.loads(js.read_text())["dw4/ot-align"]["checkpoint"] == "last.pt"
