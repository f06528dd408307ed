"""Trainer with minibatch OT couplings: the batch the loss sees is the OT-paired one, labels stay
with their data, the option reaches the CLI, and resume stays exact with Sinkhorn's random draws."""

import pytest
import torch

from scipy.optimize import linear_sum_assignment

from geoflow.couplings import OTCoupling, pairwise_cost
from geoflow.train import TrainConfig, Trainer

from .test_trainer import _config, _params
from ._state import fit_interrupted


def _capture_pairs(trainer, monkeypatch):
    """Run one step and return the (x0, x1) pairs the path saw (copied to the CPU)."""
    seen = {}
    orig = trainer.path.sample

    def spy(x0, x1, t):
        seen["x0"], seen["x1"] = x0.detach().cpu().clone(), x1.detach().cpu().clone()
        return orig(x0, x1, t)

    monkeypatch.setattr(trainer.path, "sample", spy)
    trainer.train_step()
    return seen["x0"], seen["x1"]


@pytest.mark.parametrize("dataset", ["vmf_mixture", "moons"])
def test_ot_coupling_pairs_the_batch_optimally(tmp_path, monkeypatch, dataset):
    ind = Trainer(_config(tmp_path / "i", dataset=dataset), progress=False, log=lambda *_: None)
    ot = Trainer(_config(tmp_path / "o", dataset=dataset, coupling="ot"), progress=False, log=lambda *_: None)
    a0, a1 = _capture_pairs(ind, monkeypatch)
    b0, b1 = _capture_pairs(ot, monkeypatch)
    # Same draws, x1 untouched, x0 a permutation of the independent batch ...
    assert torch.equal(a1, b1)
    assert torch.equal(torch.sort(a0.reshape(len(a0), -1), dim=0).values, torch.sort(b0.reshape(len(b0), -1), dim=0).values)
    assert not torch.equal(a0, b0)
    # ... that attains the optimal total cost (squared geodesic distance on the sphere, squared Euclidean on R^2).
    manifold = None if dataset == "moons" else ot.manifold
    cost = pairwise_cost(a0.double(), a1.double(), manifold=manifold)
    rows, cols = linear_sum_assignment(cost.numpy())  # scipy as the oracle
    best = cost.numpy()[rows, cols].sum()
    # Which independent x0 each coupled x0 is, then the total cost of that pairing.
    flat_a, flat_b = a0.reshape(len(a0), -1), b0.reshape(len(b0), -1)
    src = torch.cdist(flat_b.double(), flat_a.double()).argmin(dim=1)
    assert torch.equal(flat_a[src], flat_b)
    got = cost[src, torch.arange(len(src))].sum()
    assert float(got) == pytest.approx(float(best), rel=1e-12)
    assert float(got) < float(cost.diagonal().sum())


def test_ot_coupling_on_labelled_data_pairs_within_labels(tmp_path, monkeypatch):
    """digits: x1 and its labels stay in place, so the labels the model sees still belong to x1."""
    cfg = TrainConfig.for_dataset("digits", steps=2, batch_size=24, eval_every=2, unet_channels=8, time_dim=8,
                                  val_points=8, coupling="ot", seed=1, out=str(tmp_path / "d"))
    trainer = Trainer(cfg, progress=False, log=lambda *_: None)
    assert isinstance(trainer.coupling, OTCoupling) and trainer.coupling.by_label
    assert trainer.coupling.manifold is None
    loss = trainer.train_step()
    assert torch.isfinite(torch.tensor(loss))


def test_sinkhorn_coupling_resumes_exactly(tmp_path, monkeypatch):
    kw = dict(coupling="ot-sinkhorn", steps=20, eval_every=10)
    full = Trainer(_config(tmp_path / "a", **kw), progress=False, log=lambda *_: None)
    full.fit()
    cfg = _config(tmp_path / "b", **kw)
    first = Trainer(cfg, progress=False, log=lambda *_: None)
    fit_interrupted(first, 13, monkeypatch)
    resumed = Trainer(cfg, progress=False, log=lambda *_: None)
    resumed.fit()
    assert torch.equal(_params(full.model), _params(resumed.model))


def test_coupling_option_is_validated_and_reaches_the_cli():
    with pytest.raises(ValueError, match="TrainConfig.coupling must be one of"):
        TrainConfig(coupling="sinkhorn")
    with pytest.raises(ValueError, match="TrainConfig.ot_reg must be a finite number > 0"):
        TrainConfig(coupling="ot-sinkhorn", ot_reg=0.0)
    from geoflow.cli import build_parser

    args = build_parser().parse_args(["train", "moons", "--coupling", "ot-sinkhorn", "--ot-reg", "0.1"])
    assert (args.coupling, args.ot_reg) == ("ot-sinkhorn", 0.1)


def test_cli_trains_moons_with_ot_and_plots_the_plane(tmp_path, capsys):
    from geoflow.cli import main

    out = tmp_path / "moons"
    rc = main(["train", "moons", "--coupling", "ot", "--steps", "2", "--eval-every", "2", "--n-samples", "200",
               "--hidden", "8", "--depth", "1", "--val-points", "8", "--nll-steps", "2", "--quiet", "--out", str(out)])
    assert rc == 0, capsys.readouterr()
    assert (out / "moons.png").stat().st_size > 5_000
