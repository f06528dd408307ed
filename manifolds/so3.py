"""The rotation group SO(3) with its bi-invariant metric and the Haar (uniform) base distribution.

Points are rotation matrices ``R`` (``R^T R = I``, ``det R = 1``) of shape ``(..., 3, 3)``.
Tangent vectors at ``R`` are stored as ambient 3x3 matrices ``U = R hat(omega)``, with
``omega`` in R^3 the body angular velocity and ``hat`` the skew matrix of a cross product
(``hat(omega) v = omega x v``).

Metric (stated once, used everywhere):

.. math::
    \\langle U, V \\rangle_R = \\tfrac12 \\operatorname{tr}(U^T V), \\qquad
    |R\\,\\hat\\omega|_R = |\\omega|,

so the norm of a tangent vector is the rotation speed in radians and the geodesic distance
``d(R_1, R_2)`` is the rotation angle of ``R_1^T R_2``, in ``[0, pi]``.  (Some libraries use
``tr(U^T V)`` instead, which scales every distance by sqrt(2).)  Under this metric SO(3) is the
3-sphere of radius 2 modulo ``q ~ -q`` (unit quaternions), so its volume is ``8 pi^2``.

Implementation note: batched 3x3 matrix products (``bmm``) and stacking along tiny trailing
dimensions are slow on CPU, so the kernels below split a batch of matrices into its nine
entries, each a contiguous ``(...)`` tensor ("structure of arrays"), do the algebra entry by
entry, and stack once at the end.  Entries broadcast like the batch dimensions do.
"""

from __future__ import annotations

import math

import geoopt
import torch

from ._math import sqrt_safe
from .base import Manifold

__all__ = ["SO3"]

_LOG_VOLUME = math.log(8.0 * math.pi**2)
_SERIES = 1e-2  # |omega| below this uses the Rodrigues series (the switch of manifolds._math)
_ATAN_SERIES = 1e-3  # |v| / |w| below this uses the series of atan(r) / r


# ----------------------------------------------------------- structure-of-arrays kernels
def _eye(n: int, like: torch.Tensor) -> torch.Tensor:
    # not cached: a cached tensor made under inference_mode could not be saved for backward
    return torch.eye(n, dtype=like.dtype, device=like.device)


def _exact_cpu_mm(t: torch.Tensor) -> bool:
    """True where a CPU matmul by the identity is an exact (and fast) transposition.

    Not in reduced-precision matmul modes (``torch.set_float32_matmul_precision("high")``
    may round float32 to bf16/tf32; CPU autocast runs matmuls in bf16), and not on GPUs,
    where plain copies are fast anyway.
    """
    if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64):
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    if t.dtype == torch.float32:
        mk = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
        if torch.get_float32_matmul_precision() != "highest" or getattr(mk, "fp32_precision", "none") not in ("none", "ieee"):
            return False
    return True


def _split(t: torch.Tensor, k: int):
    """Entries of the last ``k`` dims (row-major, 3 or 9 of them) as contiguous (...) tensors.

    The (..., n) -> (n, ...) transposition is done as ``I_n @ t^T`` on CPU: BLAS transposes
    while it multiplies, several times faster than torch's strided copy, and exact (one
    product by 1 and additions of exact zeros per entry).
    """
    if k == 2:
        t = t.flatten(-2)
    n, batch = t.shape[-1], t.shape[:-1]
    if _exact_cpu_mm(t) and t.dim() > 1:
        return torch.mm(_eye(n, t), t.reshape(-1, n).t()).reshape(n, *batch).unbind(0)
    return t.movedim(-1, 0).contiguous().unbind(0)


def _stack(entries, k: int) -> torch.Tensor:
    """Inverse of :func:`_split`: n (...) tensors -> (..., n) (k=1) or (..., 3, 3) (k=2, n=9)."""
    X = torch.stack(torch.broadcast_tensors(*entries), 0)  # (n, ...): contiguous copies
    n, batch = X.shape[0], X.shape[1:]
    if _exact_cpu_mm(X) and X.dim() > 1:
        out = torch.mm(X.reshape(n, -1).t(), _eye(n, X)).reshape(*batch, n)
    else:
        out = X.movedim(0, -1)
    return out.unflatten(-1, (3, 3)) if k == 2 else out


def _mtm(a, b):
    """Entries of A^T B from the entries of A and B."""
    return tuple(a[i] * b[j] + a[3 + i] * b[3 + j] + a[6 + i] * b[6 + j] for i in range(3) for j in range(3))


