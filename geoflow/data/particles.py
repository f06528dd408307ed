"""Many-particle Boltzmann densities: DW4 and Lennard-Jones clusters, their data and an MCMC sampler.

Energies (reduced units, k_B T = 1, densities p(x) proportional to exp(-E(x))), with the
conventions of the shipped data (see ``files/PROVENANCE.md`` and the checks in the tests):

* :func:`dw4_energy`: the 2-D four-particle double well of Koehler, Klein & Noe 2020
  ("Equivariant Flows: Exact Likelihood Generative Learning for Symmetric Densities", ICML).
* :func:`lj_energy`: the Lennard-Jones cluster with a harmonic oscillator towards the centre
  of mass (LJ13 of Koehler et al. 2020; LJ55 of Klein, Kraemer & Noe 2023, "Equivariant flow
  matching", NeurIPS), with the Lennard-Jones term summed over **ordered** pairs i != j, the
  convention of the data (twice the sum over i < j of bgflow and eacf).
* :func:`dw4_forces`, :func:`lj_forces`: the analytic forces -grad E.

Data (shipped inside the package, nothing is downloaded):

* :func:`load_dw4`: DW4 train/val/test of Klein et al. 2023, centred and deduplicated across
  splits by default (each configuration in one split, its multiplicity kept: the duplicates
  are resampling weights, dropping them biases the energies).
* :func:`load_lj13`: LJ13 val/test of Klein et al. 2023 (documented subsets; the train split
  was not obtained: regenerate it with :func:`sample_lj`).
* :func:`sample_lj`: seeded MALA/Metropolis sampler of the Lennard-Jones density (LJ13 training
  data, LJ55 data).

Point clouds have shape ``(..., n_particles, dim)``: DW4 ``(4, 2)``, LJ13 ``(13, 3)``,
LJ55 ``(55, 3)``.
"""

from __future__ import annotations

import io
import math
import numbers
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ._parsing import PathLike, read_bytes

__all__ = [
    "DW4_SHAPE",
    "LJ13_SHAPE",
    "LJ55_SHAPE",
    "dw4_energy",
    "dw4_forces",
    "lj_energy",
    "lj_forces",
    "load_dw4",
    "load_lj13",
    "sample_lj",
    "MCMCStats",
    "generated_lj",
    "cache_dir",
    "LJ_DATA_SEEDS",
    "LJ_DEFAULT_ROWS",
]

#: Point shape (n_particles, dim) of DW4, LJ13 and LJ55.
DW4_SHAPE: tuple[int, int] = (4, 2)
LJ13_SHAPE: tuple[int, int] = (13, 3)
LJ55_SHAPE: tuple[int, int] = (55, 3)


# --------------------------------------------------------------------------- checks
def _check_real(name: str, value, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"`{name}` must be a finite real number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"`{name}` must be > 0, got {value!r}")
    return float(value)


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return int(value)


def _check_cloud(x, min_particles: int = 2) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"`x` must be a floating torch.Tensor of shape (..., n_particles, dim), got {got}")
    if x.dim() < 2 or x.shape[-2] < min_particles or not 1 <= x.shape[-1] <= 3:
        raise ValueError(
            f"`x` must have shape (..., n_particles, dim) with n_particles >= {min_particles} and dim 1, 2 or 3, "
            f"got {tuple(x.shape)} (reshape flat rows with x.reshape(-1, n_particles, dim))"
        )
    return x


def _sq_dist(c: torch.Tensor):
    """Squared distances |c_i - c_j|^2, shape (..., n, n), and the off-diagonal mask.

    Summed coordinate by coordinate on (n, n) slices (a reduction over a trailing axis of
    size 2 or 3 is slow in torch); ``c`` should be centred (better float32 differences).
    """
    n = c.shape[-2]
    ct = c.mT  # (..., dim, n)
    sq = None
    for k in range(c.shape[-1]):
        col = ct[..., k, :]
        dk = col[..., :, None] - col[..., None, :]
        sq = dk * dk if sq is None else sq + dk * dk
    off = ~torch.eye(n, dtype=torch.bool, device=c.device)
    return sq, off


def _pair_forces(c: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """sum_j f_ij (c_i - c_j) = c_i sum_j f_ij - (f c)_i for a symmetric f with zero diagonal."""
    return f.sum(-1, keepdim=True) * c - f @ c


# --------------------------------------------------------------------------- DW4
def dw4_energy(
    x: torch.Tensor, *, a: float = 0.0, b: float = -4.0, c: float = 0.9, d0: float = 4.0, tau: float = 1.0
) -> torch.Tensor:
    """Double-well energy of particles in the plane (DW4: 4 particles in 2-D).

    .. math::
        E(x) = \\frac{1}{2\\tau} \\sum_{i \\ne j} \\left[ a (d_{ij} - d_0) + b (d_{ij} - d_0)^2
               + c (d_{ij} - d_0)^4 \\right]
             = \\frac{1}{\\tau} \\sum_{i < j} [\\dots],\\qquad d_{ij} = |x_i - x_j|

    with a = 0, b = -4, c = 0.9, d0 = 4, tau = 1 (Koehler, Klein & Noe 2020, "Equivariant
    Flows", ICML; bgflow's ``MultiDoubleWellPotential(a=0.9, b=-4, c=0, offset=4)``, which DEM
    and the shipped data use).  Each pair distance sits in one of two wells (near 2.5 and 5.5);
    invariant under rotations, reflections, translations and permutations.  The energy is
    differentiable everywhere (gradient 0 in the undefined direction at coinciding particles).

    Shapes:
        x: (..., n_particles, dim) (DW4: (..., 4, 2)).  Returns (...).
    """
    _check_cloud(x)
    a, b, c, d0 = (_check_real(k, v) for k, v in (("a", a), ("b", b), ("c", c), ("d0", d0)))
    tau = _check_real("tau", tau, positive=True)
    sq, off = _sq_dist(x - x.mean(-2, keepdim=True).detach())
    pos = sq > 0
    d = torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))
    r = d - d0
    r2 = r * r
    e = torch.where(off, a * r + b * r2 + c * r2 * r2, torch.zeros_like(r))
    return e.sum((-2, -1)) / (2 * tau)


