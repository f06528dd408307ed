"""Trainer: checkpoints are atomic and validated, resume is exact, divergence stops cleanly, CLI help."""

import json
import math
import subprocess
import sys

import pytest
import torch

from geoflow.train import TrainConfig, Trainer, TrainingDiverged, load_checkpoint, save_checkpoint
from ._state import fit_interrupted


def _config(tmp_path, **kw):
    base = dict(dataset="vmf_mixture", n_samples=400, steps=20, batch_size=32, hidden=16, depth=2, time_dim=8,
                eval_every=10, val_points=16, nll_steps=3, warmup=5, seed=3, out=str(tmp_path / "run"))
    base.update(kw)
    return TrainConfig(**base)


def _params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_resume_after_interruption_is_exact(tmp_path, monkeypatch):
    # bit for bit on the CPU (pinned: "auto" would train on a GPU where one is present; tests/test_cuda.py
    # resumes there)
    full = Trainer(_config(tmp_path / "a", device="cpu"), progress=False, log=lambda *_: None)
    m_full = full.fit()

    cfg = _config(tmp_path / "b", device="cpu")
    t1 = Trainer(cfg, progress=False, log=lambda *_: None)
    fit_interrupted(t1, 13, monkeypatch)
    assert load_checkpoint(tmp_path / "b" / "run" / "last.pt")["step"] == 10
    t2 = Trainer(cfg, progress=False, log=lambda *_: None)
    m_resumed = t2.fit()
    assert torch.equal(_params(full.model), _params(t2.model))
    assert torch.equal(_params(full.ema.module), _params(t2.ema.module))
    assert [h["val_nll"] for h in full.history] == [h["val_nll"] for h in t2.history]
    assert m_full["test_nll"] == m_resumed["test_nll"]
    metrics = json.loads((tmp_path / "b" / "run" / "metrics.json").read_text())
    assert metrics["test_nll"] == m_resumed["test_nll"]
    best = load_checkpoint(tmp_path / "b" / "run" / "best.pt")
    assert {"model", "config", "step"} <= set(best)


def test_resume_with_a_different_config_is_refused(tmp_path):
    Trainer(_config(tmp_path, steps=10), progress=False, log=lambda *_: None).fit()
    with pytest.raises(ValueError, match="different config"):
        Trainer(_config(tmp_path, steps=10, lr=0.5), progress=False, log=lambda *_: None).fit()


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    cfg = _config(tmp_path)
    tr = Trainer(cfg, progress=False, log=lambda *_: None)
    orig_forward = type(tr.model).forward
    calls = {"n": 0}

    def bad_forward(self, x, t, cond=None):
        out = orig_forward(self, x, t, cond)
        if self.training and tr.step >= 12:
            return out * float("nan")
        return out

    monkeypatch.setattr(type(tr.model), "forward", bad_forward)
    with pytest.raises(TrainingDiverged, match="step 12"):
        tr.fit()
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 10
    del calls


def test_checkpoint_errors(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint({"model": {}, "config": {}, "step": 1}, p)
    assert load_checkpoint(p)["step"] == 1
    data = p.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or not a torch file"):
        load_checkpoint(tmp_path / "trunc.pt")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a geoflow checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match="truncated or not a torch file"):
        load_checkpoint(tmp_path / "text.pt")
    save_checkpoint({"model": {}, "config": {}, "step": 1, "version": 99}, tmp_path / "v.pt")
    with pytest.raises(ValueError, match="version 99"):
        load_checkpoint(tmp_path / "v.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    p = tmp_path / "last.pt"
    save_checkpoint({"model": {}, "config": {}, "step": 1}, p)

    def full_disk(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint({"model": {}, "config": {}, "step": 2}, p)
    monkeypatch.undo()
    assert load_checkpoint(p)["step"] == 1
    assert [f.name for f in tmp_path.iterdir()] == ["last.pt"]


def test_config_validation():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="scheduler"):
        TrainConfig(scheduler="vp")
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"stepz": 3})