def _mm(a, b):
    """Entries of A B."""
    return tuple(a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j] for i in range(3) for j in range(3))


def _vee_mtm(a, b):
    """vee of the skew part of A^T B, ``vee((A^T B - B^T A) / 2)``, from the entries of A and B."""

    def m(i, j):
        return a[i] * b[j] + a[3 + i] * b[3 + j] + a[6 + i] * b[6 + j]

    return 0.5 * (m(2, 1) - m(1, 2)), 0.5 * (m(0, 2) - m(2, 0)), 0.5 * (m(1, 0) - m(0, 1))


def _m_hat(a, x, y, z):
    """Entries of A hat(omega), omega = (x, y, z): row i is (a_i1 z - a_i2 y, a_i2 x - a_i0 z, a_i0 y - a_i1 x)."""
    out = []
    for i in range(3):
        r0, r1, r2 = a[3 * i], a[3 * i + 1], a[3 * i + 2]
        out += [r1 * z - r2 * y, r2 * x - r0 * z, r0 * y - r1 * x]
    return tuple(out)


def _hat(x, y, z):
    """Entries of hat(omega)."""
    o = torch.zeros_like(x)
    return (o, -z, y, z, o, -x, -y, x, o)


def _atan_over(n: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """atan2(n, w) / n for n >= 0, w >= 0, (n, w) != (0, 0); equal to 1 / w as n -> 0.

    The series ``(1/w)(1 - r^2/3 + r^4/5)``, ``r = n/w``, is used for ``r < 1e-3`` (first
    neglected term r^6/7 < 2e-19), so the value and its gradient are finite at n == 0.
    """
    small = n < _ATAN_SERIES * w
    n_safe = torch.where(small, torch.ones_like(n), n)
    w_safe = torch.where(small, w, torch.ones_like(w))
    r2 = (n / w_safe) ** 2
    series = (1.0 - r2 * (1.0 / 3.0 - 0.2 * r2)) / w_safe
    return torch.where(small, series, torch.atan2(n_safe, w) / n_safe)


def _quat(m):
    """Unnormalised quaternion (w, x, y, z) of a rotation matrix (entries m) by Shepperd's method.

    The symmetric matrix K with rows (1+tr, m21-m12, m02-m20, m10-m01), (m21-m12, 1+2m00-tr,
    m01+m10, m02+m20), (m02-m20, m01+m10, 1+2m11-tr, m12+m21), (m10-m01, m02+m20, m12+m21,
    1+2m22-tr) equals 4 q q^T for the unit quaternion q of M.  Its row with the largest diagonal
    entry (the largest of tr, m00, m11, m22) is 4 q_k q with 4 q_k^2 >= 1, so it is well
    conditioned for every rotation, angles near pi included; it is returned unnormalised
    (norm 4 |q_k| >= 2), with either sign of w.  Shepperd, J. Guidance and Control 1(3), 1978.
    """
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m
    tr = m00 + m11 + m22
    d0, d1, d2, d3 = 1 + tr, 1 + 2 * m00 - tr, 1 + 2 * m11 - tr, 1 + 2 * m22 - tr
    a, b, c = m21 - m12, m02 - m20, m10 - m01
    p, q, r = m01 + m10, m02 + m20, m12 + m21
    K = torch.stack(torch.broadcast_tensors(d0, a, b, c, a, d1, p, q, b, p, d2, r, c, q, r, d3), 0)
    K = K.unflatten(0, (4, 4))  # (4, 4, ...), rows of K
    # index of the largest of (tr, m00, m11, m22), by a two-round tournament (argmax over a
    # stacked dim of size 4 is far slower on CPU)
    k = torch.where(
        torch.maximum(m11, m22) > torch.maximum(tr, m00), 2 + (m22 > m11).long(), (m00 > tr).long()
    )
    k = k.expand(K.shape[2:])[None, None].expand((1,) + K.shape[1:])
    return K.gather(0, k)[0].unbind(0)


def _log(m):
    """Rotation vector of M (entries m): omega = 2 atan2(|v|, |w|) sign(w) v / |v|, |omega| in [0, pi].

    (w, v) is the Shepperd quaternion; |w| and sign(w) select the representative with w >= 0,
    i.e. the angle in [0, pi].  At exactly pi (w == 0) this is pi v / |v|, one of the two answers.
    """
    qw, qx, qy, qz = _quat(m)
    n = sqrt_safe(qx * qx + qy * qy + qz * qz)
    f = 2 * _atan_over(n, qw.abs())
    f = torch.where(qw < 0, -f, f)
    return f * qx, f * qy, f * qz


def _exp(x, y, z):
    """Entries of exp(hat w), w = (x, y, z), by Rodrigues: cos(t) I + sinc(t) hat(w) + cosc(t) w w^T, t = |w|.

    ``sinc(t) = sin t / t`` and ``cosc(t) = (1 - cos t) / t^2`` are computed from ``t^2`` with one
    shared mask: for ``t < 1e-2`` the series ``1 - t^2/6 + t^4/120`` and ``1/2 - t^2/24 + t^4/720``
    (first neglected terms < 3e-16; the switch of :func:`manifolds._math.sinc` and
    :func:`~manifolds._math.cosc`), so value and gradient are smooth at w = 0 without a square
    root of zero; ``cos t = 1 - t^2 cosc(t)``.
    """
    t2 = x * x + y * y + z * z
    small = t2 < _SERIES**2
    t2_safe = torch.where(small, torch.ones_like(t2), t2)
    t = torch.sqrt(t2_safe)
    h = torch.sin(0.5 * t)
    s = torch.where(small, 1 - t2 * (1.0 / 6.0 - t2 / 120.0), torch.sin(t) / t)
    k = torch.where(small, 0.5 - t2 * (1.0 / 24.0 - t2 / 720.0), 2 * h * h / t2_safe)
    c = 1 - t2 * k
    sx, sy, sz = s * x, s * y, s * z
    kx, ky = k * x, k * y
    kxy, kxz, kyz = kx * y, kx * z, ky * z
    # fmt: off
    return (c + kx * x, kxy - sz, kxz + sy,
            kxy + sz, c + ky * y, kyz - sx,
            kxz - sy, kyz + sx, c + k * z * z)
    # fmt: on


def _quat_to_matrix(w, x, y, z):
    """Entries of the rotation matrix of a unit quaternion (w, x, y, z)."""
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    # fmt: off
    return (1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
            2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
            2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy))
    # fmt: on


