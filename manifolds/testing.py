"""The geometry property suite, public so users can test their own manifolds as we test ours.

>>> from manifolds import Sphere
>>> from manifolds.testing import assert_manifold
>>> assert_manifold(Sphere(2), dtype=torch.float64)  # doctest: +SKIP

Each check raises ``AssertionError`` naming the property, the manifold and the size of the
violation.  Tolerances come from one table (:data:`TOLERANCES`), scaled only by the
magnitude of the quantity compared.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .base import Manifold

__all__ = ["TOLERANCES", "assert_manifold", "check_normalised", "tangent_basis", "random_tangent"]

#: Absolute/relative tolerance per dtype used by every check of the suite.
TOLERANCES = {torch.float32: 2e-4, torch.float64: 1e-9}


def _fail(manifold, prop: str, err: float, tol: float, extra: str = "") -> None:
    raise AssertionError(f"{manifold!r}: {prop} violated: error {err:.3g} > tolerance {tol:.3g}{extra}")


def _close(manifold, prop, a, b, tol) -> None:
    a, b = torch.broadcast_tensors(a, b)
    err = (a - b).abs()
    scale = 1.0 + b.abs()
    bad = err / scale
    worst = float(bad.max()) if bad.numel() else 0.0
    if not math.isfinite(worst) or worst > tol:
        _fail(manifold, prop, worst, tol)


def _point_dist(manifold, a, b) -> torch.Tensor:
    return manifold.dist(a, b)


def random_tangent(manifold: Manifold, x: torch.Tensor, *, generator=None, max_norm: Optional[float] = None) -> torch.Tensor:
    """Tangent vectors at ``x`` with Riemannian norm uniform in (0, max_norm).

    ``max_norm`` defaults to 0.9 times the manifold's injectivity radius (and at most 2).
    """
    if max_norm is None:
        max_norm = 0.9 * min(float(getattr(manifold, "injectivity_radius", math.inf)), 2.0 / 0.9)
    w = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    u = manifold.proju(x, w)
    n = manifold.norm(x, u, keepdim=True)
    n = n.reshape(n.shape[: x.dim() - manifold.ndim] + (1,) * manifold.ndim)
    r = torch.rand(n.shape, generator=generator, dtype=x.dtype, device=x.device) * max_norm
    return u / n.clamp_min(1e-12) * r


def tangent_basis(manifold: Manifold, x: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis (w.r.t. ``manifold.inner``) of the tangent space at one point ``x``.

    Built from the projected ambient coordinate vectors by Gram-Schmidt; shape ``(dim, *point_shape)``.
    """
    shape = tuple(manifold.point_shape)
    D = math.prod(shape)
    basis = []
    for k in range(D):
        e = torch.zeros(D, dtype=x.dtype, device=x.device)
        e[k] = 1.0
        v = manifold.proju(x, e.reshape(shape))
        for b in basis:
            v = v - manifold.inner(x, v, b) * b
        nv = manifold.norm(x, v)
        if float(nv) > 1e-6:
            v = v / nv
            for b in basis:  # re-orthogonalise once for stability
                v = v - manifold.inner(x, v, b) * b
            basis.append(v / manifold.norm(x, v))
        if len(basis) == manifold.dim:
            break
    if len(basis) != manifold.dim:
        raise AssertionError(f"{manifold!r}: projected ambient vectors span {len(basis)} dims, expected dim={manifold.dim}")
    return torch.stack(basis)


