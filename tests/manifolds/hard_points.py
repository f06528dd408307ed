"""Pairs of points at the numerically hard places of each manifold (shared by the NaN hunts).

Also the hypothesis strategies (``DRAWS``) and profiles of the hunts: "ci" (25 draws per
manifold, the default) and "long" (100 000 draws; ``HYPOTHESIS_PROFILE=long``, or
``benchmarks/fuzz_long.py``, which records a JSON summary).
"""

import math
import os

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

settings.register_profile("ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck))


def load_profile() -> None:
    """Load the profile named by ``HYPOTHESIS_PROFILE`` ("ci" when unset)."""
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


#: What a hunt draws: the kind of pair, its scale, the seed of the points, the dtype and a time.
DRAWS = dict(
    kind=st.sampled_from(["same", "near", "far", "random"]),
    eps=st.sampled_from([0.0, 1e-12, 1e-9, 1e-7, 1e-5, 1e-3, 1e-2, 0.3]),
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    t=st.sampled_from([0.0, 1e-6, 0.5, 1 - 1e-6, 1.0]),
)


def _unit_tangent(m, x, g):
    w = torch.randn(x.shape, generator=g, dtype=x.dtype)
    u = m.proju(x, w)
    n = m.norm(x, u, keepdim=True)
    n = n.reshape(n.shape[: x.dim() - m.ndim] + (1,) * m.ndim)
    return u / n.clamp_min(1e-30)


def _rot_z(angle, dtype):
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)


def far_point(m, x, eps, g):
    """A point at the hard far end for ``m``: antipode, seam, ball edge, near-singular, rotation by ~pi."""
    name = type(m).__name__
    dtype = x.dtype
    if name == "Sphere":
        return m.projx(-x + eps * _unit_tangent(m, x, g))
    if name == "FlatTorus":
        return m.projx(x + math.pi - eps)
    if name == "PoincareBall":
        r = (1 - eps) / math.sqrt(float(m.c_value if hasattr(m, "c_value") else m.c))
        d = torch.randn(x.shape, generator=g, dtype=dtype)
        return m.projx(r * d / d.norm(dim=-1, keepdim=True))
    if name == "Lorentz":
        return m.expmap(x, (min(1 / eps, 30.0) if eps > 0 else 30.0) * _unit_tangent(m, x, g))
    if name == "SPD":
        n = m.point_shape[-1]
        q, _ = torch.linalg.qr(torch.randn(x.shape, generator=g, dtype=dtype))
        ev = torch.ones(x.shape[:-1], dtype=dtype)
        ev[..., 0] = max(eps, 1e-6 if dtype == torch.float32 else 1e-12)
        if n > 2:
            ev[..., 1] = ev[..., 0]
        return q @ torch.diag_embed(ev) @ q.transpose(-1, -2)
    if name == "SO3":
        return x @ _rot_z(math.pi - eps, dtype)
    if name == "Product":
        parts = [far_point(f, xi, eps, g) for f, xi in zip(m.manifolds, m._split(x))]
        return m._join(parts)
    # Euclidean and anything else: far away
    return x + (1.0 / max(eps, 1e-6)) * _unit_tangent(m, x, g)


def hard_pair(m, kind, eps, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    x = m.random_base(4, generator=g, dtype=dtype)
    if kind == "same":
        y = x.clone()
    elif kind == "near":
        y = m.expmap(x, eps * _unit_tangent(m, x, g))
    elif kind == "far":
        y = far_point(m, x, eps, g)
    else:
        y = m.random_base(4, generator=g, dtype=dtype)
    return x, y


def check_ops_at_hard_point(m, name, kind, eps, seed, dtype, t):
    """exp, log, dist, geodesic, norm, inner, base_log_prob: finite values and gradients at a hard pair."""
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
