"""Training on particle systems: EGNN/TFN by default and on request, alignment coupling, importance weights."""

import math

import pytest
import torch

from geoflow.couplings import AlignmentCoupling
from geoflow.nn import EGNNVelocity
from geoflow.train import TrainConfig, Trainer, build_model


def _cfg(tmp_path, **kw):
    base = dict(steps=4, batch_size=16, n_samples=200, hidden=8, depth=1, time_dim=8, eval_every=2, val_points=8,
                test_points=8, ess_samples=16, nll_steps=2, warmup=1, out=str(tmp_path / "run"))
    base.update(kw)
    return TrainConfig.for_dataset("dw4", **base)


def test_dw4_trains_with_egnn_and_alignment_and_reports_ess(tmp_path):
    trainer = Trainer(_cfg(tmp_path, coupling="alignment"), progress=False, log=lambda *_: None)
    assert isinstance(trainer.model, EGNNVelocity)
    assert isinstance(trainer.coupling, AlignmentCoupling) and trainer.coupling.reflections
    assert trainer.divergence == "exact"
    metrics = trainer.fit()
    assert math.isfinite(metrics["test_nll"]) and metrics["n_test"] == 8
    assert 0 < metrics["ess"] <= 1 and metrics["ess_samples"] == 16
    assert set(metrics["energy"]) == {"samples", "reweighted", "test"}


class _Zero(torch.nn.Module):
    def forward(self, x, t, cond=None):
        return torch.zeros_like(x)


def test_importance_weights_of_an_exact_model_give_full_ess(tmp_path):
    """The zero field leaves the base distribution in place; against the base's own energy
    |x|^2 / 2 every weight is the same constant, so the ESS is exactly 1 and
    log w = -E - log q = (n - 1) d / 2 log(2 pi) for every sample."""
    trainer = Trainer(_cfg(tmp_path), progress=False, log=lambda *_: None)
    trainer.data.energy = lambda x: 0.5 * (x * x).sum((-2, -1))
    iw = trainer.importance_weights(_Zero(), n=64, seed=1)
    assert iw["samples"].shape == (64, 4, 2)
    expected = 0.5 * 3 * 2 * math.log(2 * math.pi)
    torch.testing.assert_close(iw["log_w"], torch.full((64,), expected, dtype=torch.float64), atol=1e-5, rtol=0)
    assert iw["ess"] == pytest.approx(1.0, abs=1e-9)
    # Weights against another energy: the Kish formula from the returned log-weights.
    trainer.data.energy = lambda x: (x * x).sum((-2, -1))
    iw = trainer.importance_weights(_Zero(), n=64, seed=1)
    w = torch.exp(iw["log_w"] - iw["log_w"].max())
    assert iw["ess"] == pytest.approx(float(w.sum() ** 2 / (64 * (w * w).sum())), rel=1e-9)
    assert iw["ess"] < 1


def test_model_choice_on_particles_and_elsewhere(tmp_path):
    cfg = _cfg(tmp_path, model="tfn")
    from manifolds import CoMFree, Sphere

    with pytest.raises(ValueError, match="model 'tfn' needs 3-D particles"):
        build_model(cfg, CoMFree(4, 2))
    with pytest.raises(ValueError, match="particle datasets take model 'egnn' or 'tfn'"):
        build_model(TrainConfig(model="mlp"), CoMFree(4, 2))
    with pytest.raises(ValueError, match="model 'egnn' needs a particle dataset"):
        build_model(TrainConfig(model="egnn"), Sphere(2))
    with pytest.raises(ValueError, match="coupling 'alignment' needs a particle dataset"):
        Trainer(TrainConfig(dataset="vmf_mixture", n_samples=100, coupling="alignment", out=str(tmp_path / "s")),
                progress=False, log=lambda *_: None)
    with pytest.raises(ValueError, match="TrainConfig.nll_divergence must be one of"):
        TrainConfig(nll_divergence="hutch")


def test_chiral_option_builds_se3_models_and_rotation_only_alignment(tmp_path):
    from geoflow.nn import ChiralEGNNLayer, EGNNLayer
    from manifolds import CoMFree, Sphere

    model = build_model(TrainConfig(model="egnn", chiral=True, hidden=8, depth=2), CoMFree(5, 3))
    assert model.chiral and all(isinstance(layer, ChiralEGNNLayer) for layer in model.layers)
    plain = build_model(TrainConfig(model="egnn", hidden=8, depth=2), CoMFree(5, 3))
    assert not plain.chiral and all(type(layer) is EGNNLayer for layer in plain.layers)
    with pytest.raises(ValueError, match="chiral .*EGNNs on 3-D particles"):
        build_model(TrainConfig(model="egnn", chiral=True), CoMFree(4, 2))  # DW4 is 2-D
    with pytest.raises(ValueError, match="chiral .*EGNNs on 3-D particles"):
        build_model(TrainConfig(model="tfn", chiral=True), CoMFree(5, 3))
    with pytest.raises(ValueError, match="chiral applies to particle and molecule datasets"):
        build_model(TrainConfig(chiral=True), Sphere(2))
    with pytest.raises(ValueError, match="TrainConfig.chiral must be a bool"):
        TrainConfig(chiral="yes")
    # the alignment coupling of a chiral run aligns with proper rotations only
    cfg = TrainConfig(dataset="lj13", n_samples=64, steps=1, batch_size=8, hidden=8, depth=1, coupling="alignment",
                      chiral=True, out=str(tmp_path / "lj"), device="cpu")
    tr = Trainer(cfg, progress=False, log=lambda *_: None)
    assert tr.coupling.reflections is False and tr.model.chiral
    assert torch.isfinite(torch.tensor(tr.train_step()))
    cfg = TrainConfig(dataset="lj13", n_samples=64, steps=1, batch_size=8, hidden=8, depth=1, coupling="alignment",
                      out=str(tmp_path / "lj2"), device="cpu")
    assert Trainer(cfg, progress=False, log=lambda *_: None).coupling.reflections is True


