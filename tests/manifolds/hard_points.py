"""Pairs of points at the numerically hard places of each manifold (shared by the NaN hunts)."""

import math

import torch


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
