"""Faults in real processes: SIGKILL / SIGTERM and a rerun, a full disk while saving, NaN in the loss.

tests/train/test_trainer.py interrupts ``Trainer.fit`` in-process (an exception between two
checkpoints); here a real ``python -m geoflow.cli train`` process is killed by a signal at
whatever instruction it is executing (possibly in the middle of writing a checkpoint), and
the same command is run again to completion.  The result must equal an uninterrupted run
bit for bit: final parameters, EMA, optimiser state, the metrics history and metrics.json.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from geoflow.train import Trainer, TrainConfig, TrainingDiverged, load_checkpoint
from geoflow.train import checkpoint as checkpoint_module
from ._state import assert_states_equal

STEPS, EVAL_EVERY = 80, 10
_ARGS = ["train", "vmf_mixture", "--n-samples", "200", "--steps", str(STEPS), "--batch-size", "16", "--hidden", "16",
         "--depth", "2", "--eval-every", str(EVAL_EVERY), "--val-points", "8", "--nll-steps", "2", "--seed", "5",
         "--quiet", "--no-plot", "--device", "cpu"]  # bit for bit on the CPU, also where a GPU is present
_ROOT = Path(__file__).resolve().parents[2]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join([str(_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run_in_process(out: Path) -> None:
    """The same command, in this process (single-threaded like the subprocesses)."""
    from geoflow.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*_ARGS, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)


def _start(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "geoflow.cli", *_ARGS, "--out", str(out)], cwd=_ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _kill_after_first_checkpoint(proc: subprocess.Popen, out: Path, sig: int, timeout: float = 120.0) -> int:
    """Poll for ``out/last.pt``; send ``sig`` as soon as it appears; return the step it held."""
    last = out / "last.pt"
    t_end = time.monotonic() + timeout
    while not last.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training exited ({proc.returncode}) before its first checkpoint:\n"
                                 f"{proc.stdout.read().decode(errors='replace')}")
        if time.monotonic() > t_end:
            proc.kill()
            raise AssertionError("no checkpoint within the timeout")
        time.sleep(0.002)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    proc.stdout.close()
    # SIGKILL cannot be caught; SIGTERM kills today (no handler), a future handler may exit with 128 + 15 instead
    allowed = (-sig,) if sig == signal.SIGKILL else (-sig, 128 + sig)
    assert proc.returncode in allowed, f"expected death by signal {sig}, got return code {proc.returncode}"
    assert not (out / "metrics.json").exists(), "the run finished before the signal arrived"
    return int(load_checkpoint(last)["step"])


def _final(out: Path) -> dict:
    state = load_checkpoint(out / "last.pt")
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.pop("train_seconds")
    metrics["config"].pop("out")  # the only intended difference between the runs
    return {"state": state, "metrics": metrics}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One uninterrupted run and, per signal, a killed run that was then rerun to completion."""
    root = tmp_path_factory.mktemp("faults")
    procs = {sig: _start(root / sig.name) for sig in (signal.SIGKILL, signal.SIGTERM)}  # both start together
    killed_at, errors = {}, []

    def watch(sig, proc):
        try:
            killed_at[sig] = _kill_after_first_checkpoint(proc, root / sig.name, sig)
        except BaseException as exc:  # re-raised below, in the test's thread
            proc.kill()
            errors.append(exc)

    watchers = [threading.Thread(target=watch, args=item) for item in procs.items()]
    for w in watchers:
        w.start()
    try:
        _run_in_process(root / "reference")  # meanwhile, while the subprocesses import torch
    finally:
        for w in watchers:
            w.join()
    if errors:
        raise errors[0]
    results = {"reference": _final(root / "reference")}
    for sig in procs:
        assert 0 < killed_at[sig] < STEPS
        _run_in_process(root / sig.name)  # "running the same command again"
        results[sig.name] = _final(root / sig.name)
        results[sig.name]["killed_at"] = killed_at[sig]
    return results


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_killed_run_resumes_to_the_same_parameters(runs, sig):
    ref, got = runs["reference"]["state"], runs[sig]["state"]
    assert got["step"] == ref["step"] == STEPS
    for key in ("model", "ema", "optimizer", "lr_scheduler"):
        assert_states_equal(ref[key], got[key], f"{sig}: {key}")
    assert_states_equal(ref["rng"], got["rng"], f"{sig}: rng")


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_killed_run_resumes_to_the_same_validation_curve_and_metrics(runs, sig):
    ref, got = runs["reference"], runs[sig]
    val = [(h["step"], h["val_nll"]) for h in ref["state"]["history"]]
    assert val == [(h["step"], h["val_nll"]) for h in got["state"]["history"]]
    assert [s for s, _ in val] == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
    assert got["state"]["best_val_nll"] == ref["state"]["best_val_nll"]
    assert got["metrics"] == ref["metrics"]


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_killed_run_resumes_to_the_same_training_loss_curve(runs, sig):
    ref, got = runs["reference"]["state"]["history"], runs[sig]["state"]["history"]
    assert [(h["step"], h["loss"]) for h in ref] == [(h["step"], h["loss"]) for h in got]


