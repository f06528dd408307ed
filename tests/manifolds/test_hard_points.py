"""Hypothesis hunts for NaN/inf in values and gradients at every manifold's hard points.

Hard points: x == y, nearby pairs (1e-12 .. 1e-2), and the far end of each manifold
(antipodes on the sphere, the torus seam, the edge of the Poincare ball, far points on the
hyperboloid, nearly singular SPD matrices, rotations by nearly pi), in float32 and float64.
CI runs a small profile; `HYPOTHESIS_PROFILE=long` runs many more draws.
"""

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .cases import CASES
from .hard_points import hard_pair

settings.register_profile("ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_draw = dict(
    kind=st.sampled_from(["same", "near", "far", "random"]),
    eps=st.sampled_from([0.0, 1e-12, 1e-9, 1e-7, 1e-5, 1e-3, 1e-2, 0.3]),
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    t=st.sampled_from([0.0, 1e-6, 0.5, 1 - 1e-6, 1.0]),
)


@pytest.mark.parametrize("name", sorted(CASES))
@given(**_draw)
def test_no_nan_at_hard_points(name, kind, eps, seed, dtype, t):
    m = CASES[name]()
    x, y = hard_pair(m, kind, eps, seed, dtype)
    assert torch.isfinite(x).all() and torch.isfinite(y).all()
    x = x.detach().requires_grad_()
    y = y.detach().requires_grad_()
    d = m.dist(x, y)
    u = m.logmap(x, y)
    z = m.expmap(x, u)
    gt = m.geodesic(x, y, t)
    vals = [d, u, z, gt, m.norm(x, u), m.inner(x, u, u), m.base_log_prob(x), m.base_log_prob(y)]
    for v in vals:
        assert torch.isfinite(v).all(), (name, kind, eps, dtype, [torch.isfinite(w).all().item() for w in vals])
    assert (d >= 0).all()
    total = sum(v.sum() for v in vals)
    gx, gy = torch.autograd.grad(total, (x, y))
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all(), (name, kind, eps, dtype)
