"""Training on triangle meshes: premetric path + RCFM loss, config checks, CLI end to end, plot, resume."""

import json
import math

import pytest
import torch

import geoflow.data.datasets as datasets
from geoflow.cli import main
from geoflow.nn import MLPVelocity
from geoflow.paths import PremetricPath
from geoflow.train import TrainConfig, Trainer, load_checkpoint
from geoflow.train.trainer import build_path, resolve_path
from manifolds import Mesh, Sphere
from ._bench import load_benchmark
from ._state import fit_interrupted


@pytest.fixture(autouse=True)
def coarse_mesh_targets(monkeypatch):
    """Mesh targets from the unrefined mesh (skips the 40 s eigensolve on the 3x subdivided mesh)."""
    monkeypatch.setattr(datasets, "_MESH_UPSAMPLE", 0)


def _config(tmp_path, **kw):
    base = dict(dataset="bunny_k10", n_samples=300, steps=4, batch_size=16, hidden=16, depth=2, time_dim=8,
                eval_every=2, val_points=8, test_points=8, nll_steps=2, warmup=1, seed=0, out=str(tmp_path / "run"))
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(premetric="geodesic"), "premetric must be one of"),
        (dict(premetric="heat"), "premetric must be one of"),
        (dict(premetric_steps=0), "premetric_steps must be a positive integer"),
        (dict(premetric_steps=2.5), "premetric_steps must be a positive integer"),
        (dict(path="straight"), "path must be one of"),
        (dict(premetric_times=0), "premetric_times must be a positive integer"),
        (dict(premetric_times=3, batch_size=256), "multiple of premetric_times"),
    ],
)
def test_config_checks(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_path_resolution_on_a_mesh():
    mesh = datasets.load_mesh("spot", n_eigs=20)
    assert resolve_path(TrainConfig(), mesh) == "premetric"
    assert resolve_path(TrainConfig(), Sphere(2)) == "geodesic"
    path = build_path(TrainConfig(premetric="diffusion", premetric_steps=3), mesh)
    assert isinstance(path, PremetricPath) and path.premetric == "diffusion" and path.steps == 3
    with pytest.raises(ValueError, match="use path 'premetric'"):
        resolve_path(TrainConfig(path="geodesic"), mesh)
    with pytest.raises(ValueError, match="needs flat space"):
        resolve_path(TrainConfig(path="affine"), mesh)
    # elsewhere "premetric" uses the geodesic distance as premetric
    assert build_path(TrainConfig(path="premetric"), Sphere(2)).premetric is None


def test_mlp_on_a_mesh_outputs_tangent_vectors():
    mesh = datasets.load_mesh("bunny", n_eigs=20)
    model = MLPVelocity(mesh, hidden=16, depth=2, time_dim=8)
    x = mesh.random_base(64, generator=torch.Generator().manual_seed(0))
    v = model(x, torch.rand(64))
    mesh.check_vector(x, v)
    n = mesh.normal(x)
    assert (v * n).sum(-1).abs().max() < 1e-5 * v.norm(dim=-1).max()


def test_cli_train_bunny_then_plot(tmp_path, capsys):
    out = tmp_path / "bunny"
    rc = main(["train", "bunny_k10", "--steps", "2", "--n-samples", "200", "--batch-size", "16", "--hidden", "16",
               "--depth", "2", "--val-points", "8", "--test-points", "8", "--nll-steps", "2", "--premetric-steps", "2",
               "--warmup", "1", "--quiet", "--no-plot", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "mesh_nll_check.py" in captured.out + captured.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "bunny_k10" and metrics["steps"] == 2
    assert torch.isfinite(torch.tensor(metrics["test_nll"]))
    assert metrics["config"]["premetric"] == "biharmonic" and metrics["config"]["premetric_steps"] == 2
    assert load_checkpoint(out / "best.pt")["manifold"].startswith("Mesh(")
    # `geoflow plot` on the checkpoint
    rc = main(["plot", str(out / "best.pt"), "--out", str(tmp_path / "p.png"), "--steps", "1", "--n", "50"])
    png = tmp_path / "p.png"
    assert rc == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    # benchmarks/mesh_nll_tail.py (the NLL-gap diagnostics) on the checkpoint
    tail = load_benchmark("mesh_nll_tail")
    tail.main([str(out / "best.pt"), "--n-test", "40", "--n-samples", "60", "--patches", "4", "--steps", "1",
               "--json", str(tmp_path / "tail.json")])
    res = json.loads((tmp_path / "tail.json").read_text())[str(out / "best.pt")]
    assert res["dataset"] == "bunny_k10" and 0 <= res["worst10"]["neighbours_also_worst"] <= 1
    assert all(math.isfinite(v) for v in (*res["nll"].values(), *res["coarse"]["4"].values()))


def test_cli_diffusion_premetric_and_bad_path(tmp_path, capsys):
    out = tmp_path / "spot"
    rc = main(["train", "spot_k50", "--steps", "1", "--n-samples", "100", "--batch-size", "8", "--hidden", "8",
               "--depth", "1", "--val-points", "4", "--test-points", "4", "--nll-steps", "1", "--premetric", "diffusion",
               "--quiet", "--no-plot", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["config"]["premetric"] == "diffusion"
    rc = main(["train", "spot_k50", "--steps", "1", "--n-samples", "100", "--path", "geodesic", "--quiet", "--no-plot",
               "--out", str(tmp_path / "g")])
    assert rc == 2 and "use path 'premetric'" in capsys.readouterr().err


def test_mesh_step_is_finite_and_uses_the_premetric_path(tmp_path):
    tr = Trainer(_config(tmp_path), progress=False, log=lambda *_: None)
    assert isinstance(tr.manifold, Mesh) and isinstance(tr.path, PremetricPath) and tr.val_metric == "nll"
    losses = [tr.train_step() for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))


def test_premetric_times_trains_on_shared_simulations(tmp_path, monkeypatch):
    # r times per simulated pair: batch_size / r pairs per step, stratified times, one path sample of
    # batch_size rows from sample_times (pair-major), and the run resumes exactly
    tr = Trainer(_config(tmp_path / "a", premetric_times=4), progress=False, log=lambda *_: None)
    seen = {}
    orig = tr.path.sample_times

    def spy(x0, x1, t, **kw):
        seen.update(x0=x0, t=t)
        return orig(x0, x1, t, **kw)

    monkeypatch.setattr(tr.path, "sample_times", spy)
    monkeypatch.setattr(tr.path, "sample", lambda *a: pytest.fail("premetric_times > 1 must use sample_times"))
    assert torch.isfinite(torch.tensor(tr.train_step()))
    assert seen["x0"].shape == (4, 3) and seen["t"].shape == (4, 4)
    strata = torch.arange(4, dtype=seen["t"].dtype) / 4
    assert bool(((seen["t"] >= strata) & (seen["t"] < strata + 0.25)).all())  # one time in each quarter
    monkeypatch.undo()
    full = Trainer(_config(tmp_path / "b", premetric_times=4), progress=False, log=lambda *_: None)
    m_full = full.fit()
    cfg = _config(tmp_path / "c", premetric_times=4)
    fit_interrupted(Trainer(cfg, progress=False, log=lambda *_: None), 3, monkeypatch)
    t2 = Trainer(cfg, progress=False, log=lambda *_: None)
    assert t2.fit()["test_nll"] == m_full["test_nll"]
    assert torch.equal(_params(full.model), _params(t2.model))


def _samples(trainer, monkeypatch, steps):
    """The loss and path sample (x_t, dx_t, t) of each of ``steps`` training steps."""
    out, orig = [], trainer.path.sample_times

    def spy(x0, x1, t, **kw):
        s = orig(x0, x1, t, **kw)
        out.append((s.x_t, s.dx_t, s.t))
        return s

    monkeypatch.setattr(trainer.path, "sample_times", spy)
    losses = [trainer.train_step() for _ in range(steps)]
    monkeypatch.undo()
    return losses, out


def test_premetric_chunk_trains_on_the_batches_and_paths_of_single_steps(tmp_path, monkeypatch):
    # chunk 3: the paths of 3 steps are simulated in one call; batches, times, paths, losses and
    # parameters are those of chunk 1 (up to float rounding of the larger calls), over 2.3 chunks
    one = Trainer(_config(tmp_path / "a", premetric_times=4, steps=7), progress=False, log=lambda *_: None)
    three = Trainer(_config(tmp_path / "b", premetric_times=4, steps=7, premetric_chunk=3), progress=False,
                    log=lambda *_: None)
    assert one.chunk == 1 and three.chunk == 3
    calls = []
    orig = three.path.solve_grid
    monkeypatch.setattr(three.path, "solve_grid", lambda x0, x1: calls.append(x0.shape[0]) or orig(x0, x1))
    l3, s3 = _samples(three, monkeypatch, 7)
    assert calls == [12, 12, 12]  # 3 steps of 16 / 4 pairs per call
    l1, s1 = _samples(one, monkeypatch, 7)
    for a, b in zip(s1, s3):
        assert torch.equal(a[2], b[2])  # the same times
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(a[1], b[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.tensor(l1), torch.tensor(l3), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(_params(one.model), _params(three.model), rtol=1e-4, atol=1e-5)


def test_premetric_chunk_resumes_exactly_mid_chunk(tmp_path, monkeypatch):
    # killed at step 4 (one step into the second chunk of 3; the checkpoint of step 4 is written
    # mid-chunk): the resumed run draws that chunk again and ends bit for bit where an
    # uninterrupted one does
    kw = dict(premetric_times=4, premetric_chunk=3, steps=8, eval_every=2)
    full = Trainer(_config(tmp_path / "a", **kw), progress=False, log=lambda *_: None)
    m_full = full.fit()
    cfg = _config(tmp_path / "b", **kw)
    fit_interrupted(Trainer(cfg, progress=False, log=lambda *_: None), 5, monkeypatch)
    state = load_checkpoint(tmp_path / "b" / "run" / "last.pt")
    assert state["step"] == 4 and state["rng"]["chunk"]["used"] == 1
    t2 = Trainer(cfg, progress=False, log=lambda *_: None)
    assert t2.fit()["test_nll"] == m_full["test_nll"]
    assert torch.equal(_params(full.model), _params(t2.model))
    assert [h["loss"] for h in t2.history] == [h["loss"] for h in full.history]


def test_premetric_chunk_and_tail_are_checked(tmp_path):
    with pytest.raises(ValueError, match="premetric_chunk must be a positive integer"):
        _config(tmp_path, premetric_chunk=0)
    with pytest.raises(ValueError, match="premetric_tail must be a non-negative integer, got -1"):
        _config(tmp_path, premetric_tail=-1)
    for kw, what in ((dict(premetric_chunk=2), "premetric_chunk"), (dict(premetric_tail=3), "premetric_tail")):
        cfg = TrainConfig(dataset="earthquake", n_samples=100, steps=1, batch_size=16, out=str(tmp_path / "e"), **kw)
        with pytest.raises(ValueError, match=f"{what} .* applies to premetric paths only"):
            Trainer(cfg, progress=False, log=lambda *_: None)


def test_premetric_tail_trains_on_the_tailed_grid(tmp_path):
    # the path gets the tail; chunked simulations carry its states (steps + tail + 1 per pair)
    tr = Trainer(_config(tmp_path, premetric_times=4, premetric_chunk=2, premetric_tail=3, premetric_steps=4),
                 progress=False, log=lambda *_: None)
    assert tr.path.tail == 3 and tr.path.s_grid().numel() == 8
    assert all(math.isfinite(tr.train_step()) for _ in range(3))
    assert tr._pending[0]["grid"][0].shape == (8, 4, 3)


def test_premetric_times_is_refused_off_premetric_paths(tmp_path):
    cfg = TrainConfig(dataset="earthquake", n_samples=100, steps=1, batch_size=16, premetric_times=2,
                      out=str(tmp_path / "e"))
    with pytest.raises(ValueError, match="premetric_times .* applies to premetric paths only"):
        Trainer(cfg, progress=False, log=lambda *_: None)


def _params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_resume_on_a_mesh_is_exact(tmp_path, monkeypatch):
    full = Trainer(_config(tmp_path / "a"), progress=False, log=lambda *_: None)
    m_full = full.fit()
    cfg = _config(tmp_path / "b")
    fit_interrupted(Trainer(cfg, progress=False, log=lambda *_: None), 3, monkeypatch)
    t2 = Trainer(cfg, progress=False, log=lambda *_: None)
    m_res = t2.fit()
    assert torch.equal(_params(full.model), _params(t2.model))
    assert m_full["test_nll"] == m_res["test_nll"]


def test_mesh_dataset_defaults_are_the_benchmark_recipe():
    # `geoflow train bunny_k10` with no options trains what benchmarks/mesh_table.py measures

    from geoflow.train import TrainConfig

    mod = load_benchmark("mesh_table")
    for ds in mod.SEEDS:
        args = mod.row_args(ds)
        flags = {a[2:].replace("-", "_"): args[i + 1] for i, a in enumerate(args)
                 if a.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--")}
        assert {"steps", "premetric_chunk", "fourier_features", "eval_every"} <= set(flags)
        cfg = TrainConfig.for_dataset(ds)
        for name, value in flags.items():
            assert getattr(cfg, name) == type(getattr(cfg, name))(value), (ds, name)


def test_mesh_path_ends_script(tmp_path):
    # benchmarks/mesh_path_ends.py: where the training paths end (without the t = 1 guard) against x1
    mod = load_benchmark("mesh_path_ends")
    out = tmp_path / "ends.json"
    mod.main(["--datasets", "bunny_k10", "--premetrics", "biharmonic", "--steps", "2", "64", "--pairs", "64",
              "--json", str(out)])
    r = json.loads(out.read_text())["bunny_k10/biharmonic"]["steps"]
    # more steps end closer to x1 (the error of the projected Euler path shrinks with the step)
    assert r["64"]["end_error_q90"] < r["2"]["end_error_q90"]
    assert 0 <= r["64"]["share_end_error_above_0.02"] <= r["2"]["share_end_error_above_0.02"] <= 1


def test_fourier_features_train_and_reload(tmp_path):
    # `geoflow train --fourier-features`: the MLP gets them, the checkpoint restores them (same B, same outputs)
    from geoflow.cli import _load_model

    out = tmp_path / "ff"
    rc = main(["train", "bunny_k10", "--steps", "2", "--n-samples", "200", "--batch-size", "16", "--hidden", "16",
               "--depth", "2", "--val-points", "8", "--test-points", "8", "--nll-steps", "2", "--premetric-steps", "2",
               "--warmup", "1", "--fourier-features", "6", "--fourier-scale", "2.0", "--quiet", "--no-plot",
               "--out", str(out)])
    assert rc == 0
    model, config, data = _load_model(str(out / "best.pt"))
    assert config.fourier_features == 6 and config.fourier_scale == 2.0
    B = model.features.fourier_B
    assert B.shape == (3, 6)
    state = load_checkpoint(out / "best.pt")
    saved = state.get("ema") or state["model"]
    key = next(k for k in saved if k.endswith("fourier_B"))
    assert torch.equal(saved[key].to(B.dtype), B)