def test_hutchinson_validation_is_reproducible(tmp_path):
    cfg = _cfg(tmp_path, nll_divergence="hutchinson")
    a = Trainer(cfg, progress=False, log=lambda *_: None)
    assert a.divergence == "hutchinson"
    x = a.data.val[:8]
    torch.testing.assert_close(a.nll(x), a.nll(x), atol=0, rtol=0)


def test_cli_trains_dw4_and_plots_energies(tmp_path, capsys):
    from geoflow.cli import main

    out = tmp_path / "cli"
    rc = main(["train", "dw4", "--steps", "2", "--eval-every", "2", "--n-samples", "100", "--hidden", "8",
               "--depth", "1", "--val-points", "8", "--test-points", "8", "--ess-samples", "16", "--nll-steps", "2",
               "--quiet", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "ESS" in text and "test NLL" in text
    assert (out / "dw4.png").stat().st_size > 10_000
    assert main(["train", "dw4", "--model", "tfn", "--steps", "1", "--n-samples", "100", "--out", str(tmp_path / "t")]) == 2
    assert "model 'tfn' needs 3-D particles" in capsys.readouterr().err


def test_alignment_starts_and_rounds_reach_the_coupling_and_bad_values_are_refused(tmp_path):
    fast = Trainer(_cfg(tmp_path, coupling="alignment", align_starts=1, align_iters=0), progress=False,
                   log=lambda *_: None)
    assert (fast.coupling.starts, fast.coupling.n_iter) == (1, 0)
    default = Trainer(_cfg(tmp_path / "d", coupling="ot-align"), progress=False, log=lambda *_: None)
    assert (default.coupling.starts, default.coupling.n_iter) == (2, 2)
    # LJ13 (13! permutations: searched, not enumerated as DW4's 4!): more starts and refinement rounds
    # never align a pair worse, and here align some better
    lj = dict(dataset="lj13", n_samples=64, steps=1, batch_size=8, hidden=8, depth=1, coupling="alignment", device="cpu")
    fast = Trainer(TrainConfig(**lj, align_starts=1, align_iters=0, out=str(tmp_path / "lf")), progress=False,
                   log=lambda *_: None)
    default = Trainer(TrainConfig(**lj, out=str(tmp_path / "ld")), progress=False, log=lambda *_: None)
    g = torch.Generator().manual_seed(1)
    x0, x1 = fast.manifold.random_base(24, generator=g), fast.data.train[:24]
    c_fast = fast.coupling.pairwise(x0, x1)[0]
    c_default = default.coupling.pairwise(x0, x1)[0]
    assert (c_default <= c_fast + 1e-5).all() and (c_default < c_fast - 1e-3).any()
    for name, bad in (("align_starts", 0), ("align_iters", -1), ("align_starts", 1.5)):
        with pytest.raises(ValueError, match=f"TrainConfig.{name} must be a"):
            TrainConfig(**{name: bad})


def test_alignment_perm_coupling_aligns_the_order_only(tmp_path):
    """--coupling alignment-perm: OT on the best within-type order of each pair, no rotation (a diagnostic)."""
    tr = Trainer(_cfg(tmp_path, coupling="alignment-perm"), progress=False, log=lambda *_: None)
    c = tr.coupling
    assert (c.rotations, c.reflections, c.ot) == (False, False, True)
    g = torch.Generator().manual_seed(2)
    x0, x1 = tr.manifold.random_base(16, generator=g), tr.data.train[:16]
    y0, y1 = c(x0, x1)
    # each x0 keeps its orientation: the same points as its source cloud, reordered
    torch.testing.assert_close(y0.sort(1).values, x0[c.last_index].sort(1).values)
    unaligned = ((x0[c.last_index] - y1) ** 2).sum((-2, -1))
    assert float(((y0 - y1) ** 2).sum()) < float(unaligned.sum())
    assert math.isfinite(tr.fit()["test_nll"])


def test_cli_alignment_options(tmp_path, capsys):
    from geoflow.cli import main

    assert main(["train", "dw4", "--coupling", "alignment", "--align-iters", "-1", "--out", str(tmp_path / "x")]) == 2
    assert "align_iters must be a non-negative integer" in capsys.readouterr().err
    out = tmp_path / "fast"
    assert main(["train", "dw4", "--coupling", "alignment", "--align-starts", "1", "--align-iters", "0", "--steps", "1",
                 "--batch-size", "8", "--hidden", "8", "--depth", "1", "--n-samples", "64", "--val-points", "4",
                 "--test-points", "4", "--ess-samples", "0", "--nll-steps", "1", "--out", str(out), "--quiet",
                 "--no-plot", "--device", "cpu"]) == 0
    from geoflow.train import load_checkpoint

    cfg = load_checkpoint(out / "last.pt")["config"]
    assert (cfg["align_starts"], cfg["align_iters"]) == (1, 0)
