"""QM9 hybrid transport: training, exact resume, sampling shapes and E(3) symmetry, the CLI."""

import pytest
import torch

from geoflow.train import TrainConfig
from geoflow.train.molecules import MoleculeTrainer, sample_molecules


def _cfg(tmp_path, **kw):
    base = dict(steps=6, batch_size=4, hidden=8, depth=1, time_dim=8, eval_every=3, ess_samples=4, warmup=1,
                seed=2, out=str(tmp_path / "qm9"))
    base.update(kw)
    return TrainConfig.for_dataset("qm9", **base)


def _params(m):
    return torch.cat([p.detach().reshape(-1) for p in m.parameters()])


def test_qm9_trains_reports_stability_and_resumes_exactly(tmp_path, monkeypatch):
    quiet = dict(progress=False, log=lambda *_: None)
    full = MoleculeTrainer(_cfg(tmp_path / "a"), **quiet)
    metrics = full.fit()
    assert set(metrics["stability"]) == {"50", "200"}
    assert all(0 <= v["atom"] <= 1 and 0 <= v["molecule"] <= 1 for v in metrics["stability"].values())
    assert metrics["n_train"] == 1600 and torch.isfinite(torch.tensor(metrics["test_loss"]))

    cfg = _cfg(tmp_path / "b")
    first = MoleculeTrainer(cfg, **quiet)
    orig = MoleculeTrainer.train_step

    def killed(self):
        if self.step == 4:
            raise KeyboardInterrupt
        return orig(self)

    monkeypatch.setattr(MoleculeTrainer, "train_step", killed)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    monkeypatch.setattr(MoleculeTrainer, "train_step", orig)
    resumed = MoleculeTrainer(cfg, **quiet)
    resumed.fit()
    assert torch.equal(_params(full.model), _params(resumed.model))
    assert [h["val_loss"] for h in full.history] == [h["val_loss"] for h in resumed.history]


def test_sampled_molecules_are_centred_and_rotate_with_the_noise(tmp_path):
    trainer = MoleculeTrainer(_cfg(tmp_path), progress=False, log=lambda *_: None)
    model = trainer.model.eval()
    pos, types = sample_molecules(model, [3, 5], steps=4, generator=torch.Generator().manual_seed(0))
    assert [p.shape for p in pos] == [(3, 3), (5, 3)] and [t.shape for t in types] == [(3,), (5,)]
    assert max(float(p.mean(0).abs().max()) for p in pos) < 1e-5
    # The flow map is E(3)-equivariant: rotating (and reflecting) the noise rotates the samples, types unchanged.
    from geoflow.train.molecules import _velocity

    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1)))
    x = torch.randn(7, 3)
    x = x - x.mean(0)
    h = torch.randn(7, 5)
    batch = torch.zeros(7, dtype=torch.long)
    v, u = _velocity(model, x, h, batch, torch.tensor([0.3]))
    v2, u2 = _velocity(model, x @ q.T, h, batch, torch.tensor([0.3]))
    torch.testing.assert_close(v2, v @ q.T, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(u2, u, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="`method` must be 'euler' or 'rk4'"):
        sample_molecules(model, [3], method="dopri5")


def test_cli_trains_qm9_and_plots_molecules(tmp_path, capsys):
    from geoflow.cli import main

    out = tmp_path / "cli"
    rc = main(["train", "qm9", "--steps", "2", "--eval-every", "2", "--batch-size", "4", "--hidden", "8", "--depth", "1",
               "--ess-samples", "4", "--quiet", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "molecule stability" in text and (out / "qm9.png").stat().st_size > 10_000
    assert (out / "best.pt").exists() and (out / "metrics.json").exists()
