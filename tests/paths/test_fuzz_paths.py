"""Hypothesis hunts for NaN/inf in geodesic path samples and the RCFM loss at the hard points.

For every manifold of ``tests/manifolds/cases.py``, pairs (x0, x1) are drawn at the hard places
of ``tests/manifolds/hard_points.py`` (x0 == x1, nearby, antipodal / seam / ball edge / nearly
singular / rotation by nearly pi, random) in float32 and float64.  The batch always holds
t = 0 and t = 1 exactly, next to the drawn t.  Checked: ``GeodesicPath.sample`` gives finite
x_t and dx_t (and passes its own on-manifold validation), and ``rcfm_loss`` with a small fixed
``MLPVelocity`` is finite with finite gradients w.r.t. the network's parameters, x0 and x1
(except in float32 on the hyperboloid beyond |x| = 1e9, see ``LORENTZ_FLOAT32_MAX_NORM``).

CI runs the "ci" profile; ``HYPOTHESIS_PROFILE=long`` (or ``benchmarks/fuzz_long.py``) runs
100 000 draws per manifold.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from geoflow.losses import rcfm_loss
from geoflow.nn import MLPVelocity
from geoflow.paths import CondOTScheduler, CosineScheduler, GeodesicPath

from ..manifolds.cases import CASES
from ..manifolds.hard_points import DRAWS, hard_pair, load_profile

load_profile()

SCHEDULERS = {"condot": CondOTScheduler(), "cosine": CosineScheduler()}
#: The shared hard-point draws plus the path's scheduler.
PATH_DRAWS = dict(DRAWS, scheduler=st.sampled_from(sorted(SCHEDULERS)))

_MODELS: dict = {}

#: float32 on the hyperboloid beyond |x| ~ 1e9 (geodesic distance ~ 20 from the origin): a generic
#: network output u of size ~|x| projects to u + <x, u>_L x / k of size ~|x|^3, and its squared
#: metric norm in the loss overflows float32 (the geometry itself stays finite there; the hunt
#: of tests/manifolds/test_hard_points.py checks it).  The loss check is skipped at such points.
LORENTZ_FLOAT32_MAX_NORM = 1e9


def _network_check_applies(m, dtype, *points) -> bool:
    if dtype != torch.float32 or type(m).__name__ != "Lorentz":
        return True
    return max(float(p.detach().abs().max()) for p in points) <= LORENTZ_FLOAT32_MAX_NORM


def _model(name: str, m, dtype: torch.dtype) -> MLPVelocity:
    """A small MLPVelocity per manifold and dtype, with fixed weights (seeded), reused across draws."""
    key = (name, dtype)
    if key not in _MODELS:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            _MODELS[key] = MLPVelocity(m, hidden=16, depth=2, time_dim=8).to(dtype)
    return _MODELS[key]


def check_path_and_loss_at_hard_point(name, kind, eps, seed, dtype, t, scheduler="condot", *, m=None):
    """GeodesicPath.sample and rcfm_loss: finite values and gradients at a hard pair (t = 0, 1, t, t)."""
    m = CASES[name]() if m is None else m
    x0, x1 = hard_pair(m, kind, eps, seed, dtype)
    x0 = x0.detach().requires_grad_()
    x1 = x1.detach().requires_grad_()
    times = torch.tensor([0.0, 1.0, t, t], dtype=dtype)
    where = (name, kind, eps, str(dtype), t, scheduler)
    s = GeodesicPath(m, SCHEDULERS[scheduler]).sample(x0, x1, times)
    assert torch.isfinite(s.x_t).all() and torch.isfinite(s.dx_t).all(), ("path", *where)
    # the path's velocity alone (no network) must have finite gradients
    (g0, g1) = torch.autograd.grad(m.inner(s.x_t, s.dx_t).sum() + s.x_t.sum(), (x0, x1), allow_unused=True,
                                   retain_graph=True)
    for g in (g0, g1):
        assert g is None or torch.isfinite(g).all(), ("path grad", *where)
    if not _network_check_applies(m, dtype, x0, x1, s.x_t):
        return
    model = _model(name, m, dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    loss = rcfm_loss(m, model, s)
    assert torch.isfinite(loss), ("loss", float(loss), *where)
    grads = torch.autograd.grad(loss, [*params, x0, x1], allow_unused=True)
    bad = [i for i, g in enumerate(grads) if g is not None and not torch.isfinite(g).all()]
    assert not bad, ("grad", ["param" if i < len(params) else ("x0", "x1")[i - len(params)] for i in bad], *where)


@pytest.mark.parametrize("name", sorted(CASES))
@given(**PATH_DRAWS)
def test_path_and_loss_finite_at_hard_points(name, kind, eps, seed, dtype, t, scheduler):
    check_path_and_loss_at_hard_point(name, kind, eps, seed, dtype, t, scheduler)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind", ["same", "far"])
def test_path_and_loss_finite_at_the_hardest_points(name, dtype, kind):
    """The hardest draws, always run (not left to chance): x0 == x1 and the far end at eps = 0 and 1e-7."""
    for eps, scheduler in ((0.0, "condot"), (1e-7, "cosine")):
        check_path_and_loss_at_hard_point(name, kind, eps, 0, dtype, 0.5, scheduler)


@pytest.mark.parametrize("seed, t, scheduler", [(2316, 0.999999, "cosine"), (2047, 1e-6, "condot")])
def test_path_and_loss_finite_at_the_long_fuzz_finds(seed, t, scheduler):
    """Draws that the 10^5-draw hunt (benchmarks/fuzz_long.py, paths suite) found on SPD(3) affine: float32, x1 with
    eigenvalues ~1e-6 and x0 with eigenvalues up to 36; the geodesic evaluated from x0's frame came back indefinite
    at t = 1 and the loss's gradients overflowed (fixed: SPD evaluates it from the nearer end)."""
    check_path_and_loss_at_hard_point("spd3_affine", "far", 1e-9, seed, torch.float32, t, scheduler)
