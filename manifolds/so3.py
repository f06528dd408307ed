"""The rotation group SO(3) with its bi-invariant metric and the Haar (uniform) base distribution.

Points are rotation matrices ``R`` (``R^T R = I``, ``det R = 1``) of shape ``(..., 3, 3)``.
Tangent vectors at ``R`` are stored as ambient 3x3 matrices ``U = R hat(omega)``, with
``omega`` in R^3 the body angular velocity and ``hat`` the skew matrix of a cross product.

Metric (stated once, used everywhere):

.. math::
    \\langle U, V \\rangle_R = \\tfrac12 \\operatorname{tr}(U^T V), \\qquad
    |R\\,\\hat\\omega|_R = |\\omega|,

so the norm of a tangent vector is the rotation speed in radians and the geodesic distance
``d(R_1, R_2)`` is the rotation angle of ``R_1^T R_2``, in ``[0, pi]``.  (Some libraries use
``tr(U^T V)`` instead, which scales every distance by sqrt(2).)  Under this metric SO(3) is the
3-sphere of radius 2 modulo ``q ~ -q`` (unit quaternions), so its volume is ``8 pi^2``.
"""

from __future__ import annotations

import math

import geoopt
import torch

from ._math import cosc, sinc, sqrt_safe
from .base import Manifold

__all__ = ["SO3"]

_LOG_VOLUME = math.log(8.0 * math.pi**2)
_ATAN_SERIES = 1e-3  # |v| / w below this uses the series of atan(r) / r


# ---------------------------------------------------------------------------- helpers
def _entries(M: torch.Tensor):
    """The nine entries of (..., 3, 3) matrices as a tuple m00, m01, ..., m22 of (...) tensors."""
    return M.flatten(-2).unbind(-1)


def _from_entries(entries, like_shape) -> torch.Tensor:
    """Inverse of :func:`_entries`: stack nine (...) tensors into (..., 3, 3)."""
    return torch.stack(entries, -1).unflatten(-1, (3, 3))


def _hat(w: torch.Tensor) -> torch.Tensor:
    x, y, z = w.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).unflatten(-1, (3, 3))


def _vee(S: torch.Tensor) -> torch.Tensor:
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = _entries(S)
    return 0.5 * torch.stack([m21 - m12, m02 - m20, m10 - m01], -1)


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


def _quat_from_matrix(M: torch.Tensor) -> torch.Tensor:
    """Unnormalised quaternion (w, x, y, z), w >= 0, of rotation matrices, by Shepperd's method.

    The symmetric matrix K with rows (1+tr, m21-m12, m02-m20, m10-m01), (m21-m12, 1+2m00-tr,
    m01+m10, m02+m20), ... equals 4 q q^T for the unit quaternion q of M.  Its row with the
    largest diagonal entry (the largest of tr, m00, m11, m22) is 4 q_k q with 4 q_k^2 >= 1, so it
    is well conditioned for every rotation; it is returned unnormalised (norm 4 |q_k| >= 2),
    flipped so that w >= 0.  Shepperd, J. Guidance and Control 1(3), 1978.
    """
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = _entries(M)
    tr = m00 + m11 + m22
    d0, d1, d2, d3 = 1 + tr, 1 + 2 * m00 - tr, 1 + 2 * m11 - tr, 1 + 2 * m22 - tr
    a, b, c = m21 - m12, m02 - m20, m10 - m01
    p, q, r = m01 + m10, m02 + m20, m12 + m21
    k = torch.stack([tr, m00, m11, m22], -1).argmax(-1)
    k1, k2, k3 = k == 1, k == 2, k == 3

    def sel(v0, v1, v2, v3):
        return torch.where(k1, v1, torch.where(k2, v2, torch.where(k3, v3, v0)))

    qw, qx, qy, qz = sel(d0, a, b, c), sel(a, d1, p, q), sel(b, p, d2, r), sel(c, q, r, d3)
    quat = torch.stack([qw, qx, qy, qz], -1)
    return torch.where(qw.unsqueeze(-1) < 0, -quat, quat)


def _rotvec_from_quat(quat: torch.Tensor) -> torch.Tensor:
    """Rotation vector omega = 2 atan2(|v|, w) v / |v| of a (possibly unnormalised) quaternion, w >= 0."""
    w, v = quat[..., :1], quat[..., 1:]
    n = sqrt_safe((v * v).sum(-1, keepdim=True))
    return (2 * _atan_over(n, w)) * v