def dw4_forces(
    x: torch.Tensor, *, a: float = 0.0, b: float = -4.0, c: float = 0.9, d0: float = 4.0, tau: float = 1.0
) -> torch.Tensor:
    """Analytic forces F = -grad E of :func:`dw4_energy` (same arguments).

    .. math:: -\\nabla_{x_i} E = -\\frac{1}{\\tau} \\sum_{j \\ne i} \\left[ a + 2 b r_{ij} + 4 c r_{ij}^3 \\right]
              \\frac{x_i - x_j}{d_{ij}},\\qquad r_{ij} = d_{ij} - d_0

    Shapes:
        x: (..., n_particles, dim).  Returns (..., n_particles, dim).
    """
    _check_cloud(x)
    a, b, c, d0 = (_check_real(k, v) for k, v in (("a", a), ("b", b), ("c", c), ("d0", d0)))
    tau = _check_real("tau", tau, positive=True)
    xc = x - x.mean(-2, keepdim=True)
    sq, _ = _sq_dist(xc)
    pos = sq > 0  # the diagonal, and coinciding particles (force direction undefined: 0)
    d = torch.where(pos, sq, torch.ones_like(sq)).sqrt()
    r = d - d0
    f = torch.where(pos, -(a + 2 * b * r + 4 * c * r * r * r) / (tau * d), torch.zeros_like(d))
    return _pair_forces(xc, f)


# --------------------------------------------------------------------------- Lennard-Jones
def _lj_args(eps, rm, oscillator, oscillator_scale, ordered_pairs):
    eps = _check_real("eps", eps, positive=True)
    rm = _check_real("rm", rm, positive=True)
    for name, v in (("oscillator", oscillator), ("ordered_pairs", ordered_pairs)):
        if not isinstance(v, bool):
            raise TypeError(f"`{name}` must be a bool, got {v!r}")
    k = _check_real("oscillator_scale", oscillator_scale) if oscillator else 0.0
    return (2.0 if ordered_pairs else 1.0) * eps, rm, k


def lj_energy(
    x: torch.Tensor,
    *,
    eps: float = 1.0,
    rm: float = 1.0,
    oscillator: bool = True,
    oscillator_scale: float = 1.0,
    ordered_pairs: bool = True,
) -> torch.Tensor:
    """Lennard-Jones cluster energy with a harmonic oscillator (LJ13, LJ55).

    .. math::
        E(x) = \\epsilon \\sum_{i \\ne j} \\left[ \\left(\\frac{r_m}{d_{ij}}\\right)^{12}
               - 2 \\left(\\frac{r_m}{d_{ij}}\\right)^{6} \\right]
               + \\frac{k}{2} \\sum_i |x_i - \\bar x|^2,\\qquad
        \\bar x = \\frac1n \\sum_i x_i

    with eps = 1, r_m = 1 (pair minimum -eps at d = r_m) and k = ``oscillator_scale`` = 1.
    The pair sum runs over **ordered** pairs i != j (``ordered_pairs=True``, the default),
    i.e. 2 sum_{i<j}: the convention of Koehler's original code (``en_flows``
    ``test_systems.py``) and of the shipped LJ13 data of Klein et al. 2023 (DEM with
    ``energy_factor=1``).  ``ordered_pairs=False`` gives sum_{i<j}, bgflow's and eacf's
    ``LennardJonesPotential`` (Midgley et al. 2023), half the Lennard-Jones term.  Koehler et
    al. 2020 (LJ13), Klein et al. 2023 (LJ13, LJ55).  Overlapping particles give +inf.

    Args:
        x: particle positions.
        eps, rm: Lennard-Jones well depth and minimum distance (> 0).
        oscillator: add the harmonic term towards the centre of mass.
        oscillator_scale: its spring constant k.
        ordered_pairs: sum over i != j (True) or i < j (False).

    Shapes:
        x: (..., n_particles, dim) (LJ13: (..., 13, 3)).  Returns (...).
    """
    _check_cloud(x)
    coef, rm, k = _lj_args(eps, rm, oscillator, oscillator_scale, ordered_pairs)
    return _lj_energy_forces(x, coef, rm, k, forces=False)[0]


