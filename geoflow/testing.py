"""Public test helpers, so users test their own networks the way geoflow tests its own.

>>> from geoflow.nn import EGNNVelocity
>>> from geoflow.testing import assert_equivariant
>>> assert_equivariant(EGNNVelocity(), n_particles=5)  # doctest: +SKIP

The geometry property suite of manifolds, :func:`manifolds.testing.assert_manifold`, is
re-exported here.
"""

from __future__ import annotations

import copy
from typing import Callable, Optional

import torch

from manifolds.testing import assert_manifold

__all__ = ["assert_equivariant", "assert_manifold", "random_orthogonal"]

#: Default (atol, rtol) of :func:`assert_equivariant` per dtype.
_TOL = {torch.float64: (1e-8, 1e-8), torch.float32: (1e-4, 1e-4)}


def random_orthogonal(batch: int, dim: int, *, proper: bool = True, generator=None, dtype=torch.float64) -> torch.Tensor:
    """Haar-random orthogonal matrices ``(batch, dim, dim)``: rotations (det +1) or, with ``proper=False``, det -1.

    QR of a Gaussian matrix with the signs of R's diagonal moved into Q (Mezzadri 2007), then
    the first column flipped where the determinant has the wrong sign.
    """
    a = torch.randn(batch, dim, dim, generator=generator, dtype=dtype)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    want = 1.0 if proper else -1.0
    flip = torch.where(torch.linalg.det(q) * want < 0, -1.0, 1.0).to(dtype)
    q = q.clone()
    q[..., :, 0] = q[..., :, 0] * flip[:, None]
    return q


def _call(model, x, t, cond):
    out = model(x, t) if cond is None else model(x, t, cond=cond)
    if isinstance(out, (tuple, list)):
        if not out or not isinstance(out[0], torch.Tensor):
            raise AssertionError(f"assert_equivariant: the model returned {type(out).__name__} without a velocity tensor first")
        return out[0], list(out[1:])
    if not isinstance(out, torch.Tensor):
        raise AssertionError(f"assert_equivariant: the model must return a tensor (or a tuple (v, features...)), got {type(out).__name__}")
    return out, []


def _permute(a: Optional[torch.Tensor], perm: torch.Tensor) -> Optional[torch.Tensor]:
    """a[b, perm[b]] for per-configuration permutations ``perm`` ``(B, n)`` of axis 1."""
    if a is None:
        return None
    idx = perm.reshape(perm.shape + (1,) * (a.dim() - 2)).expand(perm.shape + tuple(a.shape[2:]))
    return torch.gather(a, 1, idx)


def _random_permutation(batch: int, n: int, generator) -> torch.Tensor:
    """Per-configuration permutations of n >= 2 items, none of them the identity."""
    perms = []
    ident = torch.arange(n)
    for _ in range(batch):
        p = torch.randperm(n, generator=generator)
        while bool((p == ident).all()):
            p = torch.randperm(n, generator=generator)
        perms.append(p)
    return torch.stack(perms)


