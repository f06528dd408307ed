"""Bad inputs, tried on purpose: each must raise a clear ``ValueError``/``TypeError`` (or exit 2 on the CLI).

One table, ``CASES``: an id, the area, the bad input in words, a callable that feeds it to
geoflow, the exception expected and a regular expression the message must match (it names
the argument and says what was expected).  ``docs/bad_inputs.md`` is generated from the same
table; a test checks that it is up to date.  Regenerate it with::

    python -m tests.test_bad_inputs

Cases marked ``xfail`` are known gaps: their reason says which message is poor today and the
fix proposed (file and message); they are strict, so a fix turns them into failures until the
mark is removed.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import pickle
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import torch

import manifolds as M
from geoflow.cli import _load_model, main
from geoflow.couplings import OTCoupling, PairedCoupling
from geoflow.data import load_dataset
from geoflow.guidance import CFGVelocity
from geoflow.losses import cfm_loss, rcfm_loss
from geoflow.nn import ManifoldFeatures, MLPVelocity
from geoflow.paths import AffinePath, CondOTScheduler, GeodesicPath, PathSample, PolynomialScheduler, VPScheduler
from geoflow.solvers import log_likelihood, sample
from geoflow.train import Trainer, TrainConfig, build_model, load_checkpoint
from geoflow.train.distributed import DistInfo

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"


# ----------------------------------------------------------------------------- helpers
class Ctx:
    """Per-module context: a temporary folder and, on first use, a tiny trained checkpoint."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self._ckpt: Optional[Path] = None

    def file(self, name: str, content) -> Path:
        p = self.tmp / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        return p

    @property
    def checkpoint(self) -> Path:
        if self._ckpt is None:
            cfg = _tiny_config(self.tmp / "run")
            Trainer(cfg, progress=False, log=lambda *_: None).fit()
            self._ckpt = Path(cfg.out) / "last.pt"
        return self._ckpt

    def doctored(self, name: str, edit: Callable[[dict], None]) -> Path:
        """A copy of the checkpoint with ``edit`` applied to its dict (saved with torch.save)."""
        state = torch.load(self.checkpoint, weights_only=False)
        edit(state)
        p = self.tmp / name
        torch.save(state, p)
        return p


def _tiny_config(out: Path, **kw):
    base = dict(dataset="vmf_mixture", n_samples=100, steps=2, batch_size=8, hidden=8, depth=1, time_dim=4,
                eval_every=2, val_points=4, nll_steps=2, warmup=1, seed=0, out=str(out))
    base.update(kw)
    return TrainConfig(**base)


class CLIError(Exception):
    """A non-zero exit of ``geoflow.cli.main``: 'exit CODE: <last line of stderr>'."""


def _cli(*args: str) -> int:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
    if code != 0:
        lines = err.getvalue().strip().splitlines() or [""]
        raise CLIError(f"exit {code}: {lines[-1]}")
    return code


_S2 = M.Sphere(2)


def _x(n: int = 4, dtype=torch.float32) -> torch.Tensor:
    return _S2.random_base(n, generator=torch.Generator().manual_seed(0), dtype=dtype)


