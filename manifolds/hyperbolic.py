"""Hyperbolic space: the Poincare ball and the Lorentz (hyperboloid) model.

Both are built on geoopt's classes (``geoopt.PoincareBall``, ``geoopt.Lorentz``) so that
``geoopt.ManifoldParameter`` and ``geoopt.optim.RiemannianAdam`` work on them, but every
operation is re-implemented here:

* the curvature is a Python float, so float64 computations use it exactly (geoopt keeps it
  as a float32 parameter, which rounds e.g. c = 0.1);
* the formulas are lean (few passes over the batch; dot products over a last dimension of
  2 or 3 as column chains) and accurate at both ends: near ``x == y`` (no
  ``arccosh(1 + tiny)``) and far away (hyperboloid distances through the ball chart, no
  cancellation in ``-<x, y>_L - k``); ``asinh`` is written with ``log1p``, several times
  faster than torch's scalar ``asinh`` kernel on CPU;
* values and gradients are finite at ``x == y``, at the origin, at the edge of the ball and
  for huge tangent vectors, in float32 and float64.

Base distribution of both: the wrapped normal at the origin, x = exp_o(sum_i e_i b_i) with
e ~ N(0, I_n) and (b_i) an orthonormal basis of the tangent space at the origin o.  Its
log-density w.r.t. the Riemannian volume is exact:

.. math::
    \\log p(x) = -\\tfrac{n}{2}\\log(2\\pi) - \\tfrac{r^2}{2}
        - (n - 1) \\log\\frac{\\sinh(\\sqrt{K} r)}{\\sqrt{K} r}, \\qquad r = d(o, x)

with sectional curvature -K (K = c on the ball, K = 1/k on the hyperboloid); see Nagano et
al., "A Wrapped Normal Distribution on Hyperbolic Space", ICML 2019, and Mathieu et al.,
"Continuous Hierarchical Representations with Poincare VAEs", NeurIPS 2019.
"""

from __future__ import annotations

import math

import geoopt
import torch

from ._math import any_true as _any, log_sinhc
from .base import Manifold

__all__ = ["PoincareBall", "Lorentz"]

# Distance of projx's boundary from the edge of the ball, in units of 1/sqrt(c): points
# have sqrt(c)|x| <= 1 - eps, i.e. they lie within log(2/eps)/sqrt(c) of the origin
# (about 12.2/sqrt(c) in float32, 19.1/sqrt(c) in float64).
_BALL_EPS = {torch.float16: 1e-2, torch.bfloat16: 1e-2, torch.float32: 1e-5, torch.float64: 1e-8}
# Hyperboloid: spatial norm |x_1:| <= M sqrt(k) (distance from the origin up to about
# sqrt(k) log(2 M): 35 sqrt(k) in float32, 231 sqrt(k) in float64), so that products of
# coordinates stay finite; expmap clamps |u|_L / sqrt(k) to THETA_MAX.
_LORENTZ_MAX = {torch.float16: 1e2, torch.bfloat16: 1e4, torch.float32: 1e15, torch.float64: 1e100}
_THETA_MAX = {torch.float16: 5.0, torch.bfloat16: 9.0, torch.float32: 40.0, torch.float64: 240.0}
_LOG_2PI = math.log(2.0 * math.pi)
# Below this value of the Moebius denominator 1 + 2c<x, v> + c^2|x|^2|v|^2 the plain formula
# has lost more than a factor 100 of precision; those rows use PoincareBall._mobius_dir.
_ILL = 1e-2


# --------------------------------------------------------------------- helpers


def _dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """<x, y> over the last dimension, keepdim.

    torch reduces a last dimension of size 2 or 3 slowly; for those a chain of column
    products is 2-3x faster than ``(x * y).sum(-1)``, beyond that a batched matmul is.
    """
    if x.shape[-1] > 3:
        return (x.unsqueeze(-2) @ y.unsqueeze(-1)).squeeze(-1)
    p = x[..., :1] * y[..., :1]
    for i in range(1, x.shape[-1]):
        p = torch.addcmul(p, x[..., i : i + 1], y[..., i : i + 1])
    return p


