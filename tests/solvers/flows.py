"""Flows with closed-form solutions and densities, shared by the solver tests.

Each flow gives the velocity ``v(x, t)`` (t of shape (batch,)), the exact time-1 map
``forward(x0)``, its inverse ``backward(x1)`` and the exact log-density of the pushforward of
the manifold's base distribution, ``log_prob(x1)``, all derived by hand (not by the solver).
"""

from __future__ import annotations

import math

import torch

from manifolds import Euclidean, FlatTorus, Sphere


class LinearFlow:
    """v(x, t) = A x + b on R^n: x1 = e^A x0 + F b, F = int_0^1 e^{A s} ds; N(0, I) -> N(F b, e^A e^{A^T})."""

    def __init__(self, n: int, *, seed: int = 0, dtype=torch.float64):
        g = torch.Generator().manual_seed(seed)
        self.n = n
        self.manifold = Euclidean(n)
        self.A = 0.5 * torch.randn(n, n, generator=g, dtype=dtype)
        self.b = torch.randn(n, generator=g, dtype=dtype)
        big = torch.zeros(2 * n, 2 * n, dtype=dtype)
        big[:n, :n] = self.A
        big[:n, n:] = torch.eye(n, dtype=dtype)
        E = torch.linalg.matrix_exp(big)  # [[e^A, F], [0, I]]
        self.expA, self.F = E[:n, :n], E[:n, n:]
        self.mean = self.F @ self.b
        self.cov = self.expA @ self.expA.T

    def __call__(self, x, t):
        return x @ self.A.T + self.b

    def forward(self, x0):
        return x0 @ self.expA.T + self.mean

    def backward(self, x1):
        return torch.linalg.solve(self.expA, (x1 - self.mean).T).T

    def log_prob(self, x1):
        return torch.distributions.MultivariateNormal(self.mean, self.cov).log_prob(x1)


class SphereRotation:
    """v(x, t) = (1 + t) w x x on S^2: rotation about w by the angle |w| (t + t^2 / 2); divergence free."""

    def __init__(self, w=(0.3, -1.1, 0.7), dtype=torch.float64):
        self.manifold = Sphere(2)
        self.w = torch.tensor(w, dtype=dtype)

    def __call__(self, x, t):
        return (1 + t)[:, None] * torch.cross(self.w.to(x.dtype).expand_as(x), x, dim=-1)

    def rotate(self, x, angle_factor: float):
        w = self.w.to(x.dtype)
        k, th = w / w.norm(), float(w.norm()) * angle_factor
        kx = torch.cross(k.expand_as(x), x, dim=-1)
        return x * math.cos(th) + kx * math.sin(th) + k * (x @ k)[:, None] * (1 - math.cos(th))

    def at(self, x0, t: float):
        return self.rotate(x0, t + t * t / 2)

    def forward(self, x0):
        return self.at(x0, 1.0)

    def backward(self, x1):
        return self.rotate(x1, -1.5)

    def log_prob(self, x1):
        return torch.full(x1.shape[:-1], -math.log(4 * math.pi), dtype=x1.dtype)


class SphereGradient:
    """v(x, t) = (1/2 + t) P_x(a), the gradient of the height <a, x>: not divergence free.

    With z = <x, a>/|a| and s = atanh z: ds/dt = |a| (1/2 + t), so s1 = s0 + |a|; the component
    orthogonal to a keeps its direction.  div_g P_x(a) = -2 <a, x> on S^2, and
    log p_1(x1) = -log 4 pi + log(1 - z0^2) - log(1 - z1^2).
    """

    def __init__(self, a=(0.2, -0.4, 0.9), dtype=torch.float64):
        self.manifold = Sphere(2)
        self.a = torch.tensor(a, dtype=dtype)

    def __call__(self, x, t):
        a = self.a.to(x.dtype)
        return (0.5 + t)[:, None] * (a - (x * a).sum(-1, keepdim=True) * x)

    def _move(self, x, ds):
        a = self.a.to(x.dtype)
        k = a / a.norm()
        z0 = (x * k).sum(-1, keepdim=True)
        perp = x - z0 * k
        z1 = torch.tanh(torch.atanh(z0) + ds)
        return z1 * k + perp * torch.sqrt((1 - z1 * z1) / (1 - z0 * z0))

    def forward(self, x0):
        return self._move(x0, float(self.a.norm()))

    def backward(self, x1):
        return self._move(x1, -float(self.a.norm()))

    def log_prob(self, x1):
        k = (self.a / self.a.norm()).to(x1.dtype)
        z1 = x1 @ k
        z0 = self.backward(x1) @ k
        return -math.log(4 * math.pi) + torch.log1p(-z0 * z0) - torch.log1p(-z1 * z1)


class TorusShear:
    """v(x, t) = (a sin x_1, b sin x_1 + c + d t) on T^2.

    First angle: tan(x_1/2) grows like e^{a t}; second: x_2(1) = x_2(0) + c + d/2 + (b/a)(x_1(1) - x_1(0))
    (since int sin x_1 dt = int dx_1 / a).  Only dv_1/dx_1 = a cos x_1 enters the divergence, so
    log p_1 = -2 log 2 pi - a - 2 log|cos(x_1(1)/2)| + 2 log|cos(x_1(0)/2)|.
    """

    def __init__(self, a=0.8, b=0.6, c=0.9, d=-0.4):
        self.manifold = FlatTorus(2)
        self.a, self.b, self.c, self.d = a, b, c, d

    def __call__(self, x, t):
        s = torch.sin(x[:, 0])
        return torch.stack([self.a * s, self.b * s + self.c + self.d * t], -1)

    def _map(self, x, sign):
        u0 = x[:, 0]
        u1 = 2 * torch.atan(torch.tan(u0 / 2) * math.exp(sign * self.a))
        w1 = x[:, 1] + sign * (self.c + self.d / 2) + (self.b / self.a) * (u1 - u0)
        return self.manifold.projx(torch.stack([u1, w1], -1))

    def forward(self, x0):
        return self._map(x0, 1.0)

    def backward(self, x1):
        # Inverse of the time-1 map: x_1(0) from tan(x_1(0)/2) = e^{-a} tan(x_1(1)/2), then x_2.
        u1 = x1[:, 0]
        u0 = 2 * torch.atan(torch.tan(u1 / 2) * math.exp(-self.a))
        w0 = x1[:, 1] - (self.c + self.d / 2) - (self.b / self.a) * (u1 - u0)
        return self.manifold.projx(torch.stack([u0, w0], -1))

    def log_prob(self, x1):
        u1 = x1[:, 0]
        u0 = self.backward(x1)[:, 0]
        log_jac = self.a + 2 * torch.log(torch.cos(u1 / 2).abs()) - 2 * torch.log(torch.cos(u0 / 2).abs())
        return -2 * math.log(2 * math.pi) - log_jac