def _log_volume_element(manifold: Manifold, o: torch.Tensor, E: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """log sqrt(det G(v)), G_ij = <d_i exp_o(E^T v), d_j exp_o(E^T v)> at exp_o(E^T v), for a batch v (N, dim)."""

    def chart(vi):
        u = torch.tensordot(vi, E, dims=1)
        return manifold.expmap(o, u)

    def one(vi):
        J = torch.func.jacfwd(chart)(vi)  # (*point_shape, dim)
        x = chart(vi)
        cols = J.movedim(-1, 0)  # (dim, *point_shape)
        G = manifold.inner(x.expand_as(cols), cols.unsqueeze(1), cols.unsqueeze(0))  # (dim, dim)
        return 0.5 * torch.logdet(G)

    return torch.func.vmap(one)(v)


def check_normalised(
    manifold: Manifold,
    *,
    dtype=torch.float64,
    n_samples: int = 20000,
    seed: int = 0,
    chart: Optional[tuple] = None,
    origin: Optional[torch.Tensor] = None,
    rtol: float = 0.03,
) -> float:
    """Check that exp(base_log_prob) integrates to one, by Monte Carlo in exponential coordinates.

    Tangent coordinates v at ``origin`` map to points x = exp_origin(sum_i v_i e_i) with an
    orthonormal basis e; the Riemannian volume there is sqrt(det G(v)) dv with G the pulled-back
    metric (computed by forward-mode autodiff of ``expmap``).  ``chart`` gives the domain of v on
    which exp is one-to-one and covers the manifold up to measure zero:
    ``("ball", R)`` (sphere, SO(3): R = pi), ``("cube", R)`` (flat torus: R = pi), or
    ``("gaussian", s)`` for manifolds where exp at the origin is a global diffeomorphism
    (Euclidean, hyperbolic, SPD): v ~ N(0, s^2 I) as the proposal.  Defaults come from the
    manifold's ``normalisation_chart`` attribute.  Returns the estimate of the integral.
    """
    g = torch.Generator().manual_seed(seed)
    if chart is None:
        chart = getattr(manifold, "normalisation_chart", ("gaussian", 1.5))
    kind, R = chart
    if origin is None:
        origin = getattr(manifold, "base_origin", None)
        origin = origin(dtype=dtype) if callable(origin) else manifold.random_base(generator=g, dtype=dtype)
    o = origin.to(dtype)
    E = tangent_basis(manifold, o)
    d = manifold.dim
    if kind == "ball":
        z = torch.randn(n_samples, d, generator=g, dtype=dtype)
        z = z / z.norm(dim=-1, keepdim=True)
        r = R * torch.rand(n_samples, 1, generator=g, dtype=dtype) ** (1.0 / d)
        v = z * r
        log_q = -(math.log(math.pi ** (d / 2) / math.gamma(d / 2 + 1)) + d * math.log(R))
        log_q = torch.full((n_samples,), log_q, dtype=dtype)
    elif kind == "cube":
        v = (2 * torch.rand(n_samples, d, generator=g, dtype=dtype) - 1) * R
        log_q = torch.full((n_samples,), -d * math.log(2 * R), dtype=dtype)
    elif kind == "gaussian":
        v = R * torch.randn(n_samples, d, generator=g, dtype=dtype)
        log_q = -0.5 * (v / R).pow(2).sum(-1) - d * math.log(R) - 0.5 * d * math.log(2 * math.pi)
    else:
        raise ValueError(f"check_normalised: unknown chart kind {kind!r}; use 'ball', 'cube' or 'gaussian'")
    x = manifold.expmap(o, torch.tensordot(v, E, dims=1))
    log_vol = _log_volume_element(manifold, o, E, v)
    logw = manifold.base_log_prob(x) + log_vol - log_q
    if not bool(torch.isfinite(logw).all()):
        raise AssertionError(f"{manifold!r}: base_log_prob or the volume element is not finite on the chart")
    w = logw.exp()
    est = float(w.mean())
    se = float(w.std() / math.sqrt(n_samples))
    if abs(est - 1.0) > max(rtol, 4 * se):
        raise AssertionError(
            f"{manifold!r}: base_log_prob is not normalised: integral estimate {est:.4f} +- {se:.4f} (expected 1)"
        )
    return est


def assert_manifold(
    manifold: Manifold,
    *,
    dtype=torch.float64,
    batch: int = 64,
    seed: int = 0,
    tol: Optional[float] = None,
    normalisation: bool = True,
    gradcheck: bool = True,
) -> None:
    """Run the geometry property suite on ``manifold`` in ``dtype``.

    Checks: random_base lands on the manifold; projx idempotent and fixing points; proju
    tangent and idempotent; expmap lands on the manifold; log(x, exp(x, u)) == u inside the
    injectivity radius; log(x, x) == 0; dist(x, exp(x, u)) == |u|_x; dist symmetric, zero on
    the diagonal, triangle inequality; inner symmetric; geodesic endpoints and constant speed
    d(x0, gamma(t)) = t d(x0, x1); finite values; base_log_prob normalised (Monte Carlo,
    float64 only, see :func:`check_normalised`); ``torch.autograd.gradcheck`` of expmap, logmap
    and dist (float64 only).
    """
    tol = TOLERANCES.get(dtype, 1e-4) if tol is None else tol
    g = torch.Generator().manual_seed(seed)
    m = manifold

    x = m.random_base(batch, generator=g, dtype=dtype)
    if tuple(x.shape) != (batch, *m.point_shape):
        raise AssertionError(f"{m!r}: random_base({batch}) has shape {tuple(x.shape)}, expected {(batch, *m.point_shape)}")
    if x.dtype != dtype:
        raise AssertionError(f"{m!r}: random_base(dtype={dtype}) returned {x.dtype}")
    m.check_point(x)
    y = m.random_base(batch, generator=g, dtype=dtype)

    # projx: fixes points, idempotent on perturbed points
    _close(m, "projx(x) == x on the manifold", m.projx(x), x, tol)
    z = m.projx(x + 0.05 * torch.randn(x.shape, generator=g, dtype=dtype))
    m.check_point(z)
    _close(m, "projx idempotent", m.projx(z), z, tol)

    # proju: tangent and idempotent
    w = torch.randn(x.shape, generator=g, dtype=dtype)
    pu = m.proju(x, w)
    m.check_vector(x, pu)
    _close(m, "proju idempotent", m.proju(x, pu), pu, tol)

    # inner symmetric, norm consistent
    u = random_tangent(m, x, generator=g)
    v = random_tangent(m, x, generator=g)
    _close(m, "inner symmetric", m.inner(x, u, v), m.inner(x, v, u), tol)
    _close(m, "norm^2 == inner(u, u)", m.norm(x, u) ** 2, m.inner(x, u, u), tol)

    # exp / log
    xu = m.expmap(x, u)
    m.check_point(xu)
    _close(m, "logmap(x, expmap(x, u)) == u", m.logmap(x, xu), u, tol * 10)
    _close(m, "logmap(x, x) == 0", m.logmap(x, x), torch.zeros_like(x), tol)
    m.check_vector(x, m.logmap(x, y), atol=tol * 10, rtol=tol * 10)
    _close(m, "dist(x, expmap(x, u)) == norm(x, u)", m.dist(x, xu), m.norm(x, u), tol * 10)
    _close(m, "expmap(x, logmap(x, x1)) == x1", m.dist(m.expmap(x, m.logmap(x, xu)), xu), torch.zeros(batch, dtype=dtype), tol * 10)

    # dist: zero on diagonal, symmetric, triangle inequality
    _close(m, "dist(x, x) == 0", m.dist(x, x), torch.zeros(batch, dtype=dtype), tol)
    dxy, dyx = m.dist(x, y), m.dist(y, x)
    _close(m, "dist symmetric", dxy, dyx, tol)
    if bool((dxy < 0).any()):
        raise AssertionError(f"{m!r}: dist returned negative values")
    zz = m.random_base(batch, generator=g, dtype=dtype)
    slack = (m.dist(x, zz) - dxy - m.dist(y, zz)).max()
    if float(slack) > tol * 10 * (1 + float(dxy.max())):
        _fail(m, "triangle inequality", float(slack), tol * 10)

    # geodesic: endpoints and constant speed (inside the injectivity radius)
    x1 = xu
    d01 = m.dist(x, x1)
    _close(m, "geodesic(x0, x1, 0) == x0", m.dist(m.geodesic(x, x1, 0.0), x), torch.zeros(batch, dtype=dtype), tol * 10)
    _close(m, "geodesic(x0, x1, 1) == x1", m.dist(m.geodesic(x, x1, 1.0), x1), torch.zeros(batch, dtype=dtype), tol * 10)
    t = torch.rand(batch, generator=g, dtype=dtype)
    xt = m.geodesic(x, x1, t)
    m.check_point(xt)
    _close(m, "constant speed d(x0, gamma(t)) == t d(x0, x1)", m.dist(x, xt), t * d01, tol * 10)
    _close(m, "constant speed d(gamma(t), x1) == (1 - t) d(x0, x1)", m.dist(xt, x1), (1 - t) * d01, tol * 10)

    # base log-prob: finite, right shape
    lp = m.base_log_prob(x)
    if tuple(lp.shape) != (batch,) or not bool(torch.isfinite(lp).all()):
        raise AssertionError(f"{m!r}: base_log_prob must be finite with shape ({batch},), got {tuple(lp.shape)}")

    if dtype == torch.float64 and normalisation:
        factors = getattr(m, "manifolds", None)
        if factors is not None and hasattr(m, "_split"):
            # Products: each factor is normalised on its own chart, and the log-density is additive.
            for f in factors:
                check_normalised(f, dtype=dtype, seed=seed)
            parts = m._split(x)
            _close(m, "base_log_prob additive over factors", lp, sum(f.base_log_prob(p) for f, p in zip(factors, parts)), tol)
        else:
            check_normalised(m, dtype=dtype, seed=seed)

    if dtype == torch.float64 and gradcheck:
        k = 4
        xs, us, ys = x[:k].clone().requires_grad_(), u[:k].clone().requires_grad_(), y[:k].clone().requires_grad_()
        for name, fn, inputs in [
            ("expmap", m.expmap, (xs, us)),
            ("logmap", m.logmap, (xs, ys)),
            ("dist", m.dist, (xs, ys)),
        ]:
            try:
                ok = torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)
            except Exception as exc:  # gradcheck raises GradcheckError with the mismatch
                raise AssertionError(f"{m!r}: gradcheck of {name} failed: {exc}") from exc
            if not ok:
                raise AssertionError(f"{m!r}: gradcheck of {name} failed")