def _mdot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Minkowski product <x, y>_L = -x_0 y_0 + sum_i x_i y_i, keepdim."""
    if x.shape[-1] > 3:
        return _dot(x[..., 1:], y[..., 1:]) - x[..., :1] * y[..., :1]
    p = -(x[..., :1] * y[..., :1])
    for i in range(1, x.shape[-1]):
        p = torch.addcmul(p, x[..., i : i + 1], y[..., i : i + 1])
    return p


def _delta2(dtype) -> float:
    """Square of an argument below which f(a) = 1 + O(a^2) (cosh, sinhc, tanhc, asinhc) rounds to 1.

    Clamping a^2 there keeps those ratios finite (no 0/0) at no cost in accuracy; the derivative
    lost below it is O(a) <= 1e-8 (float32: 2e-4).
    """
    return 0.25 * torch.finfo(dtype).eps


def _tiny(dtype) -> float:
    return torch.finfo(dtype).tiny


def _asinh(q: torch.Tensor, q2=None) -> torch.Tensor:
    """asinh(q) for q >= 0 through log1p (accurate near 0; torch.asinh is several times slower on CPU); q2 = q^2 if known."""
    q2 = q * q if q2 is None else q2
    return torch.log1p(q + q2 / (1.0 + torch.sqrt(1.0 + q2)))


def _asinhc_sq(s: torch.Tensor) -> torch.Tensor:
    """asinh(q) / q with q = sqrt(s), s >= 0; equal to 1 (to round-off) for s below eps."""
    s = s.clamp_min(_delta2(s.dtype))
    q = torch.sqrt(s)
    return torch.log1p(q + s / (1.0 + torch.sqrt(1.0 + s))) / q


def _tanhc_sq(a2: torch.Tensor) -> torch.Tensor:
    """tanh(a) / a with a = sqrt(a2) >= 0."""
    a = torch.sqrt(a2.clamp_min(_delta2(a2.dtype)))
    return torch.tanh(a) / a


def _sqrt0(s: torch.Tensor) -> torch.Tensor:
    """sqrt(s), exactly 0 with gradient 0 for s <= tiny; off by at most sqrt(tiny) (1e-19 in float32) elsewhere."""
    tiny = _tiny(s.dtype)
    return torch.sqrt(s.clamp_min(tiny)) - math.sqrt(tiny)


def _replace_rows(ill: torch.Tensor, y: torch.Tensor, fn, *args) -> torch.Tensor:
    """``torch.where(ill, fn(*args), y)`` evaluating ``fn`` on the rows where ``ill`` (shape (..., 1)) holds only.

    ``args`` broadcast against ``y``'s batch shape.  Under ``torch.func.vmap`` (no dynamic
    shapes) ``fn`` runs on every row instead.
    """
    try:
        idx = torch.nonzero(ill.squeeze(-1), as_tuple=True)
        sub = [a.expand(y.shape[:-1] + a.shape[-1:])[idx] for a in args]
    except RuntimeError:
        return torch.where(ill, fn(*args), y)
    return y.index_put(idx, fn(*sub))


def _squeeze(v: torch.Tensor, keepdim: bool) -> torch.Tensor:
    return v if keepdim else v.squeeze(-1)


# ======================================================================= ball
class PoincareBall(Manifold, geoopt.PoincareBall):
    """Poincare ball B^n_c = {x in R^n : c|x|^2 < 1} of constant curvature -c.

    .. math::
        g_x = \\lambda_x^2 I, \\quad \\lambda_x = \\frac{2}{1 - c|x|^2}, \\qquad
        d(x, y) = \\frac{2}{\\sqrt{c}} \\operatorname{asinh}\\Big(
            \\frac{\\sqrt{c}\\,|x - y|}{\\sqrt{(1 - c|x|^2)(1 - c|y|^2)}}\\Big)
            = \\frac{2}{\\sqrt{c}} \\operatorname{artanh}(\\sqrt{c}\\,|(-x) \\oplus_c y|)

    .. math::
        \\exp_x(u) = x \\oplus_c \\Big(\\tanh\\big(\\tfrac{\\sqrt{c}\\lambda_x|u|}{2}\\big)
            \\frac{u}{\\sqrt{c}|u|}\\Big), \\qquad
        \\log_x(y) = \\frac{2}{\\sqrt{c}\\lambda_x} \\operatorname{artanh}(\\sqrt{c}|w|)
            \\frac{w}{|w|}, \\quad w = (-x) \\oplus_c y

    with Moebius addition x (+)_c y (Ganea et al., "Hyperbolic Neural Networks", NeurIPS 2018).
    In code the logarithm is ``(1 - c x2) asinhc(q) / sqrt(B (A + B)) * ((1 - c x2)(y - x) - A x)``
    with ``A = c|y - x|^2``, ``B = (1 - c|x|^2)(1 - c|y|^2)``, ``q = sqrt(A / B)`` (the same
    vector as above, without the cancellation of artanh near the edge).

    ``projx`` keeps sqrt(c)|x| <= 1 - eps with eps = 1e-5 (float32) or 1e-8 (float64);
    ``expmap`` projects its result, so huge tangent vectors land at the edge, not outside.
    Base distribution: wrapped normal at the origin (module docstring), K = c.

    Args:
        n: dimension of the ball.
        c: curvature magnitude (curvature is -c), a positive float, stored exactly.

    Shapes: points and tangent vectors ``(*batch, n)``.
    """

    name = "PoincareBall"

    def __init__(self, n: int, c: float = 1.0):
        n = self._check_int("n", n)
        c = self._check_positive("c", c)
        geoopt.PoincareBall.__init__(self, c=c)
        # geoopt stores softplus^-1(c) as a float32 parameter; we keep c as a Python float.
        del self.isp_c
        self.register_buffer("_ref", torch.zeros(()), persistent=False)
        self._c = c
        self._sqrt_c = math.sqrt(c)
        self.n = n
        self._set_shape((n,), n)
        self.injectivity_radius = math.inf
        self.normalisation_chart = ("gaussian", 1.5)

    # geoopt's PoincareBall exposes c and k = -c as tensors; here c is exact.
    @property
    def c(self) -> float:
        """Curvature magnitude c (a Python float); the sectional curvature is -c."""
        return self._c

    @property
    def k(self) -> torch.Tensor:
        """geoopt's sectional curvature -c as a 0-dim tensor (module dtype), for geoopt's own methods."""
        return torch.tensor(-self._c, dtype=self._ref.dtype, device=self._ref.device)

    @property
    def curvature(self) -> float:
        """Sectional curvature -c."""
        return -self._c

    def extra_repr(self) -> str:
        return f"n={self.n}, c={self._c!r}"

    def base_origin(self, dtype=None, device=None) -> torch.Tensor:
        """The origin 0 (centre of the base distribution), shape ``(n,)``."""
        return torch.zeros(self.n, dtype=self._default_dtype(dtype), device=device)

    # ----------------------------------------------------------------- checks
    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5):
        r = self._sqrt_c * torch.linalg.vector_norm(x.double(), dim=-1)
        worst = float(r.max()) if r.numel() else 0.0
        if not worst < 1.0:
            return False, (
                f"expected sqrt(c)|x| < 1 (points of shape (..., {self.n}) inside the ball of radius "
                f"1/sqrt(c) = {1 / self._sqrt_c:.6g}), but max sqrt(c)|x| = {worst:.6g}; use projx to project"
            )
        return True, None

    def _check_vector_on_tangent(self, x, u, *, atol=1e-5, rtol=1e-5):
        return True, None

    # --------------------------------------------------------------- geometry
    def _omx(self, x2: torch.Tensor) -> torch.Tensor:
        """1 - c|x|^2, kept positive (2 / lambda_x)."""
        return (1.0 - self._c * x2).clamp_min(_BALL_EPS.get(x2.dtype, 1e-5) ** 2)

    def _maxnorm(self, dtype) -> float:
        return (1.0 - _BALL_EPS.get(dtype, 1e-5)) / self._sqrt_c

    def _clip(self, y: torch.Tensor) -> torch.Tensor:
        y2 = _dot(y, y)
        scale = (self._maxnorm(y.dtype) * torch.rsqrt(y2.clamp_min(_tiny(y.dtype)))).clamp_max(1.0)
        return y * scale

    def projx(self, x):
        """Scale points with sqrt(c)|x| > 1 - eps back onto the sphere of radius (1 - eps)/sqrt(c)."""
        return self._clip(x)

    def proju(self, x, u):
        return u.expand(torch.broadcast_shapes(x.shape, u.shape))

    def lambda_x(self, x, *, keepdim=False):
        """Conformal factor lambda_x = 2 / (1 - c|x|^2)."""
        return _squeeze(2.0 / self._omx(_dot(x, x)), keepdim)

    def inner(self, x, u, v=None, *, keepdim=False):
        """Riemannian metric lambda_x^2 <u, v>."""
        uv = _dot(u, u if v is None else v)
        lam = 2.0 / self._omx(_dot(x, x))
        return _squeeze(lam * lam * uv, keepdim)

    def component_inner(self, x, u, v=None):
        return self.inner(x, u, v, keepdim=True)

    def norm(self, x, u, *, keepdim=False):
        """Riemannian norm lambda_x |u|."""
        return _squeeze(2.0 / self._omx(_dot(x, x)) * torch.linalg.vector_norm(u, dim=-1, keepdim=True), keepdim)

    def egrad2rgrad(self, x, u):
        omx = self._omx(_dot(x, x))
        return u * (0.25 * omx * omx)

    def _mobius_dir(self, x, x2, omx, e, tw, omtw):
        """x (+)_c (tw / sqrt(c)) e for a unit vector e (or 0), tw = tanh(a) >= 0, omtw = 1 - tw.

        The plain Moebius formula divides by 1 + 2c<x, v> + c^2|x|^2|v|^2, which cancels to
        round-off when x and v are both near the edge and nearly opposite (a long step from the
        edge back inwards).  Here every term is a sum of non-negative parts:
        den = (1 - p tw)^2 + p tw |x_hat + e|^2 and alpha = (1 - tw)^2 + 2 tw (1 - p) + p tw |x_hat + e|^2
        with p = sqrt(c)|x|, 1 - p = (1 - c|x|^2) / (1 + p) and 1 - tw = 2 sigmoid(-2a) exact.
        """
        pn = _sqrt0(self._c * x2)
        xh = x * torch.rsqrt(x2.clamp_min(_tiny(x.dtype)))
        h = xh + e
        g = _dot(h, h)
        omp = omx / (1.0 + pn)
        rho = omp + pn * omtw
        ptg = pn * tw * g
        den = rho * rho + ptg
        alpha = omtw * omtw + 2.0 * tw * omp + ptg
        return (xh * (alpha * pn) + e * (omx * tw)) / (den * self._sqrt_c)

    def expmap(self, x, u):
        c = self._c
        x2, u2, xu = _dot(x, x), _dot(u, u), _dot(x, u)
        omx = self._omx(x2)
        # a = sqrt(c) lambda_x |u| / 2;  v = s u = tanh(a) u / (sqrt(c)|u|)
        a2 = c * u2 / (omx * omx)
        s = _tanhc_sq(a2) / omx
        xv, v2 = s * xu, s * s * u2
        cxv2 = 1.0 + 2.0 * c * xv
        den = cxv2 + c * c * x2 * v2
        ill = den < _ILL
        den = den.clamp_min(_ILL)  # the plain formula is used only where den >= _ILL
        y = x * ((cxv2 + c * v2) / den) + u * (omx * s / den)
        if _any(ill):
            y = _replace_rows(ill, y, self._expmap_stable, x, x2, omx, u, u2, a2)
        return self._clip(y)

    def _expmap_stable(self, x, x2, omx, u, u2, a2):
        a = _sqrt0(a2)
        e = u * torch.rsqrt(u2.clamp_min(_tiny(u.dtype)))
        return self._mobius_dir(x, x2, omx, e, torch.tanh(a), 2.0 * torch.sigmoid(-2.0 * a))

    def retr(self, x, u):
        return self.expmap(x, u)

    def _log_parts(self, x, y):
        c = self._c
        d = y - x
        x2, y2, d2 = _dot(x, x), _dot(y, y), _dot(d, d)
        omx, omy = self._omx(x2), self._omx(y2)
        A = c * d2
        B = omx * omy
        return d, x2, d2, omx, A, B

    def logmap(self, x, y):
        d, x2, d2, omx, A, B = self._log_parts(x, y)
        k = omx * _asinhc_sq(A / B) * torch.rsqrt(B) * torch.rsqrt(A + B)
        return d * (k * omx) - x * (k * A)

    def dist(self, x, y, *, keepdim=False):
        d = x - y
        q2 = (self._c * _dot(d, d)) / (self._omx(_dot(x, x)) * self._omx(_dot(y, y)))
        return _squeeze(_asinh(_sqrt0(q2), q2) * (2.0 / self._sqrt_c), keepdim)

    def dist2(self, x, y, *, keepdim=False):
        return self.dist(x, y, keepdim=keepdim) ** 2

    def _geodesic(self, x0, x1, t, velocity: bool):
        # gamma(t) = x0 (+) s(t) w_hat, s(t) = tanh(t a) / sqrt(c), a = sqrt(c) d(x0, x1) / 2,
        # w = (1 - c|x0|^2)(x1 - x0) - A x0 (direction of (-x0) (+) x1); s w_hat = sv * w.
        c = self._c
        d, x2, d2, omx, A, B = self._log_parts(x0, x1)
        t = self._expand_t(t, x0)
        s_ab = A / B
        K = _asinhc_sq(s_ab) * torch.rsqrt(B) * torch.rsqrt(A + B)
        a = _asinh(_sqrt0(s_ab))  # sqrt(c) d(x0, x1) / 2
        ta = t * a
        sv = t * _tanhc_sq(ta * ta) * K
        w = d * omx - x0 * A
        xw = omx * _dot(x0, d) - A * x2
        ww = d2 * (A + B)
        p = sv * xw  # <x0, s w_hat>
        ss = sv * sv * ww  # s^2
        alpha = 1.0 + 2.0 * c * p + c * ss
        den = 1.0 + 2.0 * c * p + c * c * x2 * ss
        ill = den < _ILL
        den = den.clamp_min(_ILL)
        xt = x0 * (alpha / den) + w * (omx * sv / den)
        if _any(ill):  # long steps from near the edge back inwards: stable Moebius addition
            xt = _replace_rows(ill, xt, self._geodesic_stable, x0, x2, omx, w, ww, ta)
        xt = self._clip(xt)
        if not velocity:
            return xt
        # d gamma / dt = s'(t) d gamma / ds; s' w_hat = dv * w with dv = sech^2(t a) K
        th = torch.tanh(ta)
        dv = (1.0 - th * th) * K
        sp_p = dv * xw  # s' <x0, w_hat>
        sp_s = sv * dv * ww  # s s'
        sp_alpha = 2.0 * c * (sp_p + sp_s)
        sp_den = 2.0 * c * (sp_p + c * x2 * sp_s)
        den2 = den * den
        cx = (sp_alpha * den - alpha * sp_den) / den2
        cw = omx * (dv * den - sv * sp_den) / den2
        vt = x0 * cx + w * cw
        if _any(ill):  # there the velocity is the log towards the far end, rescaled
            vt = _replace_rows(ill, vt, self._velocity_from_logs, xt, x0, x1, t)
        return xt, vt

    def _geodesic_stable(self, x0, x2, omx, w, ww, ta):
        ata = ta.abs()
        e = w * (torch.sign(ta) * torch.rsqrt(ww.clamp_min(_tiny(ww.dtype))))
        return self._mobius_dir(x0, x2, omx, e, torch.tanh(ata), 2.0 * torch.sigmoid(-2.0 * ata))

    def _velocity_from_logs(self, xt, x0, x1, t):
        fwd = self.logmap(xt, x1) / (1.0 - t).clamp_min(0.5)
        bwd = -self.logmap(xt, x0) / t.clamp_min(0.5)
        return torch.where(t < 0.5, fwd, bwd)

    def geodesic(self, x0, x1, t):
        """Point at fraction t of the geodesic: x0 (+) (tanh(t artanh(sqrt(c)|w|)) w / (sqrt(c)|w|)), w = (-x0) (+) x1."""
        return self._geodesic(x0, x1, t, velocity=False)

    def geodesic_and_velocity(self, x0, x1, t):
        """Closed form gamma(t) and d gamma/dt (derivative of the Moebius form in t)."""
        return self._geodesic(x0, x1, t, velocity=True)

    def transp(self, x, y, v):
        """Parallel transport along the geodesic: gyr[y, -x] v * lambda_x / lambda_y.

        gyr[u, w] v = v + 2 (a u + b w) / d (Ungar 2008) with u = y, w = -x, where
        d = 1 - 2c<x, y> + c^2|x|^2|y|^2 is computed as c|x - y|^2 + (1 - c|x|^2)(1 - c|y|^2).
        """
        c = self._c
        d = x - y
        x2, y2, xy, xv, yv, d2 = _dot(x, x), _dot(y, y), _dot(x, y), _dot(x, v), _dot(y, v), _dot(d, d)
        omx, omy = self._omx(x2), self._omx(y2)
        a = 2 * c * c * xy * xv - c * c * yv * x2 - c * xv
        b = c * yv - c * c * xv * y2
        den = c * d2 + omx * omy
        return (v + (y * a + x * b) * (2.0 / den)) * (omy / omx)

    def log_volume_density(self, x):
        """n log lambda_x: the Riemannian volume is lambda_x^n dx."""
        return self.n * torch.log(2.0 / self._omx(_dot(x, x))).squeeze(-1)

    # ----------------------------------------------------------- distribution
    def _random_base(self, size, *, generator, dtype, device):
        e = torch.randn(*size, self.n, generator=generator, dtype=dtype, device=device)
        # exp_0 of the tangent vector e / lambda_0 = e / 2: tanh(sqrt(c)|e|/2) e / (sqrt(c)|e|)
        return self._clip(e * (0.5 * _tanhc_sq((0.25 * self._c) * _dot(e, e))))

    def base_log_prob(self, x):
        """Wrapped normal at 0: -n/2 log(2 pi) - r^2/2 - (n-1) log(sinh(sqrt(c) r)/(sqrt(c) r)), r = d(0, x)."""
        q = self._sqrt_c * torch.linalg.vector_norm(x, dim=-1) * torch.rsqrt(self._omx(_dot(x, x)).squeeze(-1))
        rho = 2.0 * _asinh(q)  # sqrt(c) r
        r = rho / self._sqrt_c
        return -0.5 * self.n * _LOG_2PI - 0.5 * r * r - (self.n - 1) * log_sinhc(rho)


# ===================================================================== Lorentz
class Lorentz(Manifold, geoopt.Lorentz):
    """Hyperboloid H^n_k = {x in R^{n+1} : <x, x>_L = -k, x_0 > 0}, curvature -1/k.

    .. math::
        \\langle u, v\\rangle_L = -u_0 v_0 + \\sum_{i \\ge 1} u_i v_i, \\qquad
        d(x, y) = \\sqrt{k}\\,\\operatorname{arccosh}\\Big(-\\frac{\\langle x, y\\rangle_L}{k}\\Big)
                = \\sqrt{k}\\,\\operatorname{arccosh}(1 + t)

    .. math::
        \\exp_x(u) = \\cosh(\\theta) x + \\frac{\\sinh\\theta}{\\theta} u, \\ \\theta = \\frac{|u|_L}{\\sqrt{k}},
        \\qquad
        \\log_x(y) = \\frac{\\theta}{\\sinh\\theta} \\big((y - x) - t x\\big), \\
        \\theta = \\frac{d(x, y)}{\\sqrt{k}} = 2 \\operatorname{asinh}(q)

    where t = -<x, y>_L / k - 1 = 2 q^2, q = sinh(d / (2 sqrt(k))).  The code computes q^2
    through the isometric Poincare ball coordinates b = sqrt(k) x_1: / (x_0 + sqrt(k)) (see
    ``_q2``), which is accurate both near x == y and far apart, in float32 too; ``arccosh``
    becomes ``2 asinh(q)``.  ``projx`` recomputes x_0 = sqrt(k + |x_1:|^2) from the spatial
    part (the hyperboloid constraint loses digits in float32 at large distances), as do
    ``expmap`` and ``geodesic``.  Points are kept within |x_1:| <= M sqrt(k) (M = 1e15 in
    float32, 1e100 in float64) so that Minkowski products stay finite.

    Base distribution: wrapped normal at the origin o = (sqrt(k), 0, ..., 0) (module
    docstring), K = 1/k; the orthonormal basis of T_o is (e_1, ..., e_n).

    Args:
        n: intrinsic dimension (points live in R^{n+1}).
        k: positive float; the curvature is -1/k.  Stored exactly as a Python float.

    Shapes: points and tangent vectors ``(*batch, n + 1)``.
    """

    name = "Lorentz"

    def __init__(self, n: int, k: float = 1.0):
        n = self._check_int("n", n)
        k = self._check_positive("k", k)
        geoopt.Lorentz.__init__(self, k=k)
        # geoopt stores k as a float32 parameter; we keep it as a Python float.
        del self._parameters["k"]
        self.register_buffer("_ref", torch.zeros(()), persistent=False)
        self._k = k
        self._sqrt_k = math.sqrt(k)
        self.n = n
        self._set_shape((n + 1,), n)
        self.injectivity_radius = math.inf
        self.normalisation_chart = ("gaussian", 1.5)

    @property
    def k(self) -> torch.Tensor:
        """geoopt's k as a 0-dim tensor (module dtype), for geoopt's own methods; ``float(m.k)`` is exact in float64."""
        return torch.tensor(self._k, dtype=self._ref.dtype, device=self._ref.device)

    @property
    def curvature(self) -> float:
        """Sectional curvature -1/k."""
        return -1.0 / self._k

    def extra_repr(self) -> str:
        return f"n={self.n}, k={self._k!r}"

    def base_origin(self, dtype=None, device=None) -> torch.Tensor:
        """The origin o = (sqrt(k), 0, ..., 0), shape ``(n + 1,)``."""
        o = torch.zeros(self.n + 1, dtype=self._default_dtype(dtype), device=device)
        o[0] = self._sqrt_k
        return o

    def origin(self, *size, dtype=None, device=None, seed=42) -> geoopt.ManifoldTensor:
        """geoopt's ``origin``: (sqrt(k), 0, ..., 0), ``size`` includes the point dimension (default ``(n + 1,)``)."""
        shape = geoopt.utils.size2shape(*size) if size else tuple(self.point_shape)
        o = torch.zeros(shape, dtype=self._default_dtype(dtype), device=device)
        o[..., 0] = self._sqrt_k
        return geoopt.ManifoldTensor(o, manifold=self)

    # ----------------------------------------------------------------- checks
    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5):
        xd = x.double()
        sq = xd * xd
        x0s = sq[..., 0]
        rest = sq[..., 1:].sum(-1)
        dev = (rest - x0s + self._k).abs() / (self._k + x0s + rest)
        worst = float(dev.max()) if dev.numel() else 0.0
        lower = float(xd[..., 0].min()) if xd.numel() else 1.0
        if lower <= 0:
            return False, (
                f"expected the upper sheet x_0 > 0 (points of shape (..., {self.n + 1})), but min x_0 = "
                f"{lower:.3g}; use projx (it recomputes x_0 = sqrt(k + |x_1:|^2))"
            )
        if worst > atol + rtol:
            return False, (
                f"expected -x_0^2 + |x_1:|^2 = -k = {-self._k:.6g} (points of shape (..., {self.n + 1})), but "
                f"max |<x, x>_L + k| / (k + |x|^2) = {worst:.3g} > tolerance {atol + rtol:.1g}; use projx to project"
            )
        return True, None

    def _check_vector_on_tangent(self, x, u, *, atol=1e-5, rtol=1e-5):
        xd, ud = x.double(), u.double()
        ip = (_mdot(xd, ud)).squeeze(-1).abs()
        scale = torch.linalg.vector_norm(xd, dim=-1) * torch.linalg.vector_norm(ud, dim=-1)
        bad = ip - (atol + rtol * scale)
        worst = float(bad.max()) if bad.numel() else -1.0
        if worst > 0:
            i = int(bad.reshape(-1).argmax())
            return False, (
                f"expected <x, u>_L = 0 (Minkowski), but |<x, u>_L| = {float(ip.reshape(-1)[i]):.3g} with "
                f"|x||u| = {float(scale.reshape(-1)[i]):.3g} (atol {atol:.1g}, rtol {rtol:.1g}); use proju to project"
            )
        return True, None

    # --------------------------------------------------------------- geometry
    def _lift(self, xs: torch.Tensor) -> torch.Tensor:
        """(sqrt(k + |x_s|^2), x_s), with |x_s| clipped to M sqrt(k)."""
        r2 = _dot(xs, xs)
        lim = _LORENTZ_MAX.get(xs.dtype, 1e15) * self._sqrt_k
        over = ~(r2 <= lim * lim)  # also catches inf / nan
        if _any(over):
            # rescale (scaled norm: |x_s|^2 overflows); the scale is a safety clamp, not geometry,
            # so it is not differentiated (its gradient overflows in float32 out here)
            xd = xs.detach()
            m = xd.abs().amax(-1, keepdim=True).clamp_min(_tiny(xs.dtype))
            r = m * torch.linalg.vector_norm(xd / m, dim=-1, keepdim=True)
            xs = xs * (lim / r).clamp_max(1.0)
            r2 = torch.where(over, lim * lim, r2)
        return torch.cat([torch.sqrt(self._k + r2), xs], dim=-1)

    def projx(self, x):
        """Recompute x_0 = sqrt(k + |x_1:|^2) from the spatial part."""
        return self._lift(x[..., 1:])

    def proju(self, x, u):
        """u + <x, u>_L x / k."""
        return u + x * (_mdot(x, u) / self._k)

    def egrad2rgrad(self, x, u):
        """Riemannian gradient: proju(x, J u) with J = diag(-1, 1, ..., 1) (does not modify u)."""
        return self.proju(x, torch.cat([-u[..., :1], u[..., 1:]], dim=-1))

    def _chart(self, x, u):
        """u_1: - x_1: u_0 / (x_0 + sqrt(k)): the tangent vector u at x in the ball chart, times lambda.

        For u tangent at x its Euclidean norm is |u|_L, and dot products give <u, v>_L, without
        the cancellation of -u_0 v_0 + u_1: . v_1: (relative error eps x_0 instead of eps x_0^2,
        which makes the Minkowski form useless beyond x_0 ~ 1e3 in float32).
        """
        return u[..., 1:] - x[..., 1:] * (u[..., :1] / (x[..., :1] + self._sqrt_k))

    def inner(self, x, u, v=None, *, keepdim=False):
        """Riemannian metric <u, v>_x = <u, v>_L for u, v tangent at x (computed in the ball chart, see ``_chart``)."""
        cu = self._chart(x, u)
        out = _dot(cu, cu if v is None else self._chart(x, v))
        target = torch.broadcast_shapes(x.shape[:-1] + (1,), out.shape)
        return _squeeze(out.expand(target), keepdim)

    def component_inner(self, x, u, v=None):
        return self.inner(x, u, v, keepdim=True)

    def expmap(self, x, u):
        cu = self._chart(x, u)
        th2 = (_dot(cu, cu) * (1.0 / self._k)).clamp(_delta2(u.dtype), _THETA_MAX.get(u.dtype, 40.0) ** 2)
        th = torch.sqrt(th2)
        ys = x[..., 1:] * torch.cosh(th) + u[..., 1:] * (torch.sinh(th) / th)
        return self._lift(ys)

    def retr(self, x, u):
        """expmap of the tangent part of u (RiemannianAdam's steps are not exactly tangent)."""
        return self.expmap(x, self.proju(x, u))

    def _q2(self, x, y):
        """q^2 = sinh^2(d(x, y) / (2 sqrt(k))) = t / 2, through the Poincare ball coordinates.

        With b = sqrt(k) x_1: / (x_0 + sqrt(k)) (the isometry onto the ball of radius sqrt(k)),
        1 - |b|^2 / k = 2 sqrt(k) / (x_0 + sqrt(k)) has no cancellation, so
        q^2 = |x_1:/a_x - y_1:/a_y|^2 a_x a_y / (4k), a = x_0 + sqrt(k), is accurate both near
        x == y and far apart (unlike -<x, y>_L / k - 1 or the chord <y - x, y - x>_L, which
        lose all digits for nearby points far from the origin, or far points, respectively).
        """
        sk = self._sqrt_k
        ax = x[..., :1] + sk
        ay = y[..., :1] + sk
        db = x[..., 1:] * ax.reciprocal() - y[..., 1:] * ay.reciprocal()  # (no fma: exactly 0 at x == y)
        return _dot(db, db) * (ax * ay) * (0.25 / self._k)

    def logmap(self, x, y):
        q2 = self._q2(x, y)
        # theta / sinh(theta) with theta = 2 asinh(q): asinh(q) / (q sqrt(1 + q^2)); t = 2 q^2
        f = _asinhc_sq(q2) * torch.rsqrt(1.0 + q2)
        return (y - x) * f - x * (2.0 * f * q2)

    def dist(self, x, y, *, keepdim=False):
        q2 = self._q2(x, y)
        return _squeeze(_asinh(_sqrt0(q2), q2) * (2.0 * self._sqrt_k), keepdim)

    def dist2(self, x, y, *, keepdim=False):
        return self.dist(x, y, keepdim=keepdim) ** 2

    def _geodesic(self, x0, x1, t, velocity: bool):
        # gamma(t) = (sinh((1-t) theta) x0 + sinh(t theta) x1) / sinh(theta)
        t = self._expand_t(t, x0)
        th = 2.0 * _asinh(_sqrt0(self._q2(x0, x1)))
        thc = th.clamp_min(math.sqrt(_delta2(th.dtype)))
        sh = torch.sinh(thc)
        a, b = (1.0 - t) * thc, t * thc
        xs = x0[..., 1:] * (torch.sinh(a) / sh) + x1[..., 1:] * (torch.sinh(b) / sh)
        xt = self._lift(xs)
        if not velocity:
            return xt
        r = thc / sh
        return xt, x1 * (torch.cosh(b) * r) - x0 * (torch.cosh(a) * r)

    def geodesic(self, x0, x1, t):
        """gamma(t) = (sinh((1-t) theta) x0 + sinh(t theta) x1) / sinh(theta), theta = d(x0, x1)/sqrt(k)."""
        return self._geodesic(x0, x1, t, velocity=False)

    def geodesic_and_velocity(self, x0, x1, t):
        """Closed form gamma(t) and gamma'(t) = theta (cosh(t theta) x1 - cosh((1-t) theta) x0) / sinh(theta)."""
        return self._geodesic(x0, x1, t, velocity=True)

    def transp(self, x, y, v):
        """Parallel transport along the geodesic: v + <y, v>_L / (k - <x, y>_L) (x + y).

        k - <x, y>_L = 2k (1 + q^2) is taken from ``_q2`` (no cancellation far from the origin).
        """
        return v + (x + y) * (_mdot(y, v) / ((2.0 * self._k) * (1.0 + self._q2(x, y))))

    # ----------------------------------------------------------- distribution
    def _random_base(self, size, *, generator, dtype, device):
        e = torch.randn(*size, self.n, generator=generator, dtype=dtype, device=device)
        # exp_o((0, e)) spatial part: sqrt(k) sinh(|e|/sqrt(k)) e/|e|
        th2 = (_dot(e, e) / self._k).clamp(_delta2(dtype), _THETA_MAX.get(dtype, 40.0) ** 2)
        th = torch.sqrt(th2)
        return self._lift(e * (torch.sinh(th) / th))

    def base_log_prob(self, x):
        """Wrapped normal at o: -n/2 log(2 pi) - r^2/2 - (n-1) log(sinh(r/sqrt(k))/(r/sqrt(k))), r = d(o, x)."""
        rho = _asinh(torch.linalg.vector_norm(x[..., 1:], dim=-1) / self._sqrt_k)  # r / sqrt(k)
        return -0.5 * self.n * _LOG_2PI - (0.5 * self._k) * rho * rho - (self.n - 1) * log_sinhc(rho)