def lj_forces(
    x: torch.Tensor,
    *,
    eps: float = 1.0,
    rm: float = 1.0,
    oscillator: bool = True,
    oscillator_scale: float = 1.0,
    ordered_pairs: bool = True,
) -> torch.Tensor:
    """Analytic forces F = -grad E of :func:`lj_energy` (same arguments).

    .. math::
        -\\nabla_{x_i} E = c\\,\\epsilon \\sum_{j \\ne i} \\frac{12}{d_{ij}^2}
            \\left[ \\left(\\frac{r_m}{d_{ij}}\\right)^{12} - \\left(\\frac{r_m}{d_{ij}}\\right)^{6} \\right]
            (x_i - x_j) - k (x_i - \\bar x)

    with c = 2 for ordered pairs, 1 otherwise (the oscillator gradient is k (x_i - x-bar)
    because sum_i (x_i - x-bar) = 0).

    Shapes:
        x: (..., n_particles, dim).  Returns (..., n_particles, dim).
    """
    _check_cloud(x)
    coef, rm, k = _lj_args(eps, rm, oscillator, oscillator_scale, ordered_pairs)
    return _lj_energy_forces(x, coef, rm, k)[1]


def _lj_parts(x, coef, rm, forces=True):
    """Scale-separable pieces of the Lennard-Jones cluster energy.

    With c = x - x-bar, s6_ij = (rm^2 / d_ij^2)^3 (zero on the diagonal):
    A = coef/2 sum_{i != j} s6^2, B = coef/2 sum_{i != j} s6, R2 = sum_i |c_i|^2, so that
    E = A - 2 B + k/2 R2, and the pair forces F12_i = sum_j 12 coef s6^2 / d^2 (c_i - c_j),
    F6_i = -sum_j 12 coef s6 / d^2 (c_i - c_j).  Under c -> lambda c these scale as
    lambda^-12, lambda^-6, lambda^2, lambda^-13, lambda^-7 (used by the MCMC scaling move).
    """
    c = x - x.mean(-2, keepdim=True)
    sq, off = _sq_dist(c)
    inv2 = torch.where(off, (rm * rm) / torch.where(off, sq, torch.ones_like(sq)), torch.zeros_like(sq))
    s6 = inv2 * inv2 * inv2
    A = (0.5 * coef) * (s6 * s6).sum((-2, -1))
    B = (0.5 * coef) * s6.sum((-2, -1))
    R2 = (c * c).sum((-2, -1))
    if not forces:
        return c, A, B, R2, None, None
    w = (12 * coef / (rm * rm)) * inv2 * s6
    return c, A, B, R2, _pair_forces(c, w * s6), -_pair_forces(c, w)


def _lj_energy_forces(x, coef, rm, k, *, forces=True):
    """(E, -grad E or None) (coef = 2 eps for ordered pairs, k the spring constant)."""
    c, A, B, R2, F12, F6 = _lj_parts(x, coef, rm, forces)
    E = A - 2 * B + 0.5 * k * R2
    if not forces:
        return E, None
    return E, F12 + F6 - k * c


# --------------------------------------------------------------------------- MCMC
@dataclass
class MCMCStats:
    """Diagnostics of :func:`sample_lj`.

    Attributes:
        acceptance: mean acceptance rate of the particle moves after burn-in.
        scale_acceptance: mean acceptance rate of the global scaling moves after burn-in.
        step: the particle step size used after burn-in (MALA h, or the Metropolis sigma).
        energy: energies of the returned samples, shape (n_samples,).
        n_chains, burn_in, thin: the run's settings.
    """

    acceptance: float
    scale_acceptance: float
    step: float
    energy: torch.Tensor
    n_chains: int
    burn_in: int
    thin: int


#: MCMC defaults: target acceptance of MALA moves (Roberts & Rosenthal 1998) and of the
#: random-walk Metropolis moves (Roberts, Gelman & Gilks 1997), and initial step sizes for a
#: unit rm (the README's Metropolis step 0.03 for LJ13, ~24 % acceptance).
_TARGET_ACC = {"mala": 0.57, "metropolis": 0.234}
_STEP0 = {"mala": 7e-4, "metropolis": 0.03}


def _random_packing(n_chains, n, rm, generator, dtype, device, *, density=0.8, d_min=0.88, tries=64):
    """Disordered starts: random sequential addition of n points in a ball (per chain).

    The ball holds ``density`` particles per rm^3; each new point is the first of ``tries``
    uniform candidates at distance >= d_min rm from the points placed so far (else the
    candidate farthest from them).  A liquid-like start melts much faster than a lattice.
    """
    radius = rm * (3 * n / (4 * math.pi * density)) ** (1 / 3)
    x = torch.zeros(n_chains, n, 3, dtype=dtype, device=device)
    order = torch.arange(tries, 0, -1, dtype=dtype, device=device)
    rows = torch.arange(n_chains, device=device)
    for k in range(1, n):
        u = torch.randn(n_chains, tries, 3, generator=generator, dtype=dtype, device=device)
        r = torch.rand(n_chains, tries, 1, generator=generator, dtype=dtype, device=device) ** (1 / 3)
        cand = u / u.norm(dim=-1, keepdim=True) * (r * radius)
        dmin = torch.cdist(cand, x[:, :k]).amin(-1)
        score = torch.where(dmin >= d_min * rm, order, dmin - 1e6)
        x[:, k] = cand[rows, score.argmax(-1)]
    return x - x.mean(-2, keepdim=True)