# ------------------------------------------------------------------ full disk
def _tiny_config(tmp_path, **kw):
    base = dict(dataset="vmf_mixture", n_samples=200, steps=30, batch_size=16, hidden=16, depth=2, time_dim=8,
                eval_every=10, val_points=8, nll_steps=2, warmup=2, seed=1, out=str(tmp_path / "run"))
    base.update(kw)
    return TrainConfig(**base)


def _full_disk_on_save(monkeypatch, fail_on_call: int):
    """torch.save (as used by save_checkpoint) writes half of the bytes, then fails with ENOSPC."""
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] != fail_on_call:
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint_module.torch, "save", save)
    return calls


def _run_until_full_disk(tmp_path, monkeypatch):
    cfg = _tiny_config(tmp_path)
    tr = Trainer(cfg, progress=False, log=lambda *_: None)
    # saves: step 10 last.pt (1), best.pt (2) when improved, step 20 last.pt (3 or 2) ...
    _full_disk_on_save(monkeypatch, fail_on_call=3)
    with pytest.raises(OSError) as exc:
        tr.fit()
    monkeypatch.undo()
    return cfg, exc.value


def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    cfg, err = _run_until_full_disk(tmp_path, monkeypatch)
    assert err.errno == errno.ENOSPC
    run = Path(cfg.out)
    state = load_checkpoint(run / "last.pt")  # intact and loadable
    assert state["step"] == 10  # saved before the disk filled up
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp")) == []  # the partial file is removed
    # the run resumes from that checkpoint once space is back, and finishes
    tr = Trainer(cfg, progress=False, log=lambda *_: None)
    metrics = tr.fit()
    assert tr.step == cfg.steps and metrics["steps"] == cfg.steps


def test_full_disk_error_names_the_checkpoint(tmp_path, monkeypatch):
    cfg, err = _run_until_full_disk(tmp_path, monkeypatch)
    assert err.errno == errno.ENOSPC
    assert re.search(r"No space left on device", str(err))
    assert str(Path(cfg.out)) in str(err) and "intact" in str(err)


# ---------------------------------------------------------------- NaN / inf in the loss
@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_nonfinite_loss_names_step_and_batch_and_keeps_last_checkpoint(tmp_path, monkeypatch, bad):
    cfg = _tiny_config(tmp_path)
    tr = Trainer(cfg, progress=False, log=lambda *_: None)
    bad_step = 14
    drawn = {}
    real_randint = torch.randint

    def randint(*args, **kwargs):  # record the batch indices drawn at each step
        out = real_randint(*args, **kwargs)
        drawn[tr.step] = out.clone()
        return out

    orig_forward = type(tr.model).forward

    def forward(self, x, t, cond=None):
        out = orig_forward(self, x, t, cond)
        return out * bad if (self.training and tr.step == bad_step) else out

    monkeypatch.setattr(torch, "randint", randint)
    monkeypatch.setattr(type(tr.model), "forward", forward)
    with pytest.raises(TrainingDiverged) as exc:
        tr.fit()
    monkeypatch.undo()
    msg = str(exc.value)
    assert re.search(rf"loss is (nan|inf) at step {bad_step}\b", msg), msg
    m = re.search(r"batch indices \[([\d, ]+)\]", msg)
    assert m, f"the message does not name the batch: {msg}"
    named = [int(s) for s in m.group(1).split(",")]
    assert named == drawn[bad_step][: len(named)].tolist()
    assert str(Path(cfg.out) / "last.pt") in msg
    last = load_checkpoint(Path(cfg.out) / "last.pt")
    assert last["step"] == 10  # the last good checkpoint, before the bad step
    assert all(torch.isfinite(v).all() for v in last["model"].values())
