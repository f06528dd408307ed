"""Benchmark cases shared by ``test_bench_manifolds.py`` (pytest-benchmark) and ``compare_manifolds.py``.

One *case* is (manifold, op, implementation): ``op`` is ``expmap``, ``logmap`` or ``dist``;
the implementation is ``ours`` (the ``manifolds`` package) or a peer library (``geoopt``,
``flow_matching``, ``geomstats``).  Every implementation of a (manifold, op) pair gets the
*same* seeded float32 points, converted (outside the timed call) to the peer's convention,
and its output is converted back and compared with ours before any timing
(:func:`check_case`), so a mismatched convention fails loudly instead of being timed.

Conventions reconciled here (all outside the timed call):

* FlatTorus: ours stores angles in [-pi, pi); ``flow_matching.utils.manifolds.FlatTorus``
  uses [0, 2 pi).  Inputs are shifted by ``% 2 pi``; outputs are compared modulo 2 pi.
* Lorentz: ours and ``geoopt.Lorentz(k=1)`` and ``geomstats Hyperboloid`` all use
  x_0^2 - |x_{1:}|^2 = 1 (time coordinate first, curvature -1).
* PoincareBall: curvature -1 (``geoopt.PoincareBall(c=1)``, ``geomstats PoincareBall``).
* SPD: affine-invariant metric, d = |log(X^{-1/2} Y X^{-1/2})|_F (geoopt "AIM",
  geomstats ``SPDAffineMetric``).
* SO3: rotation matrices, tangent vectors ``R hat(omega)``, metric tr(U^T V) / 2, so that
  d = rotation angle (geomstats ``BiInvariantMetric`` on matrices uses the same scaling).
* geomstats argument order: ``exp(u, x)``, ``log(y, x)``.

Peers are optional: a missing peer (or a manifold/op a peer lacks) raises :class:`Skip`
with the reason.  The same goes for our own manifolds while their modules are not written.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import platform
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

MANIFOLDS = ["Sphere", "FlatTorus", "PoincareBall", "Lorentz", "SPD", "SO3", "Euclidean"]
OPS = ["expmap", "logmap", "dist"]
PEERS = ["geoopt", "flow_matching", "geomstats"]
IMPLS = ["ours"] + PEERS
SEED = 0
NUM_THREADS = 2

#: Number of points per manifold (matrices are costlier: 10^5 for SPD(3) and SO3).
N_POINTS = {"SPD": 10**5, "SO3": 10**5}
N_DEFAULT = 10**6
if os.environ.get("BENCH_N_SCALE"):  # e.g. BENCH_N_SCALE=0.01 for a quick smoke run
    _scale = float(os.environ["BENCH_N_SCALE"])
    N_POINTS = {k: max(10, int(v * _scale)) for k, v in N_POINTS.items()}
    N_DEFAULT = max(10, int(N_DEFAULT * _scale))

TWO_PI = 2.0 * math.pi


class Skip(Exception):
    """This case cannot run here; ``str(exc)`` says why."""


def setup_torch() -> None:
    torch.set_num_threads(NUM_THREADS)
    torch.set_default_dtype(torch.float32)


def n_points(manifold: str) -> int:
    return N_POINTS.get(manifold, N_DEFAULT)


# ---------------------------------------------------------------- peer imports
def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise Skip(f"{name} is not installed ({exc})") from None


@functools.lru_cache(maxsize=None)
def geomstats_backend():
    """Import geomstats with its pytorch backend, float32, leaving torch's default dtype alone.

    geomstats 2.8.0 imports ``numpy.trapz``, removed in numpy 2.4; we alias it to
    ``numpy.trapezoid`` (same function) before importing.  Importing the pytorch backend
    calls ``torch.set_default_dtype(torch.float64)``; we set it back.
    """
    backend = os.environ.setdefault("GEOMSTATS_BACKEND", "pytorch")
    if backend != "pytorch":
        raise Skip(f"GEOMSTATS_BACKEND={backend!r}; the benchmark needs 'pytorch'")
    import numpy as np

    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid
    dtype = torch.get_default_dtype()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                import geomstats.backend as gs
            except ImportError as exc:
                raise Skip(f"geomstats is not installed or does not import ({exc})") from None
            gs.set_default_dtype("float32")
    finally:
        torch.set_default_dtype(dtype)
    return gs


def peer_versions() -> dict[str, Optional[str]]:
    from importlib import metadata

    out = {}
    for dist in ["torch", "geoopt", "flow-matching", "geomstats", "torchcfm", "numpy"]:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def machine_info() -> dict:
    model = None
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    if model is None:
        model = platform.processor() or "unknown"
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def header_lines() -> list[str]:
    m = machine_info()
    v = peer_versions()
    return [
        f"machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, torch threads {m['torch_threads']}, "
        f"GPU: {m['gpu'] or 'none'}; load average {m['load_average_1_5_15min']}; Python {m['python']}; {m['platform']}",
        "versions: " + ", ".join(f"{k} {v[k] or '-'}" for k in v),
    ]


# ------------------------------------------------------------------- inputs
def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(SEED)


def _sym(a: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a + a.mT)


def _hat(w: torch.Tensor) -> torch.Tensor:
    x, y, z = w.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).unflatten(-1, (3, 3))


def _expm_rotvec(w: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_exp(_hat(w.double())).float()


def _ball_point(v: torch.Tensor) -> torch.Tensor:
    """exp_0(v) on the Poincare ball of curvature -1: tanh(|v|) v / |v|, with |v| clipped to 3 (|x| <= 0.995).

    The clip keeps points away from the edge: geomstats 2.8 ``PoincareBall.projection`` rescales
    the *whole batch* onto the boundary as soon as one point has |x| >= 1 - atol, which makes its
    log disagree with everyone on most points of a large batch.
    """
    n = v.norm(dim=-1, keepdim=True)
    return torch.tanh(n.clamp_max(3.0)) * v / n


def _hyperboloid_point(v: torch.Tensor) -> torch.Tensor:
    """exp at the origin (1, 0, ..., 0) of the hyperboloid x_0^2 - |x|^2 = 1 of (0, v)."""
    n = v.double().norm(dim=-1, keepdim=True)
    return torch.cat([torch.cosh(n), torch.sinh(n) * v.double() / n], -1).float()


@functools.lru_cache(maxsize=None)
def inputs(manifold: str) -> dict[str, torch.Tensor]:
    """Seeded float32 points ``x``, ``y`` and tangent vectors ``u`` at ``x`` (Riemannian norm ~ 1).

    Built from closed forms (not from our ``random_base``) so the inputs do not depend on the
    code under test; every implementation gets these same points.
    """
    g = _gen()
    n = n_points(manifold)
    f32 = dict(generator=g, dtype=torch.float32)
    if manifold == "Sphere":
        x = torch.nn.functional.normalize(torch.randn(n, 3, **f32), dim=-1)
        y = torch.nn.functional.normalize(torch.randn(n, 3, **f32), dim=-1)
        w = torch.randn(n, 3, **f32)
        u = w - (x * w).sum(-1, keepdim=True) * x
    elif manifold == "FlatTorus":
        x = torch.rand(n, 2, **f32) * TWO_PI - math.pi
        y = torch.rand(n, 2, **f32) * TWO_PI - math.pi
        u = torch.randn(n, 2, **f32) * 2.0  # often crosses the seam
    elif manifold == "Euclidean":
        x, y, u = (torch.randn(n, 3, **f32) for _ in range(3))
    elif manifold == "PoincareBall":
        # points at hyperbolic distance 2 min(|N(0, I_2)|, 3) from the origin
        x = _ball_point(torch.randn(n, 2, **f32))
        y = _ball_point(torch.randn(n, 2, **f32))
        lam = 2.0 / (1.0 - (x * x).sum(-1, keepdim=True))  # conformal factor
        u = torch.randn(n, 2, **f32) / lam  # Riemannian norm |w|
    elif manifold == "Lorentz":
        x = _hyperboloid_point(torch.randn(n, 2, **f32))
        y = _hyperboloid_point(torch.randn(n, 2, **f32))
        w = torch.randn(n, 3, **f32).double()
        xd = x.double()
        mink = -xd[:, :1] * w[:, :1] + (xd[:, 1:] * w[:, 1:]).sum(-1, keepdim=True)
        p = w + mink * xd  # Minkowski projection onto the tangent space at x
        pn = (-p[:, :1] ** 2 + (p[:, 1:] ** 2).sum(-1, keepdim=True)).clamp_min(1e-12).sqrt()
        r = torch.randn(n, 2, **f32).double().norm(dim=-1, keepdim=True)
        u = (p / pn * r).float()  # Riemannian norm |N(0, I_2)|, like the other manifolds
    elif manifold == "SPD":
        sx = _sym(torch.randn(n, 3, 3, **f32)).double() * 0.5
        sy = _sym(torch.randn(n, 3, 3, **f32)).double() * 0.5
        x = torch.linalg.matrix_exp(sx)
        y = torch.linalg.matrix_exp(sy)
        half = torch.linalg.matrix_exp(0.5 * sx)  # x^{1/2}
        w = _sym(torch.randn(n, 3, 3, **f32)).double() * 0.5
        u = half @ w @ half  # Riemannian norm |x^{-1/2} u x^{-1/2}|_F = |w|_F ~ 1
        x, y, u = (_sym(t).float() for t in (x, y, u))
    elif manifold == "SO3":
        x = _expm_rotvec(torch.randn(n, 3, **f32) * 1.5)
        y = _expm_rotvec(torch.randn(n, 3, **f32) * 1.5)
        u = x @ _hat(torch.randn(n, 3, **f32))
    else:
        raise ValueError(f"unknown manifold {manifold!r}; valid: {MANIFOLDS}")
    return {"x": x.contiguous(), "y": y.contiguous(), "u": u.contiguous()}


# ------------------------------------------------------------ implementations
@functools.lru_cache(maxsize=None)
def ours(manifold: str):
    """Our manifold instance; :class:`Skip` while its module is not importable."""
    spec = {
        "Sphere": ("manifolds.sphere", "Sphere", (2,)),
        "FlatTorus": ("manifolds.torus", "FlatTorus", (2,)),
        "Euclidean": ("manifolds.euclidean", "Euclidean", (3,)),
        "PoincareBall": ("manifolds.hyperbolic", "PoincareBall", (2,)),
        "Lorentz": ("manifolds.hyperbolic", "Lorentz", (2,)),
        "SPD": ("manifolds.spd", "SPD", (3,)),
        "SO3": ("manifolds.so3", "SO3", ()),
    }[manifold]
    module, cls, args = spec
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise Skip(f"ours: {module} is not importable yet ({exc})") from None
    if not hasattr(mod, cls):
        raise Skip(f"ours: {module} has no {cls} yet")
    return getattr(mod, cls)(*args)


@dataclass
class Case:
    """A ready-to-time call: ``fn()`` computes the op on prepared inputs; ``to_ours`` maps its output to our convention."""

    manifold: str
    op: str
    impl: str
    fn: Callable[[], torch.Tensor]
    to_ours: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
    periodic: bool = False  # compare outputs modulo 2 pi (torus points)
    note: str = ""
    info: dict = field(default_factory=dict)


def _ours_case(manifold, op):
    m = ours(manifold)
    d = inputs(manifold)
    x, y, u = d["x"], d["y"], d["u"]
    fn = {"expmap": lambda: m.expmap(x, u), "logmap": lambda: m.logmap(x, y), "dist": lambda: m.dist(x, y)}[op]
    return Case(manifold, op, "ours", fn, periodic=(manifold == "FlatTorus" and op == "expmap"))


def _geoopt_case(manifold, op):
    geoopt = _import("geoopt")
    d = inputs(manifold)
    x, y, u = d["x"], d["y"], d["u"]
    if manifold == "Sphere":
        m = geoopt.Sphere()
    elif manifold == "PoincareBall":
        m = geoopt.PoincareBall(c=1.0)
    elif manifold == "Lorentz":
        m = geoopt.Lorentz(k=1.0)  # x_0^2 - |x|^2 = k = 1: curvature -1/k = -1
    elif manifold == "SPD":
        m = geoopt.SymmetricPositiveDefinite(default_metric="AIM")
    elif manifold == "Euclidean":
        m = geoopt.Euclidean(ndim=1)
    else:
        raise Skip(f"geoopt {geoopt.__version__} has no {manifold}")
    fn = {"expmap": lambda: m.expmap(x, u), "logmap": lambda: m.logmap(x, y), "dist": lambda: m.dist(x, y)}[op]
    return Case(manifold, op, "geoopt", fn)


def _flow_matching_case(manifold, op):
    fmm = _import("flow_matching.utils.manifolds")
    d = inputs(manifold)
    x, y, u = d["x"], d["y"], d["u"]
    if manifold == "Sphere":
        m = fmm.Sphere()
        fns = {"expmap": lambda: m.expmap(x, u), "logmap": lambda: m.logmap(x, y), "dist": lambda: m.dist(x, y)}
        return Case(manifold, op, "flow_matching", fns[op])
    if manifold == "FlatTorus":
        if op == "dist":
            raise Skip("flow_matching FlatTorus has no dist")
        m = fmm.FlatTorus()
        xs, ys = x % TWO_PI, y % TWO_PI  # flow_matching stores angles in [0, 2 pi)
        if op == "expmap":
            return Case(manifold, op, "flow_matching", lambda: m.expmap(xs, u), periodic=True)
        return Case(manifold, op, "flow_matching", lambda: m.logmap(xs, ys))
    if manifold == "Euclidean":
        if op == "dist":
            raise Skip("flow_matching Euclidean has no dist")
        m = fmm.Euclidean()
        return Case(manifold, op, "flow_matching", {"expmap": lambda: m.expmap(x, u), "logmap": lambda: m.logmap(x, y)}[op])
    raise Skip(f"flow_matching has no {manifold}")


def _geomstats_case(manifold, op):
    geomstats_backend()
    d = inputs(manifold)
    x, y, u = d["x"], d["y"], d["u"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if manifold == "Sphere":
            from geomstats.geometry.hypersphere import Hypersphere

            space = Hypersphere(2)
        elif manifold == "PoincareBall":
            from geomstats.geometry.poincare_ball import PoincareBall

            space = PoincareBall(2)
        elif manifold == "Lorentz":
            from geomstats.geometry.hyperboloid import Hyperboloid

            space = Hyperboloid(2)  # time coordinate first, x_0^2 - |x|^2 = 1
        elif manifold == "SPD":
            from geomstats.geometry.spd_matrices import SPDAffineMetric, SPDMatrices

            space = SPDMatrices(3)
            if not isinstance(space.metric, SPDAffineMetric):
                space.equip_with_metric(SPDAffineMetric)
        elif manifold == "Euclidean":
            from geomstats.geometry.euclidean import Euclidean

            space = Euclidean(3)
        elif manifold == "SO3":
            from geomstats.geometry.special_orthogonal import SpecialOrthogonal

            space = SpecialOrthogonal(3, point_type="matrix")  # BiInvariantMetric, <U,V> = tr(U^T V)/2
            if op in ("logmap", "dist") and not os.environ.get("BENCH_GEOMSTATS_SO3_LOG"):
                raise Skip(
                    "geomstats SO(3) matrix log/dist call scipy.linalg.logm once per matrix "
                    "(about 45 ms a point here: over an hour for 1e5 points); "
                    "set BENCH_GEOMSTATS_SO3_LOG=1 to time it anyway"
                )
        elif manifold == "FlatTorus":
            raise Skip("geomstats 2.8 has no Hypertorus (angle) manifold")
        else:
            raise Skip(f"geomstats has no {manifold}")
    metric = space.metric
    fns = {"expmap": lambda: metric.exp(u, x), "logmap": lambda: metric.log(y, x), "dist": lambda: metric.dist(x, y)}
    return Case(manifold, op, "geomstats", fns[op])


_BUILDERS = {"ours": _ours_case, "geoopt": _geoopt_case, "flow_matching": _flow_matching_case, "geomstats": _geomstats_case}


def make_case(manifold: str, op: str, impl: str) -> Case:
    """Build a case; raises :class:`Skip` with the reason when it cannot run."""
    return _BUILDERS[impl](manifold, op)


# ---------------------------------------------------------------- checking
#: A point "agrees" when |peer - ours| <= ATOL + RTOL |ours|; a few points near the
#: singular sets (sphere antipodes, acos near x == y in peers) may disagree, a convention
#: mismatch makes nearly all disagree.
ATOL = {"SPD": 2e-3, "Lorentz": 2e-3, "PoincareBall": 2e-3}
RTOL = 2e-3
MAX_BAD_FRACTION = 1e-3


def _run(fn):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


@functools.lru_cache(maxsize=None)
def reference(manifold: str, op: str) -> torch.Tensor:
    return _run(_ours_case(manifold, op).fn)


def check_case(case: Case) -> dict:
    """Compare the case's output with ours (one call); raise AssertionError on a convention mismatch.

    Returns error statistics (also stored in ``case.info``) and the duration of that call.
    """
    t0 = time.perf_counter()
    out = _run(case.fn)
    elapsed = time.perf_counter() - t0
    out = case.to_ours(out).to(torch.float32)
    ref = reference(case.manifold, case.op) if case.impl != "ours" else out
    if out.shape != ref.shape:
        raise AssertionError(f"{case.impl} {case.manifold}.{case.op}: shape {tuple(out.shape)} != ours {tuple(ref.shape)}")
    diff = out - ref
    if case.periodic:
        diff = torch.remainder(diff + math.pi, TWO_PI) - math.pi
    err = diff.abs()
    if out.dim() > 1:
        err = err.flatten(1).amax(1)
        scale = ref.abs().flatten(1).amax(1)
    else:
        scale = ref.abs()
    finite = torch.isfinite(out).flatten(1).all(1) if out.dim() > 1 else torch.isfinite(out)
    bad = (~(err <= ATOL.get(case.manifold, 1e-3) + RTOL * scale)) | ~finite
    stats = {
        "seconds_first_call": elapsed,
        "bad_fraction": float(bad.float().mean()),
        "median_abs_err": float(err[finite].median()) if bool(finite.any()) else float("nan"),
        "nonfinite": int((~finite).sum()),
    }
    case.info.update(stats)
    stats["bad_points"] = int(bad.sum())
    if stats["bad_points"] > max(5, MAX_BAD_FRACTION * bad.numel()):
        raise AssertionError(
            f"{case.impl} {case.manifold}.{case.op} disagrees with ours on {stats['bad_fraction']:.2%} of the points "
            f"(median |err| {stats['median_abs_err']:.3g}): conventions differ, fix the adapter before timing"
        )
    return stats


def rounds_for(seconds_per_call: float, budget: float = 4.0, lo: int = 5, hi: int = 30) -> int:
    """Rounds that fit ``budget`` seconds, clamped to [lo, hi]."""
    return int(min(hi, max(lo, budget / max(seconds_per_call, 1e-6))))