def _random_rotations(m, generator, dtype, device):
    """Haar-uniform rotations of R^3: QR of a Gaussian matrix with the sign fix (Mezzadri 2007)."""
    A = torch.randn(m, 3, 3, generator=generator, dtype=dtype, device=device)
    Q, R = torch.linalg.qr(A)
    Q = Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))[:, None, :]
    det = torch.linalg.det(Q)
    return torch.cat((Q[..., :1] * det[:, None, None], Q[..., 1:]), dim=-1)


def sample_lj(
    n_particles: int,
    n_samples: int,
    seed: int,
    *,
    n_chains: Optional[int] = None,
    burn_in: int = 3000,
    thin: int = 100,
    method: str = "mala",
    step: Optional[float] = None,
    scale_step: float = 0.03,
    adapt: bool = True,
    eps: float = 1.0,
    rm: float = 1.0,
    oscillator_scale: float = 1.0,
    ordered_pairs: bool = True,
    init: Optional[torch.Tensor] = None,
    dtype: torch.dtype = torch.float32,
    device=None,
    return_stats: bool = False,
):
    """Samples of the Lennard-Jones cluster density p(x) ~ exp(-E(x)) at k_B T = 1 by MCMC.

    Regenerates the LJ13 training data and LJ55 data that do not ship (energy
    :func:`lj_energy`, ordered pairs, oscillator k = 1 by default: the data's convention).
    ``n_chains`` independent chains run in parallel (vectorised), each from a disordered start
    (random sequential addition of the particles in a ball, 0.8 particles per rm^3, no two
    closer than 0.88 rm) or from ``init``.  One iteration is

    1. a move of all particles: MALA (``method="mala"``, Roberts & Tweedie 1996),
       y = x + h F(x) + sqrt(2 h) xi with F = -grad E, accepted with probability
       min(1, exp(E(x) - E(y)) q(x | y) / q(y | x)); or random-walk Metropolis
       (``"metropolis"``), y = x + sigma xi;
    2. a global scaling move about the centroid (the slow "breathing" mode of the cluster),
       x - x-bar -> lambda (x - x-bar) with log lambda ~ N(0, scale_step^2), accepted with
       min(1, exp(E(x) - E(y)) lambda^{(n-1) 3}) (the Jacobian on the centre-of-mass-free
       subspace).

    Both leave the density on the centre-of-mass-free subspace invariant.  During burn-in
    only (``adapt=True``), the step size is tuned every 50 iterations towards an acceptance of
    0.57 (MALA) or 0.234 (Metropolis), h <- h exp(acc - target); afterwards it is fixed, so
    the chains are a time-homogeneous Markov chain.  Starting steps (rm = 1): MALA h = 7e-4
    (about 0.5 to 0.6 acceptance on LJ13), Metropolis sigma = 0.03 (about 0.24 on LJ13); they
    scale with rm^2 and rm.  After ``burn_in`` iterations each chain yields a sample every
    ``thin`` iterations until ``n_samples`` are collected; each sample is centred, rotated by a
    Haar-random rotation and its particles randomly permuted (exact symmetries of the
    density: the distribution is unchanged, the data look like the shipped sets).

    Measured (1 CPU core): LJ13 from the disordered start equilibrates in about 1500 to 2000
    iterations (1024 chains: mean energy -43.0 +- 0.2 from then on, the shipped test split
    has -43.13, and sum_i |x_i - x-bar|^2 18.0 against 18.05); with 2000 iterations, 256
    samples match the test split's energies (KS statistic < 0.08 for three seeds; see the
    tests).  MALA acceptance about 0.57 at h ~ 6e-4, scaling moves about 0.54.  LJ55: h adapts
    to about 2.2e-4, scaling acceptance 0.24, and the mean energy levels off at about -326
    (sum_i |x_i - x-bar|^2 about 163) after about 1000 iterations (64 chains followed for 4500
    iterations); no LJ55 data were available to check it against.  ``burn_in=3000`` is the
    default for both.  Cost: about 2 ms per iteration for 128 LJ13 chains, 8 ms for 64 LJ55
    chains.  Runs in float64 internally, on ``device``; deterministic for a given seed and
    device.

    Args:
        n_particles: particles n (13: LJ13, 55: LJ55; >= 2).
        n_samples: samples returned (>= 1).
        seed: seed of the torch.Generator driving everything.
        n_chains: parallel chains (default min(n_samples, 1000)); each gives
            ceil(n_samples / n_chains) samples (the last ones are dropped to n_samples).
        burn_in: iterations discarded (>= 0).
        thin: iterations between two samples of one chain (>= 1).
        method: ``"mala"`` or ``"metropolis"``.
        step: initial particle step (MALA h or Metropolis sigma); default per method.
        scale_step: sigma of log lambda of the scaling move (0 disables it).
        adapt: tune the step during burn-in.
        eps, rm, oscillator_scale, ordered_pairs: the energy (:func:`lj_energy`).
        init: starting configurations, shape (n_chains, n_particles, 3).
        dtype: dtype of the returned samples.
        device: where the chains run (e.g. ``"cuda"``).
        return_stats: also return :class:`MCMCStats`.

    Returns:
        Samples of shape (n_samples, n_particles, 3) (centred), or ``(samples, stats)``.
    """
    n = _check_int("n_particles", n_particles, minimum=2)
    n_samples = _check_int("n_samples", n_samples)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"`seed` must be an int, got {type(seed).__name__} {seed!r}")
    burn_in = _check_int("burn_in", burn_in, minimum=0)
    thin = _check_int("thin", thin)
    if method not in _TARGET_ACC:
        raise ValueError(f"`method` must be one of {list(_TARGET_ACC)}, got {method!r}")
    coef, rm, k = _lj_args(eps, rm, True, oscillator_scale, ordered_pairs)
    if step is not None:
        h = _check_real("step", step, positive=True)
    else:
        h = _STEP0[method] * (rm * rm if method == "mala" else rm)
    scale_step = _check_real("scale_step", scale_step)
    if scale_step < 0:
        raise ValueError(f"`scale_step` must be >= 0, got {scale_step}")
    if not isinstance(adapt, bool):
        raise TypeError(f"`adapt` must be a bool, got {adapt!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"`dtype` must be a floating torch.dtype, got {dtype!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    f64 = torch.float64
    gen = torch.Generator(device=device).manual_seed(int(seed))
    if init is not None:
        _check_cloud(init)
        if init.dim() != 3 or init.shape[1:] != (n, 3):
            raise ValueError(f"`init` must have shape (n_chains, {n}, 3), got {tuple(init.shape)}")
        if n_chains is not None and n_chains != init.shape[0]:
            raise ValueError(f"`n_chains` = {n_chains} differs from init's {init.shape[0]} chains")
        C = init.shape[0]
        x = init.detach().to(device=device, dtype=f64)
        x = x - x.mean(-2, keepdim=True)
    else:
        C = min(n_samples, 1000) if n_chains is None else _check_int("n_chains", n_chains)
        x = _random_packing(C, n, rm, gen, f64, device)
    per_chain = -(-n_samples // C)
    dof = (n - 1) * 3
    mala = method == "mala"

    def parts(y):
        _, A, B, R2, F12, F6 = _lj_parts(y, coef, rm, mala)
        return [A, B, R2, F12, F6]

    def energy(A, B, R2):
        return A - 2 * B + 0.5 * k * R2

    def forces(st, y):
        return st[3] + st[4] - k * y

    def select(mask, new, old):
        return [None if o is None else torch.where(mask.reshape(mask.shape + (1,) * (o.dim() - 1)), nw, o)
                for nw, o in zip(new, old)]

    st = parts(x)
    E = energy(*st[:3])
    if not bool(torch.isfinite(E).all()):
        raise ValueError("the starting configurations have infinite energy (overlapping particles)")
    target = _TARGET_ACC[method]
    out, energies = [], []
    acc_n = acc_s = 0.0
    n_after = 0
    window = torch.zeros((), dtype=f64, device=device)
    total = burn_in + per_chain * thin
    for it in range(1, total + 1):
        # 1. all-particle move (noise projected onto the centre-of-mass-free subspace)
        xi = torch.randn(x.shape, generator=gen, dtype=f64, device=device)
        xi = xi - xi.mean(-2, keepdim=True)
        if mala:
            Fx = forces(st, x)
            y = x + h * Fx + math.sqrt(2 * h) * xi
            sy = parts(y)
            Ey = energy(*sy[:3])
            back = (x - y - h * forces(sy, y)).square().sum((-2, -1))
            log_a = E - Ey - (back - 2 * h * xi.square().sum((-2, -1))) / (4 * h)
        else:
            y = x + h * xi
            sy = parts(y)
            Ey = energy(*sy[:3])
            log_a = E - Ey
        u = torch.rand(C, generator=gen, dtype=f64, device=device)
        a = u.log() < torch.nan_to_num(log_a, nan=-math.inf)
        x = torch.where(a[:, None, None], y, x)
        st = select(a, sy, st)
        E = torch.where(a, Ey, E)
        acc = a.to(f64).mean()
        # 2. scaling move about the centroid, in closed form from the scale-separable parts
        if scale_step > 0:
            ll = scale_step * torch.randn(C, generator=gen, dtype=f64, device=device)
            lam = ll.exp()
            l6 = lam.pow(-6)
            A, B, R2 = st[0] * l6 * l6, st[1] * l6, st[2] * lam * lam
            Ey = energy(A, B, R2)
            u = torch.rand(C, generator=gen, dtype=f64, device=device)
            b = u.log() < torch.nan_to_num(E - Ey + dof * ll, nan=-math.inf)
            lb = torch.where(b, lam, torch.ones_like(lam))
            x = x * lb[:, None, None]
            l6b = lb.pow(-6)
            st[0], st[1], st[2] = st[0] * l6b * l6b, st[1] * l6b, st[2] * lb * lb
            if mala:
                st[3] = st[3] * (l6b * l6b / lb)[:, None, None]
                st[4] = st[4] * (l6b / lb)[:, None, None]
            E = torch.where(b, Ey, E)
        if it <= burn_in:
            window = window + acc
            if adapt and it % 50 == 0:
                h *= math.exp(float(window) / 50 - target)
                window = torch.zeros((), dtype=f64, device=device)
            continue
        n_after += 1
        acc_n += float(acc)
        if scale_step > 0:
            acc_s += float(b.to(f64).mean())
        if (it - burn_in) % thin == 0:
            out.append(x.clone())
            energies.append(E.clone())
    xs = torch.stack(out, 1).reshape(C * per_chain, n, 3)[:n_samples]
    es = torch.stack(energies, 1).reshape(-1)[:n_samples]
    m = xs.shape[0]
    R = _random_rotations(m, gen, f64, device)
    perm = torch.argsort(torch.rand(m, n, generator=gen, dtype=f64, device=device), dim=-1)
    xs = torch.gather(xs, 1, perm[..., None].expand(m, n, 3)) @ R.mT
    xs = (xs - xs.mean(-2, keepdim=True)).to(dtype)
    if not return_stats:
        return xs
    stats = MCMCStats(
        acceptance=acc_n / max(n_after, 1),
        scale_acceptance=acc_s / max(n_after, 1),
        step=h,
        energy=es.to(dtype),
        n_chains=C,
        burn_in=burn_in,
        thin=thin,
    )
    return xs, stats


# --------------------------------------------------------------------------- shipped data
#: The original files (Klein, Kraemer & Noe 2023 splits, as stored in jarridrb/DEM@8e95319 data/).
_DW4_SOURCES = {s: f"{s}_split_DW4.npy" for s in ("train", "val", "test")}
_LJ13_SOURCES = {s: f"{s}_split_LJ13-1000.npy" for s in ("val", "test")}
_DW4_SPLITS = ("train", "val", "test")
#: Distinct DW4 configurations given to test and val in ``mode="disjoint"`` (1/12 of the
#: 32107 each, the share of the original 10000 / 120000 rows); train gets the rest.
_DW4_DISJOINT = {"test": 2676, "val": 2676}
#: Rows of the shipped LJ13 subsets.
_LJ13_ROWS = {"test": 5000, "val": 2000}
_SHIPPED = {  # name: (rows, sha256); bytes and provenance in files/PROVENANCE.md
    "dw4_unique.npy": (32107, "60d1486658caf7fb838cabbb7831891951ccb946912c7097b7c2926fd0d7b0e5"),
    "dw4_counts.npy": (32107, "7e3d10dd17b884cbe21ba2a7e57001dca879fa1514cc2639c8ad96f015c918bf"),
    "lj13_test_5000.npy": (5000, "3cfe83b6d3139a45457fc7c43b4058131646ef0394e9d91792234edc80cb6e41"),
    "lj13_val_2000.npy": (2000, "c0c2d388dd94c7359709a47e61d5dd92c78493876ce61bb6df88400c86f6bf40"),
}
_DW4_MODES = ("disjoint", "unique", "original")


def _first_unique_rows(a: np.ndarray, exclude: Optional[np.ndarray] = None) -> np.ndarray:
    """Indices of the first occurrence of each distinct row of ``a`` (in file order), minus rows in ``exclude``."""
    _, first = np.unique(a, axis=0, return_index=True)
    keep = np.sort(first)
    if exclude is not None:
        seen = {r.tobytes() for r in exclude}
        keep = np.asarray([i for i in keep if a[i].tobytes() not in seen], dtype=np.int64)
    return keep


def _build_files(src: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The shipped arrays from the original splits (``src``: "dw4_train", ..., "lj13_test").

    * ``dw4_unique.npy``: the 32107 distinct rows of the three DW4 splits (verbatim float32),
      in the order ``numpy.random.default_rng(0).permutation`` of their sorted order;
    * ``dw4_counts.npy``: uint16 (32107, 3), how often each row occurs in train, val, test;
    * ``lj13_test_5000.npy``: the first 5000 rows of the LJ13 test split, duplicates skipped;
    * ``lj13_val_2000.npy``: the first 2000 rows of the LJ13 val split, skipping duplicates
      and rows that are also in the test split.
    """
    parts = [np.ascontiguousarray(src[f"dw4_{s}"], dtype=np.float32) for s in _DW4_SPLITS]
    rows, inverse = np.unique(np.concatenate(parts), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.zeros((rows.shape[0], 3), dtype=np.int64)
    start = 0
    for k, p in enumerate(parts):
        np.add.at(counts[:, k], inverse[start : start + p.shape[0]], 1)
        start += p.shape[0]
    order = np.random.default_rng(0).permutation(rows.shape[0])
    test = np.ascontiguousarray(src["lj13_test"], dtype=np.float32)
    val = np.ascontiguousarray(src["lj13_val"], dtype=np.float32)
    t_idx = _first_unique_rows(test)[: _LJ13_ROWS["test"]]
    v_idx = _first_unique_rows(val, exclude=test)[: _LJ13_ROWS["val"]]
    return {
        "dw4_unique.npy": rows[order],
        "dw4_counts.npy": counts[order].astype(np.uint16),
        "lj13_test_5000.npy": test[t_idx],
        "lj13_val_2000.npy": val[v_idx],
    }


def _read_sources(root: PathLike) -> dict[str, np.ndarray]:
    """The original .npy files under ``root`` (folders ``dw4/`` and ``lj13/``, as in shared/data)."""
    root = os.fspath(root)
    out = {}
    for s, f in _DW4_SOURCES.items():
        out[f"dw4_{s}"] = np.load(os.path.join(root, "dw4", f), allow_pickle=False)
    for s, f in _LJ13_SOURCES.items():
        out[f"lj13_{s}"] = np.load(os.path.join(root, "lj13", f), allow_pickle=False)
    return out


def _write_files(root: PathLike, out_dir: PathLike) -> dict[str, tuple[int, int, str]]:
    """Build the shipped files from the originals under ``root``; returns {name: (rows, bytes, sha256)}."""
    import hashlib

    info = {}
    for name, arr in _build_files(_read_sources(root)).items():
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        data = buf.getvalue()
        with open(os.path.join(os.fspath(out_dir), name), "wb") as fh:
            fh.write(data)
        info[name] = (arr.shape[0], len(data), hashlib.sha256(data).hexdigest())
    return info


def _load_npy(name: str) -> np.ndarray:
    rows, sha = _SHIPPED[name]
    data, source, _ = read_bytes(name, None, sha)
    arr = np.load(io.BytesIO(data), allow_pickle=False)
    if arr.shape[0] != rows:
        raise RuntimeError(f"{source}: expected {rows} rows, got {arr.shape[0]}; reinstall geoflow")
    return arr


def _to_clouds(a: np.ndarray, shape, center: bool, dtype) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(a)).to(torch.float64).reshape(-1, *shape)
    if center:
        x = x - x.mean(-2, keepdim=True)
    return x.to(dtype)


def _check_split(split, valid):
    if split not in valid:
        raise ValueError(f"`split` must be one of {list(valid)}, got {split!r}")


def _check_dtype(dtype):
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"`dtype` must be a floating torch.dtype, got {dtype!r}")
    return dtype


def load_dw4(
    split: str = "train",
    *,
    mode: str = "disjoint",
    center: bool = True,
    path: Optional[PathLike] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """DW4 samples (4 particles in 2-D, :func:`dw4_energy`), centred and deduplicated across splits.

    The data are the splits of Klein, Kraemer & Noe 2023 ("Equivariant flow matching",
    NeurIPS; 100000 / 10000 / 10000 rows, via DEM).  They hold only 32107 distinct
    configurations (train 30091, val 7701, test 7750), and the splits overlap: 8889 of the
    10000 test rows and 8860 of the 10000 val rows also occur in train (6702 and 6633
    distinct configurations), 3824 test rows occur in val.  The duplicates are **not**
    noise: a row's multiplicity grows with its Boltzmann weight (mean energy -20.7 for rows
    seen once, -23.3 for rows seen 11 times), i.e. the splits are importance-resampled
    draws from a pool of 32107.  Dropping the duplicates biases the data: the distinct rows
    have mean energy -21.5 instead of -22.5, and Metropolis at :func:`dw4_energy` started from
    them drifts back to -22.5.  Hence the modes:

    * ``"disjoint"`` (default): every distinct configuration belongs to exactly one split
      (test and val get 2676 of them each, train the other 26755, a fixed random assignment
      independent of the weights) and appears there as often as in the three original splits
      together, so each split keeps the resampled (Boltzmann) distribution and no
      configuration of test or val is seen in training.  About 100000 / 10000 / 10000 rows.
    * ``"unique"``: the same disjoint assignment, each configuration once (26755 / 2676 /
      2676 rows; biased towards high energy, see above).
    * ``"original"``: the published splits as multisets (100000 / 10000 / 10000 rows with
      the overlaps between splits, comparable with published numbers; not in file order).

    Rows are in a fixed shuffled order.  ``center=True`` subtracts each sample's centre of
    mass (the files are not centred: |CoM| up to 16.4; the energy is translation invariant).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        mode: ``"disjoint"``, ``"unique"`` or ``"original"``.
        center: centre each sample.
        path: a folder with the three original ``{split}_split_DW4.npy`` files to use instead
            of the packaged files (same result: the packaged files are derived from them).
        dtype: floating dtype of the result.

    Returns:
        Samples of shape (rows, 4, 2).
    """
    _check_split(split, _DW4_SPLITS)
    if mode not in _DW4_MODES:
        raise ValueError(f"`mode` must be one of {list(_DW4_MODES)}, got {mode!r}")
    if not isinstance(center, bool):
        raise TypeError(f"`center` must be a bool, got {center!r}")
    dtype = _check_dtype(dtype)
    if path is None:
        rows, counts = _load_npy("dw4_unique.npy"), _load_npy("dw4_counts.npy")
    else:
        folder = os.fspath(path)
        src = {f"dw4_{s}": np.load(os.path.join(folder, f), allow_pickle=False) for s, f in _DW4_SOURCES.items()}
        src["lj13_test"] = src["lj13_val"] = np.zeros((0, 39), np.float32)
        built = _build_files(src)
        rows, counts = built["dw4_unique.npy"], built["dw4_counts.npy"]
    counts = counts.astype(np.int64)
    k = _DW4_SPLITS.index(split)
    if mode == "original":
        idx = np.repeat(np.arange(rows.shape[0]), counts[:, k])
        idx = idx[np.random.default_rng(k).permutation(idx.shape[0])]
    else:
        n_test, n_val = _DW4_DISJOINT["test"], _DW4_DISJOINT["val"]
        block = {"test": (0, n_test), "val": (n_test, n_test + n_val), "train": (n_test + n_val, rows.shape[0])}[split]
        idx = np.arange(*block)
        if mode == "disjoint":
            idx = np.repeat(idx, counts[idx].sum(-1))
            idx = idx[np.random.default_rng(k).permutation(idx.shape[0])]
    return _to_clouds(rows[idx], DW4_SHAPE, center, dtype)


def load_lj13(
    split: str = "test", *, path: Optional[PathLike] = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """LJ13 samples (13 particles in 3-D, :func:`lj_energy`), centred.

    From the splits of Klein, Kraemer & Noe 2023 ("Equivariant flow matching", NeurIPS; via
    DEM), 10000 rows each, of which geoflow ships subsets to stay small (the rows are i.i.d.:
    the lag-1 autocorrelation of the energy along the file is -0.004):

    * ``"test"``: the first 5000 rows of the test split (no duplicates among them);
    * ``"val"``: the first 2000 rows of the val split that are neither duplicates nor rows
      of the test split (the full splits share 22 rows; val has 12 duplicates).

    The train split was not obtained: generate training data with
    ``sample_lj(13, n_samples, seed)``.  Pass ``path`` (a .npy file of shape (rows, 39), e.g.
    the full original split) to load other rows in the same format.

    Returns:
        Samples of shape (rows, 13, 3), each centred (the files already are, to 4e-7).
    """
    dtype = _check_dtype(dtype)
    if split == "train":
        raise ValueError(
            "the LJ13 train split is not shipped (it could not be obtained); generate training data with "
            "geoflow.data.particles.sample_lj(13, n_samples, seed)"
        )
    _check_split(split, ("val", "test"))
    if path is not None:
        a = np.load(os.fspath(path), allow_pickle=False)
        if a.ndim != 2 or a.shape[1] != 39:
            raise ValueError(f"{os.fspath(path)}: expected an array of shape (rows, 39), got {a.shape}")
    else:
        a = _load_npy(f"lj13_{split}_{_LJ13_ROWS[split]}.npy")
    return _to_clouds(a, LJ13_SHAPE, True, dtype)


# --------------------------------------------------------------------------- generated data
#: Seeds of the generated LJ splits: fixed, so every run (whatever its ``seed``) sees the same data.
LJ_DATA_SEEDS: dict[str, int] = {"train": 1001, "val": 1002, "test": 1003}
#: Default sizes of the generated splits (LJ13: train only; val and test ship).
LJ_DEFAULT_ROWS: dict[str, int] = {"train": 10000, "val": 2000, "test": 2000}
#: Samples per MCMC chain of the generated data (each chain burns in, then gives this many, 100 iterations apart).
_PER_CHAIN = 10
_CACHE_VERSION = 1


def cache_dir() -> str:
    """Where generated data are kept: ``$GEOFLOW_CACHE`` or ``~/.cache/geoflow``."""
    return os.environ.get("GEOFLOW_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "geoflow")


def generated_lj(n_particles: int, split: str, n_samples: Optional[int] = None, *, log=None) -> torch.Tensor:
    """LJ samples generated by :func:`sample_lj` for a data split, cached on disk (float32).

    Each split comes from its own seed (:data:`LJ_DATA_SEEDS`) and its own chains
    (``ceil(n_samples / 10)`` chains, 3000 burn-in iterations, then 10 samples 100 iterations
    apart), so the splits are independent and identical on every machine and in every run.
    The first call writes ``lj{n}-{split}-{n_samples}-v1.npy`` to :func:`cache_dir`
    atomically (temporary file and rename); later calls read it back and check its shape and
    values (a corrupt file gives a ``ValueError`` that names it: delete it to regenerate).
    LJ55 takes minutes the first time (about 0.1 s per iteration for 1000 chains).

    Returns:
        Centred samples of shape (n_samples, n_particles, 3), float32.
    """
    n = _check_int("n_particles", n_particles, minimum=2)
    _check_split(split, tuple(LJ_DATA_SEEDS))
    rows = LJ_DEFAULT_ROWS[split] if n_samples is None else _check_int("n_samples", n_samples)
    path = os.path.join(cache_dir(), f"lj{n}-{split}-{rows}-v{_CACHE_VERSION}.npy")
    if os.path.exists(path):
        try:
            a = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt cached LJ data ({exc}); delete the file to regenerate it") from None
        if a.shape != (rows, n, 3) or a.dtype != np.float32 or not np.isfinite(a).all():
            raise ValueError(
                f"{path}: cached LJ data of shape {a.shape} and dtype {a.dtype} (expected ({rows}, {n}, 3) float32, "
                "finite); delete the file to regenerate it"
            )
        return torch.from_numpy(a)
    if log is not None:
        log(f"generating {rows} LJ{n} {split} samples by MCMC (once; cached in {path})")
    x = sample_lj(n, rows, LJ_DATA_SEEDS[split], n_chains=-(-rows // _PER_CHAIN), thin=100, dtype=torch.float32)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        np.save(fh, x.numpy(), allow_pickle=False)
    os.replace(tmp, path)
    return x