def assert_equivariant(
    model: Callable,
    x: Optional[torch.Tensor] = None,
    *,
    n_particles: int = 6,
    dim: int = 3,
    batch: int = 3,
    t=None,
    cond=None,
    reflections: bool = True,
    translations: bool = True,
    permutations: bool = True,
    com_free: bool = False,
    dtype: torch.dtype = torch.float64,
    atol: Optional[float] = None,
    rtol: Optional[float] = None,
    seed: int = 0,
) -> dict:
    """Assert that a velocity network on point clouds is E(d)- (or SE(d)-) and permutation-equivariant.

    With v = model(x, t, cond) of shape ``(B, n, d)`` (optionally followed by per-particle
    invariant outputs f, as in ``(v, f)``), checks per configuration b, with its own random
    transformation:

    * rotations Q (det +1, Haar-random): v(x Q^T) = v(x) Q^T and f(x Q^T) = f(x);
    * reflections (``reflections=True``; Q with det -1): the same; pass False for SE(d)
      (chiral) models;
    * translations (``translations=True``): v(x + c) = v(x) (a velocity is a difference of
      positions, so it is invariant) and f(x + c) = f(x);
    * permutations (``permutations=True``): a real permutation pi of the particles (never the
      identity) applied to x and to the per-particle ``cond``: v(x_pi, cond_pi) = v(x, cond)_pi;
    * ``com_free=True``: the mean of v over the particles is 0.

    The model runs in ``dtype`` (float64 by default, so that errors are round-off, not
    tolerance noise): an ``nn.Module`` is deep-copied, cast and put in eval mode (the caller's
    model is untouched).  A check fails when max |a - b| > atol + rtol max |b|; the
    ``AssertionError`` names the symmetry, the maximum error and the tolerance.

    Args:
        model: callable ``model(x, t)`` or ``model(x, t, cond=cond)``.
        x: configurations ``(B, n, d)``; default: ``batch`` standard normal configurations of
            ``n_particles`` particles in ``dim`` dimensions.
        t: times ``(B,)`` (default uniform in [0, 1]).
        cond: per-particle conditions ``(B, n)`` (ints) or ``(B, n, k)``, permuted with the
            particles; None for none.
        atol, rtol: tolerances (default 1e-8 in float64, 1e-4 in float32).
        seed: seed of the random transformations (and of x, t when drawn).

    Returns:
        dict mapping each checked property to its maximum absolute error.
    """
    __tracebackhide__ = True
    g = torch.Generator().manual_seed(seed)
    if isinstance(model, torch.nn.Module):
        model = copy.deepcopy(model).to(dtype).eval()
    if x is None:
        if isinstance(n_particles, bool) or not isinstance(n_particles, int) or n_particles < 2:
            raise ValueError(f"`n_particles` must be an int >= 2 (a permutation needs two particles), got {n_particles!r}")
        x = torch.randn(batch, n_particles, dim, generator=g, dtype=dtype)
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[1] < 2:
        raise ValueError(f"`x` must be a tensor (batch, n_particles >= 2, d), got {getattr(x, 'shape', type(x).__name__)}")
    device = x.device
    if isinstance(model, torch.nn.Module):
        device = next((p.device for p in model.parameters()), device)
    x = x.detach().to(dtype=dtype, device=device)
    B, n, d = x.shape
    if t is None:
        t = torch.rand(B, generator=g, dtype=dtype)
    t = torch.as_tensor(t).to(dtype=dtype, device=device)
    if isinstance(cond, torch.Tensor):
        cond = cond.to(device=device, dtype=dtype if cond.is_floating_point() else cond.dtype)
    a_def, r_def = _TOL.get(dtype, (1e-4, 1e-4))
    atol = a_def if atol is None else float(atol)
    rtol = r_def if rtol is None else float(rtol)
    name = type(model).__name__ if isinstance(model, torch.nn.Module) else getattr(model, "__name__", repr(model))
    setting = f"({B} configurations of {n} particles in {d}-D, {dtype})"
    errors: dict[str, float] = {}

    def check(what, got, ref):
        if got.shape != ref.shape:
            raise AssertionError(f"assert_equivariant: {name}: {what}: output shape {tuple(got.shape)} != {tuple(ref.shape)}")
        err = float((got - ref).abs().max()) if ref.numel() else 0.0
        tol = atol + rtol * (float(ref.abs().max()) if ref.numel() else 0.0)
        errors[what] = max(errors.get(what, 0.0), err)
        if not (err <= tol):  # also catches NaN
            raise AssertionError(
                f"assert_equivariant: {name} is not {what}: max error {err:.3g} > tolerance {tol:.3g} {setting}"
            )

    with torch.no_grad():
        v, f = _call(model, x, t, cond)
        if tuple(v.shape) != (B, n, d):
            raise AssertionError(f"assert_equivariant: {name} returned a velocity of shape {tuple(v.shape)}, expected {(B, n, d)}")
        if not bool(torch.isfinite(v).all()):
            raise AssertionError(f"assert_equivariant: {name} returned NaN or inf {setting}")
        if com_free:
            check("centre-of-mass free (mean_i v_i = 0)", v.mean(dim=1), torch.zeros_like(v.mean(dim=1)))

        kinds = [("rotation-equivariant (v(x Q^T) = v(x) Q^T, det Q = +1)", True)]
        if reflections:
            kinds.append(("reflection-equivariant (v(x Q^T) = v(x) Q^T, det Q = -1)", False))
        for what, proper in kinds:
            Q = random_orthogonal(B, d, proper=proper, generator=g, dtype=dtype).to(device)
            xr = x @ Q.transpose(-1, -2)
            vr, fr = _call(model, xr, t, cond)
            check(what, vr, v @ Q.transpose(-1, -2))
            for k, (a, b) in enumerate(zip(fr, f)):
                check(what.split(" ")[0].replace("equivariant", "invariant") + f" in output {k + 1}", a, b)
        if translations:
            c = 5.0 * torch.randn(B, 1, d, generator=g, dtype=dtype).to(device)
            vt, ft = _call(model, x + c, t, cond)
            check("translation-invariant (v(x + c) = v(x))", vt, v)
            for k, (a, b) in enumerate(zip(ft, f)):
                check(f"translation-invariant in output {k + 1}", a, b)
        if permutations:
            perm = _random_permutation(B, n, g).to(device)
            vp, fp = _call(model, _permute(x, perm), t, _permute(cond, perm))
            check("permutation-equivariant (v(x_pi) = v(x)_pi)", vp, _permute(v, perm))
            for k, (a, b) in enumerate(zip(fp, f)):
                check(f"permutation-equivariant in output {k + 1}", a, _permute(b, perm))
    return errors