def _matrix_from_quat(quat: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of a unit quaternion (w, x, y, z)."""
    w, x, y, z = quat.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    return _from_entries(
        [
            1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
            2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
            2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
        ],
        quat.shape[:-1],
    )


def _matrix_from_rotvec(w: torch.Tensor) -> torch.Tensor:
    """Rodrigues: exp(hat w) = cos(t) I + sinc(t) hat(w) + cosc(t) w w^T, t = |w|, cos t = 1 - t^2 cosc(t)."""
    t2 = (w * w).sum(-1)
    t = sqrt_safe(t2)
    s, k = sinc(t), cosc(t)
    c = 1 - t2 * k
    x, y, z = w.unbind(-1)
    sx, sy, sz = s * x, s * y, s * z
    kx, ky = k * x, k * y
    kxy, kxz, kyz = kx * y, kx * z, ky * z
    return _from_entries(
        [
            c + kx * x, kxy - sz, kxz + sy,
            kxy + sz, c + ky * y, kyz - sx,
            kxz - sy, kyz + sx, c + k * z * z,
        ],
        w.shape[:-1],
    )


def _skew_vee_of_product(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """vee of the skew part of A^T B, i.e. vee((A^T B - B^T A) / 2), without forming A^T B."""
    return _vee(A.mT @ B)


# ------------------------------------------------------------------------------ class
class SO3(Manifold, geoopt.Manifold):
    """The rotation group SO(3) = {R in R^{3x3} : R^T R = I, det R = 1} with the bi-invariant metric.

    Tangent vectors at ``R`` are ambient matrices ``U = R hat(omega)`` (``R^T U`` skew), with
    metric ``<U, V>_R = tr(U^T V) / 2`` so that ``|R hat(omega)|_R = |omega|``:

    .. math::
        \\exp_R(U) = R \\exp(R^T U), \\qquad
        \\log_R(Q) = R \\log(R^T Q), \\qquad
        d(R_1, R_2) = \\theta(R_1^T R_2) = \\mathrm{atan2}(|\\mathrm{vee}(M - M^T)|, \\mathrm{tr} M - 1),
        \\; M = R_1^T R_2

    where ``theta(M)`` in [0, pi] is the rotation angle.  ``exp`` of a skew matrix is Rodrigues'
    formula ``cos(t) I + sinc(t) hat(w) + (1 - cos t)/t^2 w w^T`` with series near t = 0.
    ``log`` goes through the unit quaternion of ``M`` (Shepperd's method, stable for every
    rotation) and ``omega = 2 atan2(|v|, w) v / |v|``, so it is accurate near the identity and
    near rotations by pi; at exactly pi (where the logarithm is not unique) one of the two
    valid answers ``+-pi n`` is returned.  The atan2 distance is accurate to round-off near
    0 and near pi, unlike ``acos((tr M - 1) / 2)``.

    The Riemannian gradient of f with Euclidean gradient G is ``2 R skew(R^T G)`` (the factor 2
    comes from the 1/2 in the metric), so ``geoopt.optim.RiemannianSGD`` takes true Riemannian
    gradient steps.

    Base distribution: Haar (uniform) measure, sampled as uniform unit quaternions;
    ``log p = -log(8 pi^2)`` (the volume of SO(3) under this metric).

    Shapes: points and tangent vectors ``(*batch, 3, 3)``; rotation vectors ``(*batch, 3)``;
    quaternions ``(*batch, 4)`` scalar first ``(w, x, y, z)``.
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
        """Skew matrix of a vector: ``hat(omega) v = omega x v``.  Shapes: (..., 3) -> (..., 3, 3)."""
        return _hat(omega)

    @staticmethod
    def vee(S: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`hat` on skew matrices: vee of the skew part ``(S - S^T) / 2``.  (..., 3, 3) -> (..., 3)."""
        return _vee(S)

    @staticmethod
    def exp_rotvec(omega: torch.Tensor) -> torch.Tensor:
        """Rotation matrix ``exp(hat(omega))`` of rotation vectors (axis times angle), by Rodrigues' formula.

        Same convention as ``scipy.spatial.transform.Rotation.from_rotvec(omega).as_matrix()``.
        Shapes: (..., 3) -> (..., 3, 3).
        """
        return _matrix_from_rotvec(omega)

    @staticmethod
    def log_rotvec(R: torch.Tensor) -> torch.Tensor:
        """Rotation vector ``vee(log R)`` with norm in [0, pi] (scipy's ``as_rotvec``).

        Computed through the quaternion (Shepperd's method) and ``2 atan2(|v|, w) v / |v|``: stable
        for every rotation, including angles near 0 and pi.  Shapes: (..., 3, 3) -> (..., 3).
        """
        return _rotvec_from_quat(_quat_from_matrix(R))

    @staticmethod
    def matrix_to_quat(R: torch.Tensor) -> torch.Tensor:
        """Unit quaternion (w, x, y, z), scalar first, with w >= 0, of rotation matrices.  (..., 3, 3) -> (..., 4)."""
        q = _quat_from_matrix(R)
        return q / q.norm(dim=-1, keepdim=True)

    @staticmethod
    def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
        """Rotation matrix of quaternions (w, x, y, z), scalar first; ``q`` is normalised first.  (..., 4) -> (..., 3, 3)."""
        return _matrix_from_quat(q / q.norm(dim=-1, keepdim=True))

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
        err = float((A + A.mT).abs().max()) * 0.5
        tol = atol + rtol * float(u.abs().max())
        if err > tol:
            return False, (
                f"expected U = R hat(omega) (R^T U skew), but max |sym(R^T U)| = {err:.3g} "
                f"> tolerance {tol:.1g}; use proju to project"
            )
        return True, None

    # ----------------------------------------------------------------- geometry
    def projx(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest rotation (Frobenius): ``U diag(1, 1, det(U V^T)) V^T`` from the SVD ``x = U S V^T``."""
        U, _, Vh = torch.linalg.svd(x)
        d = torch.linalg.det(U @ Vh)
        U = torch.cat([U[..., :2], U[..., 2:] * d[..., None, None]], dim=-1)
        return U @ Vh

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Projection onto the tangent space: ``R skew(R^T U)``, ``skew(A) = (A - A^T) / 2``."""
        return x @ _hat(_skew_vee_of_product(x, u))

    def egrad2rgrad(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Riemannian gradient ``2 R skew(R^T G)`` from the Euclidean gradient G (metric tr(U^T V) / 2)."""
        return x @ _hat(2 * _skew_vee_of_product(x, u))

    def inner(self, x, u, v=None, *, keepdim=False):
        """``<U, V>_R = tr(U^T V) / 2``; shape (*batch,) or (*batch, 1, 1) with ``keepdim``."""
        out = 0.5 * (u * (u if v is None else v)).sum((-2, -1), keepdim=keepdim)
        k = 2 if keepdim else 0
        target = torch.broadcast_shapes(x.shape[:-2], out.shape[: out.dim() - k])
        return out.expand(target + ((1, 1) if keepdim else ()))

    def component_inner(self, x, u, v=None):
        # One second-moment per rotation (not per matrix entry) keeps Adam's step tangent.
        return self.inner(x, u, v, keepdim=True)

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``exp_R(U) = R exp(hat(omega))`` with ``omega = vee(R^T U)`` (Rodrigues)."""
        return x @ _matrix_from_rotvec(_skew_vee_of_product(x, u))

    def logmap(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log_R(Q) = R hat(omega)`` with ``omega = log_rotvec(R^T Q)``, |omega| in [0, pi]."""
        omega = _rotvec_from_quat(_quat_from_matrix(x.mT @ y))
        return x @ _hat(omega)

    def dist(self, x: torch.Tensor, y: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
        """Rotation angle of ``M = R_1^T R_2``: ``atan2(|vee(M - M^T)|, tr M - 1)`` in [0, pi].

        ``|vee(M - M^T)| = 2 sin(theta)`` and ``tr M - 1 = 2 cos(theta)``, so the angle is exact
        to round-off near 0 and near pi.
        """
        M = x.mT @ y
        m00, m01, m02, m10, m11, m12, m20, m21, m22 = _entries(M)
        s = sqrt_safe((m21 - m12) ** 2 + (m02 - m20) ** 2 + (m10 - m01) ** 2)
        theta = torch.atan2(s, m00 + m11 + m22 - 1)
        return theta[..., None, None] if keepdim else theta

    def geodesic(self, x0: torch.Tensor, x1: torch.Tensor, t) -> torch.Tensor:
        """``R_0 exp(t log(R_0^T R_1))``."""
        omega = _rotvec_from_quat(_quat_from_matrix(x0.mT @ x1))
        t = torch.as_tensor(t, dtype=omega.dtype, device=omega.device)
        return x0 @ _matrix_from_rotvec(t[..., None] * omega)

    # ------------------------------------------------------------- distribution
    def _random_base(self, size, *, generator, dtype, device):
        q = torch.randn(*size, 4, generator=generator, dtype=dtype, device=device)
        return _matrix_from_quat(q / q.norm(dim=-1, keepdim=True))

    def base_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Haar density w.r.t. the Riemannian volume: ``-log(8 pi^2)``, shape (*batch,)."""
        return torch.full(x.shape[:-2], -_LOG_VOLUME, dtype=x.dtype, device=x.device)