# ---------------------------------------------------------------------------------- class
class SO3(Manifold, geoopt.Manifold):
    """The rotation group SO(3) = {R in R^{3x3} : R^T R = I, det R = 1} with the bi-invariant metric.

    Tangent vectors at ``R`` are ambient matrices ``U = R hat(omega)`` (``R^T U`` skew), with
    metric ``<U, V>_R = tr(U^T V) / 2`` so that ``|R hat(omega)|_R = |omega|``:

    .. math::
        \\exp_R(U) = R \\exp(R^T U), \\qquad
        \\log_R(Q) = R \\log(R^T Q), \\qquad
        d(R_1, R_2) = \\mathrm{atan2}(|\\mathrm{vee}(M - M^T)|, \\operatorname{tr} M - 1),
        \\; M = R_1^T R_2,

    the rotation angle of ``M`` in [0, pi] (``|vee(M - M^T)| = 2 sin theta``,
    ``tr M - 1 = 2 cos theta``), exact to round-off near 0 and near pi, unlike
    ``acos((tr M - 1) / 2)``.  ``exp`` of a skew matrix is Rodrigues' formula
    ``cos(t) I + sinc(t) hat(w) + (1 - cos t)/t^2 w w^T`` with series near t = 0.  ``log`` goes
    through the quaternion (w, v) of ``M`` (Shepperd's method, well conditioned for every
    rotation) and ``omega = 2 atan2(|v|, |w|) sign(w) v / |v|``, so it is accurate near the
    identity and near rotations by pi; at exactly pi, where the logarithm is not unique, one
    of the two valid answers ``+-pi n`` is returned.

    The Riemannian gradient of f with Euclidean gradient G is ``2 R skew(R^T G)`` (the factor 2
    comes from the 1/2 in the metric), so ``geoopt.optim.RiemannianSGD`` takes true Riemannian
    gradient steps; ``retr`` is ``expmap`` and ``transp`` is projection onto the new tangent space.

    Base distribution: Haar (uniform) measure, sampled as normalised 4-D Gaussians (uniform
    unit quaternions); ``log p = -log(8 pi^2)`` (the volume of SO(3) under this metric).

    Shapes: points and tangent vectors ``(*batch, 3, 3)``; rotation vectors ``(*batch, 3)``;
    quaternions ``(*batch, 4)``, scalar first ``(w, x, y, z)``.
    """

    name = "SO3"
    reversible = False

    def __init__(self):
        geoopt.Manifold.__init__(self)
        self._set_shape((3, 3), 3)
        self.injectivity_radius = math.pi
        self.normalisation_chart = ("ball", math.pi)

    # ------------------------------------------------------------ static helpers
    @staticmethod
    def hat(omega: torch.Tensor) -> torch.Tensor:
        """Skew matrix of a vector, ``hat(omega) v = omega x v``.  Shapes: (..., 3) -> (..., 3, 3)."""
        return _stack(_hat(*omega.unbind(-1)), 2)

    @staticmethod
    def vee(S: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`hat`: vee of the skew part ``(S - S^T) / 2``.  Shapes: (..., 3, 3) -> (..., 3)."""
        m00, m01, m02, m10, m11, m12, m20, m21, m22 = S.flatten(-2).unbind(-1)
        return 0.5 * torch.stack([m21 - m12, m02 - m20, m10 - m01], -1)

    @staticmethod
    def exp_rotvec(omega: torch.Tensor) -> torch.Tensor:
        """Rotation matrix ``exp(hat(omega))`` of rotation vectors (axis times angle), by Rodrigues' formula.

        Same convention as ``scipy.spatial.transform.Rotation.from_rotvec(omega).as_matrix()``.
        Shapes: (..., 3) -> (..., 3, 3).
        """
        return _stack(_exp(*_split(omega, 1)), 2)

    @staticmethod
    def log_rotvec(R: torch.Tensor) -> torch.Tensor:
        """Rotation vector ``vee(log R)`` with norm in [0, pi] (scipy's ``Rotation.as_rotvec``).

        Computed through the quaternion (Shepperd's method) and ``2 atan2(|v|, w) v / |v|``:
        stable for every rotation, including angles near 0 and pi.  Shapes: (..., 3, 3) -> (..., 3).
        """
        return _stack(_log(_split(R, 2)), 1)

    @staticmethod
    def matrix_to_quat(R: torch.Tensor) -> torch.Tensor:
        """Unit quaternion (w, x, y, z), scalar first, with w >= 0.  Shapes: (..., 3, 3) -> (..., 4)."""
        q = _stack(_quat(_split(R, 2)), 1)
        q = torch.where(q[..., :1] < 0, -q, q)
        return q / q.norm(dim=-1, keepdim=True)

    @staticmethod
    def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
        """Rotation matrix of quaternions (w, x, y, z), scalar first, normalised first.  (..., 4) -> (..., 3, 3)."""
        q = q / q.norm(dim=-1, keepdim=True)
        return _stack(_quat_to_matrix(*_split(q, 1)), 2)

    # ------------------------------------------------------------------- checks
    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5):
        if x.numel() == 0:
            return True, None
        eye = torch.eye(3, dtype=x.dtype, device=x.device)
        orth = float((x.mT @ x - eye).abs().max())
        det = torch.linalg.det(x)
        det_err = float((det - 1).abs().max())
        tol = atol + rtol
        if orth > tol or det_err > tol:
            what = " (a reflection: det = -1)" if float(det.min()) < 0 else ""
            return False, (
                f"expected rotation matrices of shape (..., 3, 3) with R^T R = I and det R = 1, but "
                f"max |R^T R - I| = {orth:.3g} and max |det R - 1| = {det_err:.3g}{what} "
                f"> tolerance {tol:.1g}; use projx to project onto SO(3)"
            )
        return True, None

    def _check_vector_on_tangent(self, x, u, *, atol=1e-5, rtol=1e-5):
        if u.numel() == 0 or x.numel() == 0:
            return True, None
        A = x.mT @ u
        err = 0.5 * float((A + A.mT).abs().max())
        tol = atol + rtol * float(u.abs().max())
        if err > tol:
            return False, (
                f"expected U = R hat(omega) (R^T U skew), but max |sym(R^T U)| = {err:.3g} "
                f"> tolerance {tol:.1g}; use proju to project"
            )
        return True, None

    # ----------------------------------------------------------------- geometry
    def projx(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest rotation in Frobenius norm: ``U diag(1, 1, det(U V^T)) V^T`` from the SVD ``x = U S V^T``."""
        U, _, Vh = torch.linalg.svd(x)
        d = torch.linalg.det(U @ Vh)
        U = torch.cat([U[..., :2], U[..., 2:] * d[..., None, None]], dim=-1)
        return U @ Vh

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Projection onto the tangent space: ``R skew(R^T U)``, ``skew(A) = (A - A^T) / 2``."""
        a = _split(x, 2)
        return _stack(_m_hat(a, *_vee_mtm(a, _split(u, 2))), 2)

    def egrad2rgrad(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Riemannian gradient ``2 R skew(R^T G)`` from the Euclidean gradient G (metric tr(U^T V) / 2)."""
        a = _split(x, 2)
        wx, wy, wz = _vee_mtm(a, _split(u, 2))
        return _stack(_m_hat(a, 2 * wx, 2 * wy, 2 * wz), 2)

    def inner(self, x, u, v=None, *, keepdim=False):
        """``<U, V>_R = tr(U^T V) / 2``; shape (*batch,), or (*batch, 1, 1) with ``keepdim``."""
        out = 0.5 * (u * (u if v is None else v)).flatten(-2).sum(-1)
        target = torch.broadcast_shapes(x.shape[:-2], out.shape)
        out = out.expand(target)
        return out[..., None, None] if keepdim else out

    def component_inner(self, x, u, v=None):
        # One second moment per rotation (not per matrix entry) keeps RiemannianAdam's step tangent.
        return self.inner(x, u, v, keepdim=True)

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``exp_R(U) = R exp(hat(omega))``, ``omega = vee(skew(R^T U))``, by Rodrigues' formula."""
        a = _split(x, 2)
        return _stack(_mm(a, _exp(*_vee_mtm(a, _split(u, 2)))), 2)

    def logmap(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log_R(Q) = R hat(omega)``, ``omega = log_rotvec(R^T Q)``, ``|omega|`` in [0, pi]."""
        a = _split(x, 2)
        return _stack(_m_hat(a, *_log(_mtm(a, _split(y, 2)))), 2)

    def dist(self, x: torch.Tensor, y: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
        """Rotation angle of ``M = R_1^T R_2``: ``atan2(|vee(M - M^T)|, tr M - 1)`` in [0, pi]."""
        a, b = _split(x, 2), _split(y, 2)
        sx, sy, sz = _vee_mtm(a, b)  # = vee(M - M^T) / 2 = sin(theta) n
        tr = sum(a[i] * b[i] for i in range(9))
        theta = torch.atan2(2 * sqrt_safe(sx * sx + sy * sy + sz * sz), tr - 1)
        return theta[..., None, None] if keepdim else theta

    def geodesic(self, x0: torch.Tensor, x1: torch.Tensor, t) -> torch.Tensor:
        """``R_0 exp(t log(R_0^T R_1))``; ``t`` is a float or a tensor broadcasting with the batch."""
        a = _split(x0, 2)
        wx, wy, wz = _log(_mtm(a, _split(x1, 2)))
        t = torch.as_tensor(t, dtype=wx.dtype, device=wx.device)
        return _stack(_mm(a, _exp(t * wx, t * wy, t * wz)), 2)

    def geodesic_and_velocity(self, x0: torch.Tensor, x1: torch.Tensor, t):
        """Closed form: gamma(t) = R_0 exp(t hat(omega)) and gamma'(t) = gamma(t) hat(omega),
        omega = log_rotvec(R_0^T R_1) (left-invariant: the body velocity is constant)."""
        a = _split(x0, 2)
        wx, wy, wz = _log(_mtm(a, _split(x1, 2)))
        t = torch.as_tensor(t, dtype=wx.dtype, device=wx.device)
        g = _mm(a, _exp(t * wx, t * wy, t * wz))
        return _stack(g, 2), _stack(_m_hat(g, wx, wy, wz), 2)

    # ------------------------------------------------------------- distribution
    def _random_base(self, size, *, generator, dtype, device):
        w, x, y, z = torch.randn(4, *size, generator=generator, dtype=dtype, device=device).unbind(0)
        s = torch.rsqrt((w * w + x * x + y * y + z * z).clamp_min(torch.finfo(dtype).tiny))
        return _stack(_quat_to_matrix(w * s, x * s, y * s, z * s), 2)

    def base_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Haar density w.r.t. the Riemannian volume: ``-log(8 pi^2)``, shape (*batch,)."""
        return torch.full(x.shape[:-2], -_LOG_VOLUME, dtype=x.dtype, device=x.device)