def _nan(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[1, 0] = float("nan")
    return x


def _mlp(manifold=_S2):
    torch.manual_seed(0)
    return MLPVelocity(manifold, hidden=8, depth=1, time_dim=4)


def _geo(**kw):
    return GeodesicPath(_S2, **kw)


def _affine():
    return AffinePath()


def _path_sample(x_t: torch.Tensor) -> PathSample:
    t = torch.zeros(x_t.shape[0], dtype=x_t.dtype, device=x_t.device)
    return PathSample(x_t=x_t, dx_t=torch.zeros_like(x_t), t=t, x0=x_t, x1=x_t)


_sample, _loglik, _rcfm, _cfm, _load, _config = sample, log_likelihood, rcfm_loss, cfm_loss, load_dataset, TrainConfig


_LATLON = "lat,lon\n" + "".join(f"{i},{2 * i}\n" for i in range(12))
_RNA_ROW = "1ABC\tA\t10\t20\t30\t40\t50\t60\t70\n"
_TRAIN = ["train", "vmf_mixture", "--n-samples", "100", "--steps", "2", "--batch-size", "8", "--hidden", "8",
          "--depth", "1", "--eval-every", "2", "--val-points", "4", "--nll-steps", "2", "--quiet", "--no-plot"]


def _with_cache(ctx: Ctx, content: bytes, fn):
    """Run ``fn`` with ``GEOFLOW_CACHE`` set to a folder whose LJ13 train file holds ``content``."""
    import os

    cache = ctx.tmp / "cache"
    cache.mkdir(exist_ok=True)
    (cache / "lj13-train-16-v1.npy").write_bytes(content)
    old = os.environ.get("GEOFLOW_CACHE")
    os.environ["GEOFLOW_CACHE"] = str(cache)
    try:
        return fn()
    finally:
        if old is None:
            del os.environ["GEOFLOW_CACHE"]
        else:
            os.environ["GEOFLOW_CACHE"] = old


def _resume_on_other_manifold(ctx: Ctx):
    out = ctx.tmp / "resume_other"
    out.mkdir(exist_ok=True)
    state = torch.load(ctx.checkpoint, weights_only=False)
    state["manifold"] = "FlatTorus(n=2)"
    torch.save(state, out / "last.pt")
    Trainer(_tiny_config(out), progress=False, log=lambda *_: None).fit()


def _shrink_weights(state: dict) -> None:
    state["model"] = {k: v[:1] for k, v in state["model"].items()}
    state["ema"] = None


def _foreign_grid():
    from geoflow.paths import PremetricPath

    path = PremetricPath(_S2, steps=4)
    x0, x1 = _x(3), _x(3).flip(0)
    grid = path.solve_grid(x0, x1)  # three pairs' simulation, handed to two of them
    return path.sample_times(x0[:2], x1[:2], torch.rand(2, 2), grid=grid)


def _chiral_2d():
    from geoflow.nn import EGNNVelocity

    return EGNNVelocity(hidden=8, layers=1, time_dim=4, chiral=True)(torch.randn(2, 4, 2), torch.rand(2))


# ----------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Case:
    id: str
    area: str
    what: str
    call: Callable[[Ctx], Any]
    exc: type
    match: str
    xfail: Optional[str] = None


V, T, C = ValueError, TypeError, CLIError
_MLP_FIX = ("geoflow/nn/mlp.py, MLPVelocity.forward, first lines: check the input against the manifold and the "
            "weights before torch does: `ps = tuple(m.point_shape); if x.dim() < len(ps) + 1 or tuple(x.shape[x.dim() - "
            "len(ps):]) != ps: raise ValueError(f\"MLPVelocity on {m!r}: `x` must have shape (batch, *{ps}), got "
            "{tuple(x.shape)}\")`; `w = self.net[0].weight; if x.dtype != w.dtype: raise TypeError(f\"MLPVelocity: `x` "
            "has dtype {x.dtype} but the parameters are {w.dtype}; use model.to({x.dtype}) or cast x\")`; same for "
            "x.device != w.device (ValueError)")
_LOAD_STATE_FIX = ("geoflow/cli.py, _load_model (and Trainer.load_state_dict in geoflow/train/trainer.py): wrap "
                   "`model.load_state_dict(...)` / `ema.load_state_dict(...)` in `try: ... except RuntimeError as exc: "
                   "raise ValueError(f\"checkpoint {str(checkpoint)!r}: its weights do not fit the model its config "
                   "builds ({first line of exc}); was the file edited or written by another geoflow version?\") from None`")
_CONFIG_FIX = "geoflow/train/config.py, TrainConfig.__post_init__: "

CASES: list[Case] = [
    # ---------------------------------------------------------------- manifolds
    Case("manifold-sphere-off", "manifolds", "Sphere(2).check_point on points of norm 2",
         lambda c: _S2.check_point(2 * _x()), V, r"`x` is not on the manifold: expected \|x\| = 1 .*max \|\|x\| - 1\| = 1.*projx"),
    Case("manifold-wrong-trailing-shape", "manifolds", "Sphere(2).check_point on shape (4, 4)",
         lambda c: _S2.check_point(torch.randn(4, 4)), V, r"`x` must have trailing shape \(3,\).*got shape \(4, 4\)"),
    Case("manifold-nan-point", "manifolds", "Sphere(2).check_point with a NaN entry",
         lambda c: _S2.check_point(_nan(_x())), V, r"`x` contains 1 NaN or inf entries"),
    Case("manifold-int-dtype", "manifolds", "Sphere(2).check_point on an int64 tensor",
         lambda c: _S2.check_point(torch.ones(4, 3, dtype=torch.long)), T, r"`x` must have a floating dtype, got torch\.int64"),
    Case("manifold-vector-not-tangent", "manifolds", "Sphere(2).check_vector(x, x): u normal, not tangent",
         lambda c: _S2.check_vector(_x(), _x()), V, r"`u` is not tangent at `x`: expected <x, u> = 0.*proju"),
    Case("manifold-spd-not-symmetric", "manifolds", "SPD(2).check_point on a non-symmetric matrix",
         lambda c: M.SPD(2).check_point(torch.tensor([[[1.0, 2.0], [0.0, 1.0]]])), V,
         r"`x` is not on the manifold: expected symmetric positive definite.*max \|x - x\^T\| = 2"),
    Case("manifold-spd-not-positive", "manifolds", "SPD(2).check_point on diag(1, -1)",
         lambda c: M.SPD(2).check_point(torch.tensor([[[1.0, 0.0], [0.0, -1.0]]])), V,
         r"smallest eigenvalue .* is -1 \(must be > 0\)"),
    Case("manifold-so3-reflection", "manifolds", "SO3().check_point on a reflection (det -1)",
         lambda c: M.SO3().check_point(torch.diag(torch.tensor([1.0, 1.0, -1.0]))[None]), V,
         r"expected rotation matrices .*det R = 1.*reflection"),
    Case("manifold-torus-angle-outside", "manifolds", "FlatTorus(2).check_point on an angle of 4 rad",
         lambda c: M.FlatTorus(2).check_point(torch.tensor([[4.0, 0.0]])), V, r"expected angles in \[-pi, pi\).*projx"),
    Case("manifold-poincare-outside-ball", "manifolds", "PoincareBall(2).check_point on |x| > 1",
         lambda c: M.PoincareBall(2).check_point(torch.tensor([[1.0, 0.5]])), V, r"expected sqrt\(c\)\|x\| < 1.*1\.118"),
    Case("manifold-lorentz-off", "manifolds", "Lorentz(2).check_point off the hyperboloid",
         lambda c: M.Lorentz(2).check_point(torch.tensor([[0.5, 0.0, 0.0]])), V, r"expected -x_0\^2 \+ \|x_1:\|\^2 = -k"),
    Case("manifold-sphere-negative-n", "manifolds", "Sphere(-1)",
         lambda c: M.Sphere(-1), V, r"`n` must be >= 1, got -1"),
    Case("manifold-sphere-float-n", "manifolds", "Sphere(2.5)",
         lambda c: M.Sphere(2.5), T, r"`n` must be an int, got float 2\.5"),
    Case("manifold-spd-unknown-metric", "manifolds", "SPD(3, metric='x')",
         lambda c: M.SPD(3, metric="x"), V, r"`metric` must be one of 'affine', 'log-euclidean', got 'x'"),
    Case("manifold-torus-zero", "manifolds", "FlatTorus(0)",
         lambda c: M.FlatTorus(0), V, r"`n` must be >= 1, got 0"),
    Case("manifold-poincare-negative-c", "manifolds", "PoincareBall(2, c=-1)",
         lambda c: M.PoincareBall(2, c=-1.0), V, r"`c` must be a finite number > 0, got -1"),
    Case("manifold-lorentz-zero-k", "manifolds", "Lorentz(2, k=0)",
         lambda c: M.Lorentz(2, k=0.0), V, r"`k` must be a finite number > 0, got 0"),
    Case("manifold-product-empty", "manifolds", "Product() with no factor",
         lambda c: M.Product(), V, r"Product needs at least one factor manifold"),
    Case("manifold-product-not-manifold", "manifolds", "Product(3)",
         lambda c: M.Product(3), T, r"factor 0 must be a manifolds\.Manifold, got int"),
    Case("manifold-random-base-negative", "manifolds", "Sphere(2).random_base(-1)",
         lambda c: _S2.random_base(-1), V, r"size must be non-negative integers, got \(-1,\)"),
    Case("manifold-random-base-int-dtype", "manifolds", "random_base(3, dtype=torch.int64)",
         lambda c: _S2.random_base(3, dtype=torch.long), T, r"random_base needs a floating dtype, got torch\.int64"),
    # ---------------------------------------------------------------- paths
    Case("path-x1-off-manifold", "paths", "GeodesicPath(S^2).sample with x1 of norm 2",
         lambda c: _geo().sample(_x(), 2 * _x(), 0.5), V, r"`x1` is not on the manifold: expected \|x\| = 1.*projx"),
    Case("path-x0-off-manifold", "paths", "GeodesicPath(T^2).sample with x0 outside [-pi, pi)",
         lambda c: GeodesicPath(M.FlatTorus(2)).sample(
             torch.full((3, 2), 4.0), torch.zeros(3, 2), 0.5), V, r"`x0` is not on the manifold: expected angles in \[-pi, pi\)"),
    Case("path-wrong-trailing-shape", "paths", "GeodesicPath(S^2).sample on points of shape (4, 4)",
         lambda c: _geo().sample(torch.randn(4, 4), torch.randn(4, 4), 0.5), V, r"`x0` must have trailing shape \(3,\)"),
    Case("path-t-above-one", "paths", "path.sample with t = 1.5",
         lambda c: _geo().sample(_x(), _x(), 1.5), V, r"`t` must lie in \[0, 1\].*got values in \[1\.5, 1\.5\]"),
    Case("path-t-negative", "paths", "path.sample with t = -0.1",
         lambda c: _affine().sample(_x(), _x(), torch.full((4,), -0.1)), V, r"`t` must lie in \[0, 1\].*-0\.1"),
    Case("path-t-nan", "paths", "path.sample with t = NaN",
         lambda c: _geo().sample(_x(), _x(), float("nan")), V, r"`t` must lie in \[0, 1\] \(and not be NaN\)"),
    Case("path-t-wrong-shape", "paths", "path.sample with t of shape (3,) for a batch of 4",
         lambda c: _geo().sample(_x(), _x(), torch.rand(3)), V, r"`t` must have shape \(batch,\) = \(4,\), got \(3,\)"),
    Case("path-nan-x1", "paths", "GeodesicPath.sample with NaN in x1",
         lambda c: _geo().sample(_x(), _nan(_x()), 0.5), V, r"`x1` contains 1 NaN or inf entries"),
    Case("path-inf-x0-affine", "paths", "AffinePath.sample with inf in x0",
         lambda c: _affine().sample(_x() / 0.0, _x(), 0.5), V, r"`x0` contains \d+ NaN or inf entries"),
    Case("path-dtype-mismatch", "paths", "x0 float32 with x1 float64",
         lambda c: _geo().sample(_x(), _x(dtype=torch.float64), 0.5), T,
         r"`x0` and `x1` must have the same dtype, got torch\.float32 and torch\.float64"),
    Case("path-batch-mismatch", "paths", "x0 of 4 points with x1 of 2",
         lambda c: _geo().sample(_x(), _x(2), 0.5), V, r"`x0` and `x1` must have the same shape, got \(4, 3\) and \(2, 3\)"),
    Case("path-empty-batch", "paths", "path.sample on an empty batch (0, 3)",
         lambda c: _geo().sample(_x()[:0], _x()[:0], torch.rand(0)), V, r"`x0` and `x1` must hold at least one pair \(batch >= 1\)"),
    Case("path-device-mismatch", "paths", "x1 on the meta device, x0 on the CPU",
         lambda c: _geo().sample(_x(), _x().to("meta"), 0.5), V, r"`x0` and `x1` must be on the same device, got cpu and meta"),
    Case("path-t-device-mismatch", "paths", "t on the meta device, points on the CPU",
         lambda c: _affine().sample(_x(), _x(), torch.rand(4, device="meta")), V, r"`t` must be on the device of `x0` \(cpu\), got meta"),
    Case("path-manifold-not-manifold", "paths", "GeodesicPath('sphere')",
         lambda c: GeodesicPath("sphere"), T,
         r"`manifold` must be a manifolds\.Manifold, got str"),
    Case("path-scheduler-by-name", "paths", "GeodesicPath(S^2, 'cosine'): a scheduler name instead of an object",
         lambda c: GeodesicPath(_S2, "cosine"),
         T, r"`scheduler` must be a geoflow\.paths\.Scheduler, got str"),
    Case("path-scheduler-not-geodesic", "paths", "GeodesicPath(S^2, VPScheduler()) (alpha_0 != 0)",
         lambda c: GeodesicPath(_S2, VPScheduler()), V, r"alpha_0 = 0 and alpha_1 = 1"),
    Case("path-condot-sigma-min", "paths", "CondOTScheduler(sigma_min=1.0)",
         lambda c: CondOTScheduler(sigma_min=1.0), V,
         r"`sigma_min` must be < 1, got 1\.0"),
    Case("path-polynomial-zero", "paths", "PolynomialScheduler(0)",
         lambda c: PolynomialScheduler(0), V,
         r"`n` must be > 0, got 0"),
    # ---------------------------------------------------------------- losses
    Case("loss-model-output-shape", "losses", "a model returning (batch, 2) on S^2",
         lambda c: _rcfm(_S2, lambda x, t: x[:, :2], _geo().sample(_x(), _x(), 0.5)), V,
         r"model output must have the shape of x_t \(4, 3\), got \(4, 2\)"),
    Case("loss-empty-batch", "losses", "rcfm_loss on a PathSample with 0 points",
         lambda c: _rcfm(_S2, _mlp(), _path_sample(_x()[:0])), V, r"`sample` must hold at least one point \(batch >= 1\)"),
    Case("loss-not-a-path-sample", "losses", "cfm_loss(model, (x_t, dx_t)): a tuple instead of a PathSample",
         lambda c: _cfm(_mlp(), (_x(), _x())), T, r"`sample` must be a geoflow\.paths\.PathSample.*got tuple"),
    Case("loss-normal-weight-negative", "losses", "rcfm_loss(..., normal_weight=-1)",
         lambda c: _rcfm(_S2, _mlp(), _geo().sample(_x(), _x(), 0.5), normal_weight=-1.0), V,
         r"`normal_weight` must be a finite number >= 0, got -1\.0"),
    Case("loss-normal-weight-model-without-raw-output", "losses",
         "rcfm_loss(..., normal_weight=1) with a plain function as the model (no raw ambient output)",
         lambda c: _rcfm(_S2, lambda x, t: x, _geo().sample(_x(), _x(), 0.5), normal_weight=1.0), T,
         r"normal_weight > 0 needs a model whose forward accepts project=False"),
    Case("loss-manifold-not-manifold", "losses", "rcfm_loss('S2', ...)",
         lambda c: _rcfm("S2", _mlp(), _geo().sample(_x(), _x(), 0.5)), T, r"`manifold` must be a manifolds\.Manifold, got str"),
    Case("loss-dtype-mismatch", "losses", "float64 path sample, float32 model",
         lambda c: _rcfm(_S2, _mlp(), _geo().sample(_x(dtype=torch.float64), _x(dtype=torch.float64), 0.5)), T,
         r"parameters have dtype torch\.float32 but `sample\.x_t` has dtype torch\.float64"),
    Case("loss-device-mismatch", "losses", "path sample on the meta device, model on the CPU",
         lambda c: _rcfm(_S2, _mlp(), _path_sample(_x().to("meta"))), V, r"parameters are on cpu but `sample\.x_t` is on meta"),
    # ---------------------------------------------------------------- solvers
    Case("solver-steps-zero", "solvers", "sample(..., steps=0)",
         lambda c: _sample(_mlp(), _x(), _S2, steps=0), V, r"`steps` must be >= 1, got 0"),
    Case("solver-steps-negative", "solvers", "log_likelihood(..., steps=-5)",
         lambda c: _loglik(_mlp(), _x(), _S2, steps=-5), V, r"`steps` must be >= 1, got -5"),
    Case("solver-steps-float", "solvers", "sample(..., steps=2.5)",
         lambda c: _sample(_mlp(), _x(), _S2, steps=2.5), T, r"`steps` must be an int, got float 2\.5"),
    Case("solver-unknown-method", "solvers", "sample(..., method='rk5')",
         lambda c: _sample(_mlp(), _x(), _S2, method="rk5"), V, r"`method` must be one of \['euler', .*'rk4'.*\], got 'rk5'"),
    Case("solver-unknown-divergence", "solvers", "log_likelihood(..., divergence='hutch')",
         lambda c: _loglik(_mlp(), _x(), _S2, divergence="hutch"), V,
         r"`divergence` must be one of \['exact', 'hutchinson', 'hutchinson-rademacher'\], got 'hutch'"),
    Case("solver-unknown-transport", "solvers", "sample(..., transport='parallel')",
         lambda c: _sample(_mlp(), _x(), _S2, transport="parallel"), V,
         r"`transport` must be one of \['dlog', 'transp', 'proju'\], got 'parallel'"),
    Case("solver-nan-x0", "solvers", "sample from x0 with a NaN",
         lambda c: _sample(_mlp(), _nan(_x()), _S2, steps=2), V, r"`x0` contains 1 NaN or inf entries"),
    Case("solver-inf-x1", "solvers", "log_likelihood of x1 with inf",
         lambda c: _loglik(_mlp(), _x() / 0.0, _S2, steps=2), V, r"`x1` contains \d+ NaN or inf entries"),
    Case("solver-x1-off-manifold", "solvers", "log_likelihood of points of norm 2 on S^2",
         lambda c: _loglik(_mlp(), 2 * _x(), _S2, steps=2), V, r"`x1` is not on the manifold: expected \|x\| = 1.*projx"),
    Case("solver-wrong-trailing-shape", "solvers", "sample on S^2 from x0 of shape (4, 4)",
         lambda c: _sample(_mlp(), torch.randn(4, 4), _S2, steps=2), V,
         r"`x0` must have shape \(batch, \*point_shape\) = \(batch, 3\) for Sphere\(n=2\), got \(4, 4\)"),
    Case("solver-empty-batch", "solvers", "log_likelihood of an empty batch",
         lambda c: _loglik(_mlp(), _x()[:0], _S2, steps=2), V, r"`x1` must hold at least one point \(batch >= 1\)"),
    Case("solver-velocity-nan", "solvers", "a velocity that returns NaN",
         lambda c: _sample(lambda x, t: x * float("nan"), _x(), _S2, steps=2), V,
         r"velocity returned 12 NaN or inf values at step 1 of 2 \(t = 0\)"),
    Case("solver-velocity-shape", "solvers", "a velocity that returns (batch, 2) on S^2",
         lambda c: _sample(lambda x, t: x[:, :2], _x(), _S2, steps=2), V,
         r"velocity returned shape \(4, 2\) at step 1 of 2.*expected x\.shape = \(4, 3\)"),
    Case("solver-dtype-mismatch", "solvers", "float32 model, float64 x0",
         lambda c: _sample(_mlp(), _x(dtype=torch.float64), _S2, steps=2), T,
         r"velocity's parameters have dtype torch\.float32 but `x0` has dtype torch\.float64"),
    Case("solver-device-mismatch", "solvers", "CPU model, x0 on the meta device",
         lambda c: _sample(_mlp(), _x().to("meta"), _S2, steps=2), V, r"velocity's parameters are on cpu but `x0` is on meta"),
    Case("solver-equal-times", "solvers", "sample(..., t0=0.5, t1=0.5)",
         lambda c: _sample(_mlp(), _x(), _S2, t0=0.5, t1=0.5), V, r"`t0` and `t1` must differ"),
    Case("solver-manifold-by-name", "solvers", "sample(v, x0, 'sphere')",
         lambda c: _sample(_mlp(), _x(), "sphere"), T, r"`manifold` must be None or a manifolds\.Manifold"),
    # ---------------------------------------------------------------- networks, couplings, guidance
    Case("nn-wrong-trailing-shape", "nn", "MLPVelocity(S^2) called on x of shape (4, 5)",
         lambda c: _mlp()(torch.randn(4, 5), torch.rand(4)), V, r"`x` must have shape \(batch, \*\(3,\)\), got \(4, 5\)"),
    Case("nn-dtype-mismatch", "nn", "float32 MLPVelocity called on float64 x",
         lambda c: _mlp()(_x(dtype=torch.float64), torch.rand(4, dtype=torch.float64)), T,
         r"`x` has dtype torch\.float64 but the parameters are torch\.float32"),
    Case("nn-unknown-activation", "nn", "MLPVelocity(S^2, activation='swish')",
         lambda c: MLPVelocity(_S2, activation="swish"), V,
         r"`activation` must be one of \['gelu', 'relu', 'silu', 'softplus', 'tanh'\], got 'swish'"),
    Case("nn-zero-hidden", "nn", "MLPVelocity(S^2, hidden=0)",
         lambda c: MLPVelocity(_S2, hidden=0), V,
         r"`hidden` must be a positive int, got 0"),
    Case("coupling-unknown-method", "couplings", "OTCoupling('hungarian')",
         lambda c: OTCoupling("hungarian"), V,
         r"`method` must be one of \['exact', 'sinkhorn'\], got 'hungarian'"),
    Case("coupling-nan", "couplings", "OTCoupling('exact') on x1 with a NaN",
         lambda c: OTCoupling("exact")(_x(), _nan(_x())), V,
         r"`x1` contains 1 NaN or inf entries"),
    Case("coupling-empty-batch", "couplings", "OTCoupling('exact') on empty batches",
         lambda c: OTCoupling("exact")(_x()[:0], _x()[:0]), V,
         r"`x0` must have shape \(batch, \*point_shape\) with batch >= 1, got \(0, 3\)"),
    Case("coupling-negative-sigma", "couplings", "PairedCoupling(sigma=-1)",
         lambda c: PairedCoupling(-1.0), V,
         r"`sigma` must be a finite number >= 0, got -1"),
    Case("guidance-weight-not-number", "guidance", "CFGVelocity(model, w='2')",
         lambda c: CFGVelocity(_mlp(), "2"), T,
         r"`w` must be a float, got str '2'"),
    # ---------------------------------------------------------------- data
    Case("data-unknown-dataset", "data", "load_dataset('Volcano') (wrong case)",
         lambda c: _load("Volcano"), V, r"unknown dataset 'Volcano'; valid names: volcano, earthquake"),
    Case("data-csv-non-numeric", "data", "earth CSV with 'abc' as a longitude",
         lambda c: _load("volcano", path=c.file("a.csv", _LATLON.replace("3,6", "3,abc"))), V,
         r"a\.csv: line 5: non-numeric value 'abc' in column 2 \(lon\)"),
    Case("data-csv-out-of-range", "data", "earth CSV with latitude 95",
         lambda c: _load("volcano", path=c.file("b.csv", _LATLON.replace("3,6", "95,6"))), V,
         r"b\.csv: line 5: lat = 95 is out of range \[-90, 90\] degrees"),
    Case("data-csv-column-count", "data", "earth CSV with a row of 3 fields",
         lambda c: _load("volcano", path=c.file("c.csv", _LATLON.replace("3,6", "3,6,9"))), V,
         r"c\.csv: line 5: expected 2 columns \(lat, lon\) separated by commas, got 3"),
    Case("data-csv-nan", "data", "earth CSV with 'nan' as a latitude",
         lambda c: _load("volcano", path=c.file("d.csv", _LATLON.replace("3,6", "nan,6"))), V,
         r"d\.csv: line 5: NaN in column 1 \(lat\)"),
    Case("data-csv-empty", "data", "an empty earth CSV",
         lambda c: _load("volcano", path=c.file("e.csv", "")), V, r"e\.csv: line 1: end of file reached without a data row"),
    Case("data-csv-binary", "data", "a binary file given as the earth CSV",
         lambda c: _load("volcano", path=c.file("f.csv", b"\xff\xfe\x00\x01garbage")), V, r"f\.csv: not a UTF-8 text file"),
    Case("data-csv-too-few-rows", "data", "an earth CSV with 2 rows (no 80/10/10 split)",
         lambda c: _load("volcano", path=c.file("g.csv", "1,1\n2,2\n")), V,
         r"g\.csv: 2 data rows; at least 10 are needed"),
    Case("data-tsv-angle-out-of-range", "data", "RNA TSV with an angle of 270 degrees",
         lambda c: _load("rna", path=c.file("r.tsv", _RNA_ROW * 11 + _RNA_ROW.replace("\t70\n", "\t270\n"))), V,
         r"r\.tsv: line 12: chi = 270 is out of range \[-180, 180\] degrees"),
    Case("data-gzip-truncated", "data", "a truncated digits .csv.gz",
         lambda c: _load("digits", path=c.file("dg.csv.gz", gzip.compress(b"0," * 64 + b"1\n" * 20)[:25])), V,
         r"dg\.csv\.gz: not a readable gzip file"),
    Case("data-n-samples-too-small", "data", "load_dataset('volcano', n_samples=5)",
         lambda c: _load("volcano", n_samples=5), V, r"`n_samples` must be >= 10 .*got 5"),
    Case("data-path-for-synthetic", "data", "load_dataset('vmf_mixture', path=...)",
         lambda c: _load("vmf_mixture", path=c.tmp / "x.csv"), V, r"`path` is only for file-based datasets; 'vmf_mixture' is synthetic"),
    Case("data-int-dtype", "data", "load_dataset('volcano', dtype=torch.int32)",
         lambda c: _load("volcano", dtype=torch.int32), T, r"`dtype` must be a floating torch\.dtype, got torch\.int32"),
    # ---------------------------------------------------------------- training config
    Case("config-zero-steps", "train", "TrainConfig(steps=0)",
         lambda c: _config(steps=0), V, r"TrainConfig\.steps must be a positive integer, got 0"),
    Case("config-bool-batch-size", "train", "TrainConfig(batch_size=True)",
         lambda c: _config(batch_size=True), V, r"TrainConfig\.batch_size must be a positive integer, got True"),
    Case("config-zero-lr", "train", "TrainConfig(lr=0)",
         lambda c: _config(lr=0.0), V, r"TrainConfig\.lr must be a finite number > 0, got 0"),
    Case("config-infinite-lr", "train", "TrainConfig(lr=inf)",
         lambda c: _config(lr=float("inf")), V, r"TrainConfig\.lr must be a finite number > 0, got inf"),
    Case("config-nan-grad-clip", "train", "TrainConfig(grad_clip=nan)",
         lambda c: _config(grad_clip=float("nan")), V, r"TrainConfig\.grad_clip must be a finite number >= 0, got nan"),
    Case("config-min-lr-ratio", "train", "TrainConfig(min_lr_ratio=2)",
         lambda c: _config(min_lr_ratio=2.0), V, r"TrainConfig\.min_lr_ratio must lie in \[0, 1\], got 2"),
    Case("config-premetric-times-not-dividing", "train", "TrainConfig(batch_size=256, premetric_times=3)",
         lambda c: _config(batch_size=256, premetric_times=3), V,
         r"TrainConfig\.batch_size \(256\) must be a multiple of premetric_times \(3\)"),
    Case("config-premetric-tail-negative", "train", "TrainConfig(premetric_tail=-1)",
         lambda c: _config(premetric_tail=-1), V, r"TrainConfig\.premetric_tail must be a non-negative integer, got -1"),
    Case("config-premetric-chunk-zero", "train", "TrainConfig(premetric_chunk=0)",
         lambda c: _config(premetric_chunk=0), V, r"TrainConfig\.premetric_chunk must be a positive integer, got 0"),
    Case("path-premetric-grid-of-other-pairs", "paths", "PremetricPath.sample_times(x0[:2], x1[:2], t, grid=<3 pairs' solve_grid>)",
         lambda c: _foreign_grid(), V, r"`grid` states must have shape \(5, 2, 3\) .*got \(5, 3, 3\)"),
    Case("config-chiral-not-bool", "train", "TrainConfig(chiral='yes')",
         lambda c: _config(chiral="yes"), V, r"TrainConfig\.chiral must be a bool, got 'yes'"),
    Case("config-fourier-features-negative", "train", "TrainConfig(fourier_features=-4)",
         lambda c: _config(fourier_features=-4), V, r"TrainConfig\.fourier_features must be an integer >= 0, got -4"),
    Case("config-fourier-scale-zero", "train", "TrainConfig(fourier_scale=0)",
         lambda c: _config(fourier_scale=0.0), V, r"TrainConfig\.fourier_scale must be a finite number > 0, got 0\.0"),
    Case("train-fourier-features-on-egnn", "train", "build_model with fourier_features on a particle dataset (EGNN)",
         lambda c: build_model(_config(fourier_features=8), M.CoMFree(4, 2)), V,
         r"fourier_features apply to MLP velocity networks, not model 'egnn'"),
    Case("nn-fourier-scale-nan", "nn", "ManifoldFeatures(manifold, fourier=8, fourier_scale=nan)",
         lambda c: ManifoldFeatures(_S2, 8, float("nan")), V, r"`fourier_scale` must be a finite number > 0, got nan"),
    Case("nn-chiral-egnn-in-2d", "nn", "EGNNVelocity(chiral=True) on 2-D particles (cross products need 3-D)",
         lambda c: _chiral_2d(), V, r"EGNNVelocity\(chiral=True\) needs 3-D positions.*got dimension 2"),
    Case("config-unknown-activation", "train", "TrainConfig(activation='swish')",
         lambda c: _config(activation="swish"), V, r"TrainConfig\.activation must be one of .*'silu'.*got 'swish'"),
    Case("config-unknown-scheduler", "train", "TrainConfig(scheduler='vp')",
         lambda c: _config(scheduler="vp"), V, r"TrainConfig\.scheduler must be one of \('condot', 'cosine'\), got 'vp'"),
    Case("config-unknown-nll-method", "train", "TrainConfig(nll_method='rk5')",
         lambda c: _config(nll_method="rk5"), V, r"TrainConfig\.nll_method must be one of .*got 'rk5'"),
    Case("config-ema-decay-one", "train", "TrainConfig(ema_decay=1)",
         lambda c: _config(ema_decay=1.0), V, r"TrainConfig\.ema_decay must lie in \[0, 1\), got 1"),
    Case("config-unknown-device", "train", "TrainConfig(device='gpu')",
         lambda c: _config(device="gpu"), V,
         r"TrainConfig\.device must be 'auto', 'cpu', 'cuda' or 'cuda:N' \(N a GPU index\), got 'gpu'; use 'auto'"),
    Case("trainer-missing-gpu", "train", "Trainer(TrainConfig(device='cuda:99')) (no such GPU here)",
         lambda c: Trainer(_tiny_config(c.tmp / "gpu", device="cuda:99")), V,
         r"TrainConfig\.device 'cuda:99' (needs a CUDA GPU, and torch sees none|names GPU 99, but this machine has \d+)"),
    Case("config-unknown-field", "train", "TrainConfig.from_dict with a misspelt field",
         lambda c: TrainConfig.from_dict({"stepz": 3}), V,
         r"unknown TrainConfig fields \['stepz'\]"),
    Case("trainer-unknown-dataset", "train", "Trainer(TrainConfig(dataset='nope'))",
         lambda c: Trainer(_tiny_config(c.tmp / "t", dataset="nope")), V,
         r"unknown dataset 'nope'; valid names:"),
    Case("config-unknown-coupling", "train", "TrainConfig(coupling='sinkhorn')",
         lambda c: _config(coupling="sinkhorn"), V,
         r"TrainConfig\.coupling must be one of \('independent', 'ot', 'ot-sinkhorn', 'alignment', 'ot-align', 'alignment-perm'\), got 'sinkhorn'"),
    Case("trainer-alignment-on-sphere", "train", "coupling 'alignment' on a dataset on the sphere",
         lambda c: Trainer(_tiny_config(c.tmp / "al", coupling="alignment")), V,
         r"coupling 'alignment' needs a particle dataset \(dw4, lj13, lj55\), got Sphere"),
    Case("trainer-alignment-perm-on-sphere", "train", "coupling 'alignment-perm' on a dataset on the sphere",
         lambda c: Trainer(_tiny_config(c.tmp / "ap", coupling="alignment-perm")), V,
         r"coupling 'alignment-perm' needs a particle dataset \(dw4, lj13, lj55\), got Sphere"),
    Case("trainer-tfn-on-2d-particles", "train", "model 'tfn' on DW4's 2-D particles",
         lambda c: build_model(_config(model="tfn"), M.CoMFree(4, 2)), V,
         r"model 'tfn' needs 3-D particles, got CoMFree\(n_particles=4, dim=2\); use model 'egnn'"),
    Case("trainer-mlp-on-particles", "train", "model 'mlp' (not equivariant) on a particle dataset",
         lambda c: build_model(_config(model="mlp"), M.CoMFree(4, 2)), V,
         r"model 'mlp' is not equivariant; particle datasets take model 'egnn' or 'tfn'"),
    Case("trainer-ddp-batch-not-divisible", "train", "global batch 33 over 2 processes",
         lambda c: Trainer(_tiny_config(c.tmp / "ddp", batch_size=33), dist=DistInfo(rank=0, world_size=2)), V,
         r"batch_size 33 is the global batch and must be divisible by the number of processes \(2\); use e\.g\. --batch-size 32"),
    Case("data-corrupt-lj-cache", "data", "a corrupt cached LJ13 training file",
         lambda c: _with_cache(c, b"garbage", lambda: load_dataset("lj13", n_samples=16)), V,
         r"lj13-train-16-v1\.npy: corrupt cached LJ data .*; delete the file to regenerate it"),
    # ---------------------------------------------------------------- checkpoints
    Case("checkpoint-missing", "checkpoints", "load_checkpoint of a file that does not exist",
         lambda c: load_checkpoint(c.tmp / "none.pt"),
         FileNotFoundError, r"checkpoint '.*none\.pt' does not exist"),
    Case("checkpoint-truncated", "checkpoints", "a checkpoint cut to a third of its bytes",
         lambda c: _load_model(c.file("trunc.pt", c.checkpoint.read_bytes()[: c.checkpoint.stat().st_size // 3])), V,
         r"checkpoint '.*trunc\.pt' is truncated or not a torch file"),
    Case("checkpoint-empty-file", "checkpoints", "an empty checkpoint file",
         lambda c: _load_model(c.file("empty.pt", b"")), V, r"checkpoint '.*empty\.pt' is truncated or not a torch file"),
    Case("checkpoint-foreign-pickle", "checkpoints", "a plain pickle (not torch.save) as a checkpoint",
         lambda c: _load_model(c.file("pickle.pt", pickle.dumps({"model": {}, "step": 1}))), V,
         r"checkpoint '.*pickle\.pt' is truncated or not a torch file"),
    Case("checkpoint-foreign-torch-file", "checkpoints", "a torch.save'd tensor as a checkpoint",
         lambda c: (torch.save(torch.zeros(3), c.tmp / "tensor.pt"), _load_model(c.tmp / "tensor.pt")), V,
         r"'.*tensor\.pt' is not a geoflow checkpoint \(no format tag 'geoflow-checkpoint'\)"),
    Case("checkpoint-future-version", "checkpoints", "a checkpoint with format version 99",
         lambda c: _load_model(c.doctored("v99.pt", lambda s: s.update(version=99))), V,
         r"checkpoint '.*v99\.pt' has format version 99; this geoflow reads version 1"),
    Case("checkpoint-missing-key", "checkpoints", "a checkpoint without its 'model' entry",
         lambda c: _load_model(c.doctored("nomodel.pt", lambda s: s.pop("model"))), V,
         r"checkpoint '.*nomodel\.pt' lacks the keys \['model'\]"),
    Case("checkpoint-other-manifold", "checkpoints", "a checkpoint whose manifold says Sphere(n=5), its dataset on S^2",
         lambda c: _load_model(c.doctored("man.pt", lambda s: s.update(manifold="Sphere(n=5)"))), V,
         r"is for Sphere\(n=5\), but its dataset is on Sphere\(n=2\)"),
    Case("checkpoint-other-dataset", "checkpoints", "a sphere checkpoint whose config names the rna dataset (T^7)",
         lambda c: _load_model(c.doctored("ds.pt", lambda s: s["config"].update(dataset="rna"))), V,
         r"is for Sphere\(n=2\), but its dataset is on FlatTorus\(n=7\)"),
    Case("checkpoint-bad-config", "checkpoints", "a checkpoint whose config has steps = 0",
         lambda c: _load_model(c.doctored("cfg.pt", lambda s: s["config"].update(steps=0))), V,
         r"TrainConfig\.steps must be a positive integer, got 0"),
    Case("checkpoint-weights-do-not-fit", "checkpoints", "a checkpoint whose weights do not fit the model of its config",
         lambda c: _load_model(c.doctored("w.pt", _shrink_weights)), V, r"weights do not fit"),
    Case("resume-other-manifold", "checkpoints", "resuming into a folder whose last.pt was trained on T^2",
         _resume_on_other_manifold, V, r"was trained on FlatTorus\(n=2\), but dataset 'vmf_mixture' lives on Sphere\(n=2\)"),
    # ---------------------------------------------------------------- command line
    Case("cli-unknown-dataset", "cli", "geoflow train nope",
         lambda c: _cli("train", "nope", "--out", c.tmp / "x"), C,
         r"exit 2: geoflow train: error: unknown dataset 'nope'; valid names: volcano"),
    Case("cli-zero-steps", "cli", "geoflow train volcano --steps 0",
         lambda c: _cli("train", "volcano", "--steps", "0"), C,
         r"exit 2: geoflow train: error: argument --steps: expected a positive integer, got 0"),
    Case("cli-unknown-scheduler", "cli", "geoflow train volcano --scheduler vp",
         lambda c: _cli("train", "volcano", "--scheduler", "vp"), C,
         r"exit 2: .*argument --scheduler: invalid choice: 'vp' \(choose from '?condot'?, '?cosine'?\)"),
    Case("cli-negative-lr", "cli", "geoflow train volcano --lr -1",
         lambda c: _cli("train", "volcano", "--lr", "-1", "--out", c.tmp / "x"), C, r"exit 2: .*TrainConfig\.lr must be a finite number > 0, got -1"),
    Case("cli-n-samples-too-small", "cli", "geoflow train volcano --n-samples 5",
         lambda c: _cli("train", "volcano", "--n-samples", "5", "--out", c.tmp / "x"), C, r"exit 2: .*`n_samples` must be >= 10"),
    Case("cli-affine-path-on-sphere", "cli", "geoflow train vmf_mixture --path affine",
         lambda c: _cli(*_TRAIN, "--path", "affine", "--out", c.tmp / "x"), C,
         r"exit 2: .*path 'affine' needs flat space, but the dataset lives on Sphere\(n=2\)"),
    Case("cli-sample-missing-checkpoint", "cli", "geoflow sample missing.pt",
         lambda c: _cli("sample", c.tmp / "missing.pt"), C, r"exit 2: geoflow sample: error: checkpoint '.*missing\.pt' does not exist"),
    Case("cli-guidance-unconditional", "cli", "geoflow sample --guidance 2 on an unlabelled (sphere) model",
         lambda c: _cli("sample", c.checkpoint, "--guidance", "2", "--n", "2", "--steps", "1", "--out", c.tmp / "s.pt"), C,
         r"exit 2: .*--label and --guidance need a class-conditional model"),
    Case("cli-nll-truncated", "cli", "geoflow nll on a truncated checkpoint",
         lambda c: _cli("nll", c.file("trunc2.pt", c.checkpoint.read_bytes()[:100])), C,
         r"exit 2: geoflow nll: error: checkpoint '.*trunc2\.pt' is truncated or not a torch file"),
    Case("cli-nll-other-manifold", "cli", "geoflow nll on a checkpoint doctored to Sphere(n=5)",
         lambda c: _cli("nll", c.doctored("man2.pt", lambda s: s.update(manifold="Sphere(n=5)")), "--steps", "2"), C,
         r"exit 2: .*is for Sphere\(n=5\), but its dataset is on Sphere\(n=2\)"),
    Case("cli-nll-weights-do-not-fit", "cli", "geoflow nll on a checkpoint whose weights do not fit its config",
         lambda c: _cli("nll", c.doctored("w2.pt", _shrink_weights), "--steps", "2"), C, r"exit 2: .*weights do not fit"),
    Case("cli-resume-different-config", "cli", "rerunning geoflow train into a folder written with another config",
         lambda c: _cli(*_TRAIN, "--out", c.checkpoint.parent, "--lr", "0.5"), C,
         r"exit 2: .*last\.pt was written with a different config \{.*'lr': \(0\.001, 0\.5\)"),
    Case("cli-unknown-device", "cli", "geoflow train vmf_mixture --device tpu",
         lambda c: _cli(*_TRAIN, "--device", "tpu", "--out", c.tmp / "x"), C,
         r"exit 2: geoflow train: error: TrainConfig\.device must be 'auto', 'cpu', 'cuda' or 'cuda:N'.*got 'tpu'"),
    Case("cli-nll-unknown-device", "cli", "geoflow nll CKPT --device gpu",
         lambda c: _cli("nll", c.checkpoint, "--device", "gpu"), C,
         r"exit 2: geoflow nll: error: --device must be 'auto', 'cpu', 'cuda' or 'cuda:N'.*got 'gpu'"),
    Case("cli-unknown-command", "cli", "geoflow fit",
         lambda c: _cli("fit"), C, r"exit 2: geoflow: error: argument COMMAND: invalid choice: 'fit'"),
]


# ----------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return Ctx(tmp_path_factory.mktemp("bad_inputs"))


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.id, marks=marks)


def test_the_table_is_well_formed():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    assert len(CASES) >= 35
    for c in CASES:
        assert re.fullmatch(r"[a-z0-9-]+", c.id), c.id
        re.compile(c.match)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_gives_a_clear_error(case: Case, ctx: Ctx):
    with pytest.raises(case.exc) as info:
        case.call(ctx)
    msg = str(info.value)
    assert re.search(case.match, msg, flags=re.S), f"{case.id}: message {msg!r} does not match {case.match!r}"
    assert "Traceback" not in msg


# ----------------------------------------------------------------------------- docs
def render_markdown(cases=CASES) -> str:
    """docs/bad_inputs.md, generated from ``CASES``."""

    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    def code(s: str) -> str:  # inline code that may itself hold backticks
        return f"`` {cell(s)} ``" if "`" in s else f"`{cell(s)}`"

    lines = [
        "# Bad inputs, tried on purpose",
        "",
        "<!-- generated by `python -m tests.test_bad_inputs` from the table in tests/test_bad_inputs.py; do not edit -->",
        "",
        "Each row is a test in `tests/test_bad_inputs.py`: the bad input is fed to geoflow and the error",
        "must be of the given type with a message matching the pattern (it names the argument and says",
        "what was expected). On the command line (`geoflow ...`) the process exits with status 2 and",
        "prints the message on stderr. Rows marked *known gap* give a poor message today; the test is a",
        "strict xfail and its reason holds the proposed fix.",
        "",
        f"{len(cases)} cases ({sum(c.xfail is not None for c in cases)} known gaps).",
        "",
    ]
    areas = list(dict.fromkeys(c.area for c in cases))
    for area in areas:
        lines += [f"## {area}", "", "| id | bad input | error | message matches |", "|---|---|---|---|"]
        for c in cases:
            if c.area != area:
                continue
            err = "exit status 2" if c.exc is CLIError else f"`{c.exc.__name__}`"
            gap = " (*known gap*)" if c.xfail else ""
            lines.append(f"| `{c.id}`{gap} | {cell(c.what)} | {err} | {code(c.match)} |")
        lines.append("")
    gaps = [c for c in cases if c.xfail]
    if gaps:
        lines += ["## Known gaps and proposed fixes", ""]
        lines += [f"- `{c.id}`: {cell(c.xfail)}" for c in gaps]
        lines.append("")
    return "\n".join(lines)


def test_docs_list_every_case():
    assert DOC.exists(), f"{DOC} is missing; run `python -m tests.test_bad_inputs`"
    text = DOC.read_text()
    missing = [c.id for c in CASES if f"`{c.id}`" not in text]
    assert not missing, f"{DOC.name} lacks {missing}; run `python -m tests.test_bad_inputs`"
    assert text == render_markdown(), f"{DOC.name} is out of date; run `python -m tests.test_bad_inputs`"


if __name__ == "__main__":
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(render_markdown())
    print(f"wrote {DOC} ({len(CASES)} cases)", file=sys.stderr)