@pytest.mark.parametrize("cmd", [[], ["train"], ["sample"], ["nll"], ["plot"]])
def test_cli_help(cmd, capsys):
    from geoflow.cli import main

    with pytest.raises(SystemExit) as exc:
        main([*cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: geoflow" in capsys.readouterr().out


def test_cli_entry_point_runs_as_a_module():
    r = subprocess.run([sys.executable, "-m", "geoflow.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "train" in r.stdout and "nll" in r.stdout


def test_cli_train_nll_sample_end_to_end(tmp_path, capsys):
    from geoflow.cli import main

    out = tmp_path / "cli"
    args = ["train", "vmf_mixture", "--n-samples", "300", "--steps", "10", "--batch-size", "32", "--hidden", "16",
            "--depth", "2", "--eval-every", "5", "--val-points", "16", "--nll-steps", "3", "--out", str(out), "--quiet",
            "--no-plot"]
    assert main(args) == 0
    for f in ["last.pt", "best.pt", "metrics.json"]:
        assert (out / f).exists(), f
    assert "test_nll" in json.loads((out / "metrics.json").read_text())
    assert main(["nll", str(out / "best.pt"), "--split", "val", "--steps", "3"]) == 0
    capsys.readouterr()
    assert main(["nll", str(out / "best.pt"), "--split", "val", "--steps", "3", "--json"]) == 0
    every = json.loads(capsys.readouterr().out)
    assert main(["nll", str(out / "best.pt"), "--split", "val", "--steps", "3", "--points", "7", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    # --points keeps the first N points of the split, and the exact NLL of a point does not depend on its batch
    assert first["n"] == 7 and every["n"] > 7
    from geoflow.cli import _load_model
    from geoflow.solvers import log_likelihood

    model, config, data = _load_model(out / "best.pt")
    ref = -log_likelihood(model, data.val[:7], data.manifold, steps=3, method=config.nll_method).detach()
    assert math.isclose(first["nll"], float(ref.mean()), rel_tol=1e-5)
    assert first["divergence"] == "exact"  # auto: exact up to 64 dimensions
    # Hutchinson on request: seeded, reproducible, the same estimate as log_likelihood's with that generator
    hutch = []
    for _ in range(2):
        assert main(["nll", str(out / "best.pt"), "--split", "val", "--steps", "3", "--points", "7",
                     "--divergence", "hutchinson", "--seed", "5", "--json"]) == 0
        hutch.append(json.loads(capsys.readouterr().out))
    assert hutch[0] == hutch[1] and hutch[0]["divergence"] == "hutchinson"
    ref_h = -log_likelihood(model, data.val[:7], data.manifold, steps=3, method=config.nll_method,
                            divergence="hutchinson", generator=torch.Generator().manual_seed(5)).detach()
    assert math.isclose(hutch[0]["nll"], float(ref_h.mean()), rel_tol=1e-5)
    assert not math.isclose(hutch[0]["nll"], first["nll"], rel_tol=1e-6)  # an estimate, not the exact value
    with pytest.raises(SystemExit) as exc:  # not a positive integer: argparse's usage error, exit 2
        main(["nll", str(out / "best.pt"), "--points", "0"])
    assert exc.value.code == 2 and "--points" in capsys.readouterr().err
    assert main(["sample", str(out / "best.pt"), "--n", "5", "--steps", "3", "--out", str(tmp_path / "s.pt")]) == 0
    s = torch.load(tmp_path / "s.pt")
    assert s.shape == (5, 3)
    assert main(["nll", str(tmp_path / "s.pt")]) == 2  # not a checkpoint: clear error, exit code 2
    assert main(["train", "no_such_dataset", "--out", str(tmp_path / "x")]) == 2


def test_time_max_freq_reaches_the_model_and_old_configs_keep_theirs():
    """The embedding frequency is part of the config; configs saved before it existed mean 1000."""
    from geoflow.nn.embedding import LEGACY_TIME_MAX_FREQ
    from geoflow.train import TrainConfig, build_model
    from manifolds import Sphere

    cfg = TrainConfig(dataset="vmf_mixture", time_max_freq=20.0, hidden=8, depth=1)
    model = build_model(cfg, Sphere(2))
    assert model.time_embed.max_freq == 20.0
    assert float(model.time_embed.freqs.max()) == pytest.approx(20.0)
    old = cfg.to_dict()
    del old["time_max_freq"]
    assert TrainConfig.from_dict(old).time_max_freq == LEGACY_TIME_MAX_FREQ
    assert TrainConfig.from_dict(cfg.to_dict()).time_max_freq == 20.0
    with pytest.raises(ValueError, match="time_max_freq must be a finite number >= 1"):
        TrainConfig(dataset="vmf_mixture", time_max_freq=float("nan"))
