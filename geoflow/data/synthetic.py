"""Synthetic distributions on S^2, on flat tori and in the plane, with log-densities.

Each distribution has a ``manifold``, a seeded ``sample(n, generator=..., dtype=...)`` and
a ``log_prob(x)`` with respect to the Riemannian volume of that manifold (area on S^2,
Lebesgue measure on [-pi, pi)^n for the torus and on R^2), so likelihoods of trained models
can be compared with the truth.  The densities are exact closed forms, except
:class:`Moons` (a Gaussian blur of two arcs has no closed form: its ``log_prob`` is a
Gauss-Legendre quadrature of a one-dimensional integral, converged to rounding).

The planar sets are the standard 2-D flow-matching benchmarks, with the constants of the
common implementations (the base distribution is the standard Gaussian N(0, I_2) of
``Euclidean(2)``): :class:`EightGaussians` (torchcfm's ``sample_8gaussians``, Tong et al.
2023), :class:`Moons` (scikit-learn's ``make_moons`` scaled as in torchcfm's
``sample_moons``) and :class:`Checkerboard` (FFJORD's toy ``checkerboard``, Grathwohl et al.
2019).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from manifolds._math import wrap_angle
from manifolds.base import Manifold
from manifolds.euclidean import Euclidean
from manifolds.sphere import Sphere
from manifolds.torus import FlatTorus

__all__ = [
    "SyntheticDistribution",
    "VonMisesFisherMixture",
    "WrappedNormalTorusMixture",
    "CheckerboardTorus",
    "EightGaussians",
    "Moons",
    "Checkerboard",
    "sample_von_mises_fisher",
]

_LOG_2PI = math.log(2.0 * math.pi)
_MAX_REJECTION_ROUNDS = 1000


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"`n` must be an int, got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"`n` must be >= 1, got {n}")
    return n


def _check_dtype(dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"`dtype` must be a floating torch.dtype, got {dtype!r}")
    return dtype


def _check_generator(generator) -> Optional[torch.Generator]:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def _float64(value, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float64).detach().clone()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"`{name}` must be finite, got {value!r}")
    return t


def _weights(weights, k: int) -> torch.Tensor:
    if weights is None:
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
    w = _float64(weights, "weights")
    if w.shape != (k,):
        raise ValueError(f"`weights` must have shape ({k},) (one per component), got {tuple(w.shape)}")
    if bool((w <= 0).any()):
        raise ValueError(f"`weights` must be > 0, got {w.tolist()}")
    return w / w.sum()


class SyntheticDistribution:
    """A distribution on a manifold with exact samples and an exact log-density.

    Subclasses set :attr:`manifold` and implement :meth:`log_prob` and :meth:`_sample`.
    """

    manifold: Manifold

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """log p(x) w.r.t. the Riemannian volume. Shapes: ``(*batch, *point_shape) -> (*batch,)``."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_prob(x)

    def sample(
        self, n: int, *, generator: Optional[torch.Generator] = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """``n`` independent samples, shape ``(n, *point_shape)``; ``generator`` makes them reproducible."""
        return self._sample(_check_n(n), generator=_check_generator(generator), dtype=_check_dtype(dtype))

    def _sample(self, n: int, *, generator, dtype) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_x(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{self!r}: `x` must be a floating torch.Tensor, got {type(x).__name__}")
        shape = tuple(self.manifold.point_shape)
        if tuple(x.shape[x.dim() - len(shape):]) != shape:
            raise ValueError(f"{self!r}: `x` must have trailing shape {shape}, got {tuple(x.shape)}")


# --------------------------------------------------------------------------- vMF
def sample_von_mises_fisher(
    mean: torch.Tensor,
    kappa,
    *,
    generator: Optional[torch.Generator] = None,
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """One sample per row from von Mises-Fisher distributions on S^{m-1} (Wood's algorithm).

    The density is p(x) ∝ exp(kappa <mu, x>). Wood's rejection sampler draws the cosine
    w = <mu, x> with

    .. math::
        b = \\frac{m - 1}{2\\kappa + \\sqrt{4\\kappa^2 + (m-1)^2}},\\quad
        x_0 = \\frac{1 - b}{1 + b},\\quad
        Z \\sim \\mathrm{Beta}(\\tfrac{m-1}{2}, \\tfrac{m-1}{2}),\\quad
        w = \\frac{1 - (1 + b) Z}{1 - (1 - b) Z},

    accepting when kappa w + (m-1) log(1 - x_0 w) - c >= log U, with
    c = kappa x_0 + (m-1) log(1 - x_0^2). Then x = w mu + sqrt(1 - w^2) xi with xi uniform
    on the unit sphere of the tangent space at mu. The test is evaluated in the algebraically
    equal forms 1 - w = 2 b Z / (1 - (1-b) Z), w - x_0 = 2b/(1+b) - (1 - w) and
    log(1 - x_0 w) - log(1 - x_0^2) = log((1 + b) / (2 (1 - (1-b) Z))), so it is exact for very
    large kappa (no cancellation in 1 - w) and for kappa = 0 (uniform). Z is drawn as
    X / (X + Y) with X, Y independent chi-square(m - 1) variables (sums of squared normals),
    so ``generator`` controls every random number. Computed in float64.

    Wood, *Simulation of the von Mises Fisher distribution*, Communications in Statistics -
    Simulation and Computation 23(1), 1994.

    Args:
        mean: mean directions (normalised here), shape ``(*batch, m)`` with m >= 2.
        kappa: concentrations >= 0, a float or a tensor broadcasting against ``(*batch,)``.
        generator: random number generator (CPU).
        dtype: dtype of the result (default: ``mean``'s dtype if floating, else float32).

    Shapes: ``mean`` ``(*batch, m)``, ``kappa`` ``(*batch,)`` -> ``(*batch, m)``.
    """
    _check_generator(generator)
    if dtype is None:
        dtype = mean.dtype if isinstance(mean, torch.Tensor) and mean.is_floating_point() else torch.float32
    _check_dtype(dtype)
    mu = _float64(mean, "mean")
    k = _float64(kappa, "kappa")
    if mu.dim() < 1 or mu.shape[-1] < 2:
        raise ValueError(f"`mean` must have shape (..., m) with m >= 2, got {tuple(mu.shape)}")
    if bool((k < 0).any()):
        raise ValueError(f"`kappa` must be >= 0, got min {float(k.min())}")
    m = mu.shape[-1]
    batch = torch.broadcast_shapes(mu.shape[:-1], k.shape)
    mu = mu.expand(batch + (m,)).reshape(-1, m)
    k = k.expand(batch).reshape(-1)
    norm = mu.norm(dim=-1, keepdim=True)
    if bool((norm == 0).any()):
        raise ValueError("`mean` must be non-zero directions")
    mu = mu / norm
    n = mu.shape[0]
    b = (m - 1) / (2 * k + torch.sqrt(4 * k * k + (m - 1) ** 2))
    one_minus_w = torch.empty(n, dtype=torch.float64)
    pending = torch.arange(n)
    for _ in range(_MAX_REJECTION_ROUNDS):
        if pending.numel() == 0:
            break
        bp, kp = b[pending], k[pending]
        chi = torch.randn(pending.numel(), 2, m - 1, generator=generator, dtype=torch.float64).square().sum(-1)
        z = chi[:, 0] / (chi[:, 0] + chi[:, 1])
        u = torch.rand(pending.numel(), generator=generator, dtype=torch.float64)
        den = 1 - (1 - bp) * z
        omw = 2 * bp * z / den
        log_accept = kp * (2 * bp / (1 + bp) - omw) + (m - 1) * (torch.log1p(bp) - math.log(2.0) - torch.log(den))
        ok = log_accept >= torch.log(u)
        one_minus_w[pending[ok]] = omw[ok]
        pending = pending[~ok]
    else:  # pragma: no cover - acceptance rate is > 1/2 for every kappa and m
        raise RuntimeError("sample_von_mises_fisher: rejection sampler did not finish")
    g = torch.randn(n, m, generator=generator, dtype=torch.float64)
    xi = g - (g * mu).sum(-1, keepdim=True) * mu
    xi = xi / xi.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    omw = one_minus_w.unsqueeze(-1)
    x = (1 - omw) * mu + torch.sqrt((omw * (2 - omw)).clamp_min(0)) * xi
    x = x / x.norm(dim=-1, keepdim=True)
    return x.reshape(batch + (m,)).to(dtype)


class VonMisesFisherMixture(SyntheticDistribution):
    """Mixture of von Mises-Fisher distributions on the sphere S^2.

    .. math::
        p(x) = \\sum_k w_k \\frac{\\kappa_k}{4\\pi\\sinh\\kappa_k} \\exp(\\kappa_k \\langle \\mu_k, x\\rangle)

    w.r.t. the area measure of S^2. For stability at large kappa the code uses
    kappa/(4 pi sinh kappa) exp(kappa <mu, x>) = exp(c_k - kappa |x - mu|^2 / 2) with
    c_k = log kappa - log(2 pi) - log(1 - exp(-2 kappa)) (c_k = -log(4 pi) at kappa = 0),
    which equals the formula above for unit x and never forms sinh(kappa) (finite for
    kappa = 1e6 in float32). Samples: a component by its weight, then Wood's algorithm
    (:func:`sample_von_mises_fisher`).

    Mardia & Jupp, *Directional Statistics*, Wiley 2000, Sec. 9.3.

    Args:
        means: mean directions (normalised here), shape ``(K, 3)``.
        kappas: concentrations >= 0, shape ``(K,)``.
        weights: mixture weights > 0 (normalised here), shape ``(K,)``; default uniform.

    Shapes: ``log_prob``: ``(*batch, 3) -> (*batch,)``; ``sample(n)``: ``(n, 3)``.
    """

    def __init__(self, means, kappas, weights=None):
        mu = _float64(means, "means")
        if mu.dim() != 2 or mu.shape[-1] != 3 or mu.shape[0] < 1:
            raise ValueError(f"`means` must have shape (K, 3) with K >= 1, got {tuple(mu.shape)}")
        norm = mu.norm(dim=-1, keepdim=True)
        if bool((norm == 0).any()):
            raise ValueError("`means` must be non-zero directions")
        kappa = _float64(kappas, "kappas").reshape(-1)
        if kappa.shape != (mu.shape[0],):
            raise ValueError(f"`kappas` must have shape ({mu.shape[0]},), got {tuple(kappa.shape)}")
        if bool((kappa < 0).any()):
            raise ValueError(f"`kappas` must be >= 0, got {kappa.tolist()}")
        self.manifold = Sphere(2)
        self.means = mu / norm
        self.kappas = kappa
        self.weights = _weights(weights, mu.shape[0])
        consts = [
            -math.log(4 * math.pi) if kk == 0 else math.log(kk) - _LOG_2PI - math.log(-math.expm1(-2 * kk))
            for kk in kappa.tolist()
        ]
        self._log_coef = torch.tensor(consts, dtype=torch.float64) + self.weights.log()

    @classmethod
    def default(cls) -> "VonMisesFisherMixture":
        """The ``"vmf_mixture"`` dataset: four components, kappa from 8 to 100."""
        lat_lon = torch.tensor([[45.0, -30.0], [-20.0, 60.0], [10.0, 170.0], [-70.0, -120.0]], dtype=torch.float64)
        lat, lon = torch.deg2rad(lat_lon).unbind(-1)
        means = torch.stack((lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()), dim=-1)
        return cls(means, [20.0, 50.0, 8.0, 100.0], [0.3, 0.25, 0.25, 0.2])

    def __repr__(self) -> str:
        return f"VonMisesFisherMixture(K={self.kappas.numel()}, kappas={[round(k, 4) for k in self.kappas.tolist()]})"

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density w.r.t. the area of S^2. Shapes: ``(*batch, 3) -> (*batch,)``."""
        self._check_x(x)
        mu = self.means.to(dtype=x.dtype, device=x.device)
        sq = (x.unsqueeze(-2) - mu).square().sum(-1)  # (*batch, K)
        lp = self._log_coef.to(dtype=x.dtype, device=x.device) - 0.5 * self.kappas.to(dtype=x.dtype, device=x.device) * sq
        return torch.logsumexp(lp, dim=-1)

    def _sample(self, n, *, generator, dtype):
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return sample_von_mises_fisher(self.means[comp], self.kappas[comp], generator=generator, dtype=dtype)


# ------------------------------------------------------------------ wrapped normal
def _n_wrap(max_scale: float, tol: float) -> tuple[int, float]:
    """Smallest J >= 1 with eps_J = 2 q^{J(J+1)} / (1 - q^{2J}) <= tol, q = exp(-2 pi^2 / sigma^2)."""
    log_q = -2 * math.pi**2 / max_scale**2
    j = 1
    while True:
        log_eps = math.log(2.0) + j * (j + 1) * log_q - math.log(-math.expm1(2 * j * log_q))
        if log_eps <= math.log(tol):
            return j, math.exp(log_eps)
        if j >= 10_000:
            raise ValueError(
                f"`scales` up to {max_scale:g} need more than 10000 wrapping terms per side; "
                "such a wrapped normal is uniform to machine precision, use a smaller scale"
            )
        j += 1


class WrappedNormalTorusMixture(SyntheticDistribution):
    """Mixture of wrapped normal distributions (diagonal covariance) on the flat torus T^n.

    .. math::
        p(\\theta) = \\sum_k w_k \\prod_{i=1}^n \\sum_{j=-J}^{J}
            \\frac{1}{\\sigma_{ki}\\sqrt{2\\pi}}
            \\exp\\Big(-\\frac{(d_{ki} + 2\\pi j)^2}{2\\sigma_{ki}^2}\\Big),
        \\qquad d_{ki} = \\mathrm{wrap}(\\theta_i - m_{ki}) \\in [-\\pi, \\pi)

    w.r.t. the Lebesgue measure on [-pi, pi)^n. The exact density has j over all integers.

    Truncation bound: for |d| <= pi, the ratio of the j-th term to the j = 0 term is at
    most q^{|j|(|j|-1)} with q = exp(-2 pi^2 / sigma^2), so the dropped terms (|j| > J) are
    at most eps_J = 2 q^{J(J+1)} / (1 - q^{2J}) relative to the kept sum, in each dimension.
    Hence 0 <= log p - log p_J <= n eps_J for every theta. J (:attr:`n_wrap`) is the smallest
    J >= 1 with eps_J <= ``wrap_tol`` for the largest sigma; :attr:`log_prob_error_bound`
    is n eps_J. Samples are exact: m_k + sigma_k * N(0, I), wrapped.

    Jammalamadaka & SenGupta, *Topics in Circular Statistics*, World Scientific 2001, Sec. 2.2.

    Args:
        means: component means (any real angles; wrapped here), shape ``(K, n)``.
        scales: standard deviations sigma > 0, broadcasting to ``(K, n)``.
        weights: mixture weights > 0 (normalised here), shape ``(K,)``; default uniform.
        wrap_tol: relative truncation tolerance eps_J per dimension (default 1e-16).

    Shapes: ``log_prob``: ``(*batch, n) -> (*batch,)``; ``sample(n)``: ``(n, dim)``.
    """

    def __init__(self, means, scales, weights=None, *, wrap_tol: float = 1e-16):
        m = _float64(means, "means")
        if m.dim() != 2 or m.shape[0] < 1 or m.shape[1] < 1:
            raise ValueError(f"`means` must have shape (K, n) with K, n >= 1, got {tuple(m.shape)}")
        s = _float64(scales, "scales")
        try:
            s = s.expand(m.shape).clone()
        except RuntimeError:
            raise ValueError(f"`scales` must broadcast to {tuple(m.shape)}, got {tuple(s.shape)}") from None
        if bool((s <= 0).any()):
            raise ValueError(f"`scales` must be > 0, got {s.tolist()}")
        if isinstance(wrap_tol, bool) or not isinstance(wrap_tol, (int, float)) or not 0 < wrap_tol < 1:
            raise ValueError(f"`wrap_tol` must be a float in (0, 1), got {wrap_tol!r}")
        self.manifold = FlatTorus(int(m.shape[1]))
        self.means = wrap_angle(m)
        self.scales = s
        self.weights = _weights(weights, m.shape[0])
        self.n_wrap, eps = _n_wrap(float(s.max()), float(wrap_tol))
        self.log_prob_error_bound = m.shape[1] * eps
        self._shifts = 2 * math.pi * torch.arange(-self.n_wrap, self.n_wrap + 1, dtype=torch.float64)
        self._log_norm = (-(s.log()) - 0.5 * _LOG_2PI).sum(-1) + self.weights.log()  # (K,)

    @classmethod
    def default(cls) -> "WrappedNormalTorusMixture":
        """The ``"wrapped_normal_torus"`` dataset on T^2: four components, two across the seam, one broad."""
        means = [[-2.8, 2.9], [1.0, -1.0], [3.0, 0.5], [0.5, 2.0]]
        scales = [[0.4, 0.4], [0.3, 0.6], [0.5, 0.25], [1.2, 1.2]]
        return cls(means, scales, [0.3, 0.3, 0.2, 0.2])

    def __repr__(self) -> str:
        return f"WrappedNormalTorusMixture(K={self.means.shape[0]}, n={self.manifold.n}, n_wrap={self.n_wrap})"

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density (wrap sum truncated at ``n_wrap``, see the class docstring). Shapes: ``(*batch, n) -> (*batch,)``."""
        self._check_x(x)
        kw = dict(dtype=x.dtype, device=x.device)
        d = wrap_angle(x.unsqueeze(-2) - self.means.to(**kw))  # (*batch, K, n)
        s = self.scales.to(**kw)
        z = (d.unsqueeze(-1) + self._shifts.to(**kw)) / s.unsqueeze(-1)  # (*batch, K, n, 2J+1)
        lp = torch.logsumexp(-0.5 * z.square(), dim=-1).sum(-1) + self._log_norm.to(**kw)
        return torch.logsumexp(lp, dim=-1)

    def _sample(self, n, *, generator, dtype):
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.manifold.n, generator=generator, dtype=torch.float64)
        x = wrap_angle(self.means[comp] + self.scales[comp] * eps)
        return wrap_angle(x.to(dtype))


# -------------------------------------------------------------------- checkerboard
class CheckerboardTorus(SyntheticDistribution):
    """Checkerboard on the flat torus T^2: uniform on the dark squares of a k x k board.

    [-pi, pi)^2 is cut into k x k squares of side h = 2 pi / k (k even, so the pattern is
    periodic); square (i, j) = (floor((theta_1 + pi)/h), floor((theta_2 + pi)/h)) is dark when
    i + j is even. The dark squares cover half the torus, so

    .. math::
        \\log p(\\theta) = \\log\\frac{2}{4\\pi^2} \\text{ on dark squares}, \\quad -\\infty \\text{ elsewhere}.

    Sampling is rejection from the uniform distribution, accepting exactly the candidates
    whose :meth:`log_prob` is finite (evaluated on the returned tensor, in its dtype), so
    every sample has a finite log_prob, even at square edges.

    Args:
        k: squares per side, even and >= 2 (default 4).

    Shapes: ``log_prob``: ``(*batch, 2) -> (*batch,)``; ``sample(n)``: ``(n, 2)``.
    """

    def __init__(self, *, k: int = 4):
        if isinstance(k, bool) or not isinstance(k, int):
            raise TypeError(f"`k` must be an int, got {type(k).__name__} {k!r}")
        if k < 2 or k % 2:
            raise ValueError(f"`k` must be an even int >= 2, got {k}")
        self.k = k
        self.manifold = FlatTorus(2)
        self.log_density = math.log(2.0 / (4 * math.pi**2))

    @classmethod
    def default(cls) -> "CheckerboardTorus":
        """The ``"checkerboard_torus"`` dataset: a 4 x 4 board."""
        return cls(k=4)

    def __repr__(self) -> str:
        return f"CheckerboardTorus(k={self.k})"

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log(2 / (4 pi^2)) on dark squares, -inf elsewhere. Shapes: ``(*batch, 2) -> (*batch,)``."""
        self._check_x(x)
        cell = torch.floor((wrap_angle(x) + math.pi) * (self.k / (2 * math.pi))).clamp(0, self.k - 1)
        dark = torch.remainder(cell.sum(-1), 2) == 0
        inside = torch.tensor(self.log_density, dtype=x.dtype, device=x.device)
        return torch.where(dark, inside, -math.inf)

    def _sample(self, n, *, generator, dtype):
        out, have = [], 0
        for _ in range(_MAX_REJECTION_ROUNDS):
            m = 2 * (n - have) + 16
            cand = wrap_angle(torch.rand(m, 2, generator=generator, dtype=dtype) * (2 * math.pi) - math.pi)
            keep = cand[torch.isfinite(self.log_prob(cand))]
            out.append(keep)
            have += keep.shape[0]
            if have >= n:
                return torch.cat(out)[:n]
        raise RuntimeError("CheckerboardTorus.sample: rejection sampler did not finish")  # pragma: no cover


# ------------------------------------------------------------------------- plane R^2
def _check_pos(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}")
    return float(value)


def _check_finite(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}")
    return float(value)


def _check_count(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"`{name}` must be >= {low}, got {value}")
    return value


class EightGaussians(SyntheticDistribution):
    """Eight isotropic Gaussians with equal weights on a circle in R^2.

    .. math::
        p(x) = \\frac{1}{K} \\sum_{k=0}^{K-1} \\frac{1}{2\\pi s^2}
            \\exp\\Big(-\\frac{|x - \\mu_k|^2}{2 s^2}\\Big),\\qquad
        \\mu_k = r\\,(\\cos(2\\pi k / K), \\sin(2\\pi k / K))

    w.r.t. the Lebesgue measure of R^2 (exact). Defaults (K = 8, r = 5, s^2 = sqrt(0.1),
    s = 0.1^{1/4} = 0.562) are those of torchcfm's ``sample_8gaussians`` used by Tong et al.
    2023 ("Improving and generalizing flow-based generative models with minibatch optimal
    transport", TMLR 2024) for their N(0, I) -> 8 Gaussians path-energy numbers: torchcfm calls
    ``eight_normal_sample(n, 2, scale=5, var=0.1)``, which passes ``sqrt(var) * I`` as the
    *covariance* matrix, so the variance is sqrt(0.1) = 0.316, not 0.1.

    Args:
        radius: circle radius r (> 0, default 5).
        std: standard deviation s of each component (> 0, default 0.1 ** 0.25).
        k: number of components K (>= 1, default 8).

    Shapes: ``log_prob``: ``(*batch, 2) -> (*batch,)``; ``sample(n)``: ``(n, 2)``.
    """

    def __init__(self, *, radius: float = 5.0, std: float = 0.1**0.25, k: int = 8):
        self.radius = _check_pos("radius", radius)
        self.std = _check_pos("std", std)
        self.k = _check_count("k", k, 1)
        self.manifold = Euclidean(2)
        angle = 2 * math.pi * torch.arange(self.k, dtype=torch.float64) / self.k
        self.means = self.radius * torch.stack((angle.cos(), angle.sin()), dim=-1)  # (K, 2)
        self._log_norm = -math.log(self.k) - _LOG_2PI - 2 * math.log(self.std)

    @classmethod
    def default(cls) -> "EightGaussians":
        """The ``"eight_gaussians"`` dataset: r = 5, s^2 = sqrt(0.1) (torchcfm's constants)."""
        return cls()

    def __repr__(self) -> str:
        return f"EightGaussians(k={self.k}, radius={self.radius:g}, std={self.std:.4g})"

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density w.r.t. Lebesgue measure. Shapes: ``(*batch, 2) -> (*batch,)``."""
        self._check_x(x)
        mu = self.means.to(dtype=x.dtype, device=x.device)
        sq = (x.unsqueeze(-2) - mu).square().sum(-1)  # (*batch, K)
        return torch.logsumexp(-0.5 * sq / self.std**2, dim=-1) + self._log_norm

    def _sample(self, n, *, generator, dtype):
        comp = torch.randint(self.k, (n,), generator=generator)
        eps = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (self.means[comp] + self.std * eps).to(dtype)


class Moons(SyntheticDistribution):
    """Two interleaving half circles blurred by Gaussian noise ("two moons") in R^2.

    A point is c(t) + s eps with eps ~ N(0, I), t ~ U[0, pi] and, with probability 1/2 each,

    .. math::
        c_{\\rm out}(t) = a\\,(\\cos t, \\sin t) + b,\\qquad
        c_{\\rm in}(t) = a\\,(1 - \\cos t, \\tfrac12 - \\sin t) + b,\\qquad s = a \\cdot \\text{noise}

    (scikit-learn's ``make_moons(noise=0.2)`` with random instead of evenly spaced t, mapped by
    x -> a x + b with a = 3, b = -1 as in torchcfm's ``sample_moons``).  torchcfm gets its
    moons from torchdyn's ``generate_moons``, which (in the public copies we read) adds a
    *uniform* shift U(0, noise) (1, 1) along the diagonal instead of isotropic Gaussian noise;
    we keep scikit-learn's Gaussian noise, which gives a smooth density.

    The density has no closed form:

    .. math::
        p(x) = \\frac{1}{2\\pi} \\sum_{c \\in \\{c_{\\rm out}, c_{\\rm in}\\}}
            \\int_0^\\pi \\frac{1}{2\\pi s^2} e^{-|x - c(t)|^2 / (2 s^2)}\\,dt,

    and :meth:`log_prob` evaluates the integral with ``nodes``-point Gauss-Legendre quadrature
    on [0, pi] (in log space, with ``logsumexp``).  The integrand is entire in t with a width
    of about s / a = 0.2 radians (less far from the arcs), so the rule converges
    exponentially; with the default 256 nodes log p agrees with a 1024-node rule to rounding,
    |error| < 1e-12 (1 + |log p|), over |x_i| < 30 (tests/data/test_synthetic_plane.py; 64
    nodes are not enough far from the arcs).

    Args:
        noise: noise level in the unscaled coordinates (> 0, default 0.2), s = a * noise.
        scale: the scale a (> 0, default 3).
        offset: the shift b added to both coordinates (default -1).
        nodes: Gauss-Legendre nodes per arc (>= 8, default 256).

    Shapes: ``log_prob``: ``(*batch, 2) -> (*batch,)``; ``sample(n)``: ``(n, 2)``.
    """

    def __init__(self, *, noise: float = 0.2, scale: float = 3.0, offset: float = -1.0, nodes: int = 256):
        self.noise = _check_pos("noise", noise)
        self.scale = _check_pos("scale", scale)
        self.offset = _check_finite("offset", offset)
        self.nodes = _check_count("nodes", nodes, 8)
        self.std = self.scale * self.noise
        self.manifold = Euclidean(2)
        import numpy as np

        u, w = np.polynomial.legendre.leggauss(self.nodes)
        t = torch.from_numpy((u + 1) * (math.pi / 2))
        arcs = torch.cat([self._centers(t, 0), self._centers(t, 1)])  # (2 Q, 2)
        # p = (1/2)(1/pi)(pi/2) sum_i w_i phi(x - c(t_i)) over both arcs, phi the N(0, s^2 I) density
        self._arcs = arcs
        self._log_w = torch.from_numpy(np.log(w)).repeat(2) + (-math.log(4.0) - _LOG_2PI - 2 * math.log(self.std))

    def _centers(self, t: torch.Tensor, which) -> torch.Tensor:
        """c_out(t) (which = 0) or c_in(t) (which = 1); ``which`` may be a tensor like t."""
        which = torch.as_tensor(which, dtype=t.dtype)
        cx = torch.where(which == 0, t.cos(), 1 - t.cos())
        cy = torch.where(which == 0, t.sin(), 0.5 - t.sin())
        return self.scale * torch.stack((cx, cy), dim=-1) + self.offset

    @classmethod
    def default(cls) -> "Moons":
        """The ``"moons"`` dataset: noise 0.2, then 3 x - 1 (torchcfm's constants)."""
        return cls()

    def __repr__(self) -> str:
        return f"Moons(noise={self.noise:g}, scale={self.scale:g}, offset={self.offset:g}, nodes={self.nodes})"

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) by Gauss-Legendre quadrature (see the class docstring). Shapes: ``(*batch, 2) -> (*batch,)``."""
        self._check_x(x)
        arcs = self._arcs.to(device=x.device)
        sq = (x.to(torch.float64).unsqueeze(-2) - arcs).square().sum(-1)  # (*batch, 2 Q), in float64
        lp = torch.logsumexp(self._log_w.to(device=x.device) - 0.5 * sq / self.std**2, dim=-1)
        return lp.to(x.dtype)

    def _sample(self, n, *, generator, dtype):
        which = torch.randint(2, (n,), generator=generator).to(torch.float64)
        t = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
        eps = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (self._centers(t, which) + self.std * eps).to(dtype)


class Checkerboard(SyntheticDistribution):
    """Uniform distribution on the dark squares of a k x k checkerboard centred at 0 in R^2.

    The board [-L, L)^2, L = k h / 2, is cut into squares of side h; square
    (i, j) = (floor((x_1 + L) / h), floor((x_2 + L) / h)) is dark when i + j is even. There
    are k^2 / 2 dark squares (k even), so (exact)

    .. math::
        \\log p(x) = -\\log(k^2 h^2 / 2) \\text{ on dark squares},\\quad -\\infty \\text{ elsewhere}.

    The defaults k = 4, h = 2 (the board [-4, 4)^2, p = 1/32 on its dark squares) are those of
    FFJORD's toy ``checkerboard`` (Grathwohl et al. 2019, "FFJORD: Free-form Continuous
    Dynamics for Scalable Reversible Generative Models", ICLR), the usual 2-D flow matching
    benchmark.  Samples: a dark square uniformly, then a uniform point in it; a candidate that
    rounding puts on a light square's edge (possible in float32) is drawn again, so every
    sample has a finite :meth:`log_prob`.

    Args:
        k: squares per side, even and >= 2 (default 4).
        side: side h of a square (> 0, default 2).

    Shapes: ``log_prob``: ``(*batch, 2) -> (*batch,)``; ``sample(n)``: ``(n, 2)``.
    """

    def __init__(self, *, k: int = 4, side: float = 2.0):
        k = _check_count("k", k, 2)
        if k % 2:
            raise ValueError(f"`k` must be an even int >= 2, got {k}")
        self.k = k
        self.side = _check_pos("side", side)
        self.half_width = k * self.side / 2
        self.manifold = Euclidean(2)
        self.log_density = -math.log(k * k * self.side**2 / 2)
        ij = torch.cartesian_prod(torch.arange(k), torch.arange(k))
        self._dark = ij[(ij.sum(-1) % 2) == 0].to(torch.float64)  # (k^2 / 2, 2) square indices

    @classmethod
    def default(cls) -> "Checkerboard":
        """The ``"checkerboard"`` dataset: a 4 x 4 board of side-2 squares on [-4, 4)^2 (FFJORD's)."""
        return cls()

    def __repr__(self) -> str:
        return f"Checkerboard(k={self.k}, side={self.side:g})"

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log(2 / (k h)^2) on dark squares, -inf elsewhere. Shapes: ``(*batch, 2) -> (*batch,)``."""
        self._check_x(x)
        cell = torch.floor((x + self.half_width) / self.side)
        inside = ((cell >= 0) & (cell < self.k)).all(-1)
        dark = inside & (torch.remainder(cell.sum(-1), 2) == 0)
        value = torch.tensor(self.log_density, dtype=x.dtype, device=x.device)
        return torch.where(dark, value, -math.inf)

    def _sample(self, n, *, generator, dtype):
        out, have = [], 0
        for _ in range(_MAX_REJECTION_ROUNDS):
            m = n - have
            sq = self._dark[torch.randint(self._dark.shape[0], (m,), generator=generator)]
            u = torch.rand(m, 2, generator=generator, dtype=torch.float64)
            cand = ((sq + u) * self.side - self.half_width).to(dtype)
            keep = cand[torch.isfinite(self.log_prob(cand))]
            out.append(keep)
            have += keep.shape[0]
            if have >= n:
                return torch.cat(out)[:n]
        raise RuntimeError("Checkerboard.sample: rejection sampler did not finish")  # pragma: no cover
