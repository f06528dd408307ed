"""Multi-process training (torchrun, DDP, gloo on CPU; pinned to gloo and the CPU on GPU machines too).

* 2 processes follow 1 process with the same seed and global batch: the same loss and validation
  curves and final parameters, up to float rounding (each rank trains on its half of the global
  batch that every rank draws from the shared generator; DDP averages the two half-batch
  gradients, which is the gradient of the global mean loss).
* A 2-process run whose rank 1 is SIGKILLed mid-run, then launched again, equals an
  uninterrupted 2-process run bit for bit (every rank's RNG states are in the checkpoint).

The runs are real ``torchrun --standalone --nproc_per_node 2 -m geoflow.cli train`` processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import geoflow.train.distributed as distributed
from geoflow.train import DistInfo, Trainer, TrainConfig, init_distributed, load_checkpoint
from ._state import assert_states_equal

STEPS, EVAL_EVERY, CRASH_AT = 20, 5, 7
_ARGS = ["train", "vmf_mixture", "--n-samples", "300", "--steps", str(STEPS), "--batch-size", "32", "--hidden", "32",
         "--depth", "2", "--eval-every", str(EVAL_EVERY), "--val-points", "16", "--nll-steps", "2", "--seed", "4",
         "--warmup", "2", "--lr", "0.01", "--quiet", "--no-plot",
         # CPU processes (gloo) and the one-process reference on the CPU too, also on a machine with a GPU
         # (auto would pick nccl, one GPU per process, and put the reference on cuda:0)
         "--backend", "gloo", "--device", "cpu"]
_ROOT = Path(__file__).resolve().parents[2]
_TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
             "--monitor-interval", "0.1"]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0", **extra)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join([str(_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _torchrun(out: Path, *, crash: bool = False) -> subprocess.Popen:
    """``torchrun ... -m geoflow.cli train ...`` (or the crashing worker script) in the background."""
    target = [str(Path(__file__).with_name("_crashing_worker.py"))] if crash else ["-m", "geoflow.cli"]
    env = _env(GEOFLOW_TEST_CRASH_AT=str(CRASH_AT)) if crash else _env()
    return subprocess.Popen([*_TORCHRUN, *target, *_ARGS, "--out", str(out)], cwd=_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 240.0) -> tuple[int, str]:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise AssertionError(f"torchrun did not finish within {timeout} s:\n{output}") from None
    return proc.returncode, output


def _run_in_process(out: Path) -> None:
    """The same command as one plain process (single-threaded like each torchrun worker)."""
    from geoflow.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*_ARGS, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)


def _final(out: Path) -> dict:
    state = load_checkpoint(out / "last.pt")
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.pop("train_seconds")
    metrics["config"].pop("out")
    return {"state": state, "metrics": metrics}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """1 process; 2 processes; 2 processes with rank 1 killed at step CRASH_AT, then run again."""
    root = tmp_path_factory.mktemp("ddp")
    full, crashed = _torchrun(root / "two"), _torchrun(root / "crashed", crash=True)
    try:
        _run_in_process(root / "one")  # meanwhile, while the workers start
    finally:
        rc_full, out_full = _finish(full)
        rc_crashed, out_crashed = _finish(crashed)
    assert rc_full == 0, out_full
    assert rc_crashed != 0, f"the crashing run finished:\n{out_crashed}"
    assert not (root / "crashed" / "metrics.json").exists()
    crashed_at = load_checkpoint(root / "crashed" / "last.pt")["step"]
    rc, out_rerun = _finish(_torchrun(root / "crashed"))  # "running the same command again"
    assert rc == 0, out_rerun
    return {"one": _final(root / "one"), "two": _final(root / "two"), "resumed": _final(root / "crashed"),
            "crashed_at": crashed_at, "rerun_output": out_rerun, "two_output": out_full}


def _params(state_dict) -> dict:
    return {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}


def test_two_processes_give_the_loss_curve_of_one_process(runs):
    one, two = runs["one"]["state"], runs["two"]["state"]
    assert one["step"] == two["step"] == STEPS
    assert [h["step"] for h in one["history"]] == [h["step"] for h in two["history"]] == list(
        range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
    for h1, h2 in zip(one["history"], two["history"]):
        assert h2["loss"] == pytest.approx(h1["loss"], rel=1e-6, abs=0), (h1, h2)
        assert h2["val_nll"] == pytest.approx(h1["val_nll"], rel=1e-5, abs=0), (h1, h2)
    # the run must actually move: the losses of the curve differ from each other
    assert len({round(h["loss"], 4) for h in one["history"]}) == len(one["history"])


def test_two_processes_give_the_final_parameters_of_one_process(runs):
    one, two = runs["one"]["state"], runs["two"]["state"]
    init = Trainer(TrainConfig.from_dict({**one["config"], "out": "unused"}), progress=False, log=lambda *_: None)
    moved = 0.0
    for key in ("model", "ema"):
        p1, p2 = _params(one[key]), _params(two[key])
        assert p1.keys() == p2.keys()
        for name in p1:
            torch.testing.assert_close(p2[name], p1[name], rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}.{name}: {m}")
    for name, p in init.model.state_dict().items():
        moved = max(moved, float((one["model"][name] - p).abs().max()))
    assert moved > 1e-3, "training did not change the parameters, the comparison proves nothing"
    m1, m2 = runs["one"]["metrics"], runs["two"]["metrics"]
    assert (m1["world_size"], m2["world_size"]) == (1, 2)
    assert m2["test_nll"] == pytest.approx(m1["test_nll"], rel=1e-5)
    assert m2["best_step"] == m1["best_step"]


def test_only_rank_zero_reports(runs):
    out = runs["two_output"]
    assert out.count("test NLL") == 2, out  # "test NLL (...): x" from the trainer and the CLI's summary, rank 0 only
    assert out.count(f"step {STEPS}: loss") == 1, out


def test_checkpoint_holds_every_rank_rng_state(runs):
    state = runs["two"]["state"]
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    r0, r1 = state["rng_ranks"]
    assert torch.equal(r0["data"], r1["data"])  # the shared global-batch generator
    assert torch.equal(state["rng"]["torch"], r0["torch"])
    assert not torch.equal(r0["torch"], r1["torch"])  # per-rank streams (dropout) differ


def test_killed_two_process_run_resumes_bit_for_bit(runs):
    assert runs["crashed_at"] == (CRASH_AT // EVAL_EVERY) * EVAL_EVERY
    assert "resumed from" in runs["rerun_output"] and f"at step {runs['crashed_at']}" in runs["rerun_output"]
    ref, got = runs["two"]["state"], runs["resumed"]["state"]
    for key in ("model", "ema", "optimizer", "lr_scheduler", "rng", "rng_ranks"):
        assert_states_equal(ref[key], got[key], key)
    assert ref["history"] == got["history"]
    assert runs["two"]["metrics"] == runs["resumed"]["metrics"]


# ------------------------------------------------------------ in-process checks (no process group)
def test_global_batch_must_split_evenly():
    cfg = TrainConfig(dataset="vmf_mixture", n_samples=100, steps=2, batch_size=10, hidden=8, depth=1, out="unused")
    with pytest.raises(ValueError, match=r"batch_size 10 is the global batch.*divisible.*\(3\)"):
        Trainer(cfg, progress=False, dist=DistInfo(rank=0, world_size=3))


def test_local_share_of_the_global_batch(monkeypatch):
    """Rank r of 2 trains on rows [r b, (r + 1) b) of the global batch that one process draws."""
    cfg = TrainConfig(dataset="vmf_mixture", n_samples=200, steps=2, batch_size=8, hidden=8, depth=1, time_dim=4,
                      out="unused")
    seen = {}

    def fake_loss(manifold, model, sample, *, cond=None, normal_weight=0.0):
        seen.setdefault("x1", []).append(sample.x1.clone())
        seen.setdefault("t", []).append(sample.t.clone())
        return model(sample.x_t, sample.t).pow(2).mean()

    import geoflow.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "rcfm_loss", fake_loss)
    one = Trainer(cfg, progress=False)
    one.train_step()
    for rank in (0, 1):
        tr = Trainer(cfg, progress=False, dist=DistInfo(rank=rank, world_size=2))  # no group: mean() is local
        assert tr.local_batch == 4
        tr.train_step()
        share = slice(4 * rank, 4 * rank + 4)
        assert torch.equal(seen["x1"][-1], seen["x1"][0][share])
        assert torch.equal(seen["t"][-1], seen["t"][0][share])


def test_init_distributed_single_process_and_bad_environments(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed()
    assert (info.rank, info.world_size, info.enabled, info.is_main, info.device.type) == (0, 1, False, True, "cpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        init_distributed("mpi")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="RANK"):
        init_distributed()
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        init_distributed()
    if not torch.cuda.is_available():
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        monkeypatch.setenv("MASTER_PORT", "29500")
        with pytest.raises(ValueError, match="nccl.*CUDA"):
            init_distributed("nccl")
    assert not torch.distributed.is_initialized()
    assert distributed.BACKENDS == ("auto", "gloo", "nccl")
