"""geoflow.solvers.log_likelihood against closed-form densities and quadrature over the manifold."""

import gc
import math
import weakref

import numpy as np
import pytest
import torch

from geoflow.solvers import log_likelihood
from manifolds import FlatTorus, Sphere

from .flows import LinearFlow, SphereGradient, SphereRotation, TorusShear

F64 = torch.float64


# ----------------------------------------------------------------- (a) linear flow on R^n
@pytest.mark.parametrize(
    "manifold,method,steps,tol",
    [
        (None, "rk4", 100, 1e-8),
        ("euclidean", "rk4", 100, 1e-8),
        (None, "dopri5", 1, 1e-6),
        ("euclidean", "dopri5", 1, 1e-6),
        (None, "euler", 200, 0.1),
    ],
)
def test_linear_flow_gaussian_log_density(manifold, method, steps, tol):
    flow = LinearFlow(4)
    x1 = flow.forward(torch.randn(50, 4, generator=torch.Generator().manual_seed(0), dtype=F64))
    m = flow.manifold if manifold else None
    log_p, x0 = log_likelihood(flow, x1, m, method=method, steps=steps, atol=1e-10, rtol=1e-10, return_x0=True)
    assert log_p.shape == (50,)
    torch.testing.assert_close(log_p, flow.log_prob(x1), rtol=0, atol=tol)
    torch.testing.assert_close(x0, flow.backward(x1), rtol=0, atol=tol)


# ----------------------------------------------------------------- (b) rotation on S^2
def test_rotation_keeps_the_uniform_density():
    flow = SphereRotation()
    S2 = flow.manifold
    x1 = S2.random_base(100, generator=torch.Generator().manual_seed(1), dtype=F64)
    log_p, x0 = log_likelihood(flow, x1, S2, steps=50, return_x0=True)
    torch.testing.assert_close(log_p, torch.full((100,), -math.log(4 * math.pi), dtype=F64), rtol=0, atol=1e-12)
    assert float(S2.dist(x0, flow.backward(x1)).max()) < 1e-7


# ----------------------------------------------------------------- (c), (d) closed forms
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_sphere_gradient_flow_density(method):
    flow = SphereGradient()
    S2 = flow.manifold
    x1 = flow.forward(S2.random_base(100, generator=torch.Generator().manual_seed(2), dtype=F64))
    log_p = log_likelihood(flow, x1, S2, method=method, steps=100, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(log_p, flow.log_prob(x1), rtol=0, atol=1e-7)


def test_torus_shear_density():
    flow = TorusShear()
    T2 = flow.manifold
    x1 = flow.forward(T2.random_base(100, generator=torch.Generator().manual_seed(3), dtype=F64))
    log_p, x0 = log_likelihood(flow, x1, T2, steps=100, return_x0=True)
    torch.testing.assert_close(log_p, flow.log_prob(x1), rtol=0, atol=1e-8)
    assert float(T2.dist(x0, flow.backward(x1)).max()) < 1e-8


# ----------------------------------------------------------------- (d) normalisation by quadrature
def _sphere_grid(n_z=24, n_phi=48):
    z, wz = np.polynomial.legendre.leggauss(n_z)  # exact for polynomials in z = cos(theta)
    z, wz = torch.tensor(z, dtype=F64), torch.tensor(wz, dtype=F64)
    phi = torch.arange(n_phi, dtype=F64) * (2 * math.pi / n_phi)
    Z, P = torch.meshgrid(z, phi, indexing="ij")
    r = torch.sqrt(1 - Z * Z)
    x = torch.stack([r * torch.cos(P), r * torch.sin(P), Z], -1).reshape(-1, 3)
    w = (wz[:, None] * (2 * math.pi / n_phi)).expand(n_z, n_phi).reshape(-1)
    return x, w


def test_density_integrates_to_one_on_the_sphere():
    g = torch.Generator().manual_seed(4)
    a = torch.tensor([0.4, -0.3, 0.5], dtype=F64)
    Bm = 0.6 * torch.randn(3, 3, generator=g, dtype=F64)

    def v(x, t):  # not divergence free, time dependent, projected by the solver
        return a + t[:, None] * torch.tanh(x @ Bm.T)

    x, w = _sphere_grid()
    assert abs(float(w.sum()) - 4 * math.pi) < 1e-12
    p = log_likelihood(v, x, Sphere(2), steps=16).exp()
    assert float(p.max() / p.min()) > 2  # far from uniform (measured 46)
    assert abs(float((p * w).sum()) - 1) < 1e-5  # measured 1.2e-7 (1e-3 asked)


def test_density_integrates_to_one_on_the_torus():
    def v(x, t):
        u = 0.8 * torch.sin(x[:, 0] + x[:, 1]) + 0.3 * torch.cos(3 * t)
        return torch.stack([u, 0.5 * torch.cos(x[:, 0]) - 0.4 * torch.sin(2 * x[:, 1])], -1)

    n = 36
    ang = -math.pi + torch.arange(n, dtype=F64) * (2 * math.pi / n)
    x = torch.stack(torch.meshgrid(ang, ang, indexing="ij"), -1).reshape(-1, 2)
    p = log_likelihood(v, x, FlatTorus(2), steps=16).exp()
    assert float(p.max() / p.min()) > 2  # measured 23
    assert abs(float(p.sum()) * (2 * math.pi / n) ** 2 - 1) < 1e-5  # measured 7e-10 (1e-3 asked)


def test_density_integrates_to_one_on_the_poincare_disk():
    import manifolds.hyperbolic as hyp
    B = hyp.PoincareBall(2)
    a = torch.tensor([0.5, -0.2], dtype=F64)

    def v(x, t):  # a hyperbolic translation plus a (non-isometric) coordinate dilation
        r2 = (x * x).sum(-1, keepdim=True)
        return 0.5 * ((1 + r2) * a - 2 * (x @ a)[:, None] * x) + 0.3 * x * (1 - r2)

    # hyperbolic polar coordinates: x = tanh(r / 2) (cos phi, sin phi), volume sinh(r) dr dphi
    r, wr = np.polynomial.legendre.leggauss(64)
    R = 9.0
    r, wr = torch.tensor((r + 1) * R / 2, dtype=F64), torch.tensor(wr * R / 2, dtype=F64)
    n_phi = 48
    phi = torch.arange(n_phi, dtype=F64) * (2 * math.pi / n_phi)
    rr, pp = torch.meshgrid(r, phi, indexing="ij")
    x = (torch.tanh(rr / 2)[..., None] * torch.stack([torch.cos(pp), torch.sin(pp)], -1)).reshape(-1, 2)
    w = (wr * torch.sinh(r))[:, None].expand(-1, n_phi).reshape(-1) * (2 * math.pi / n_phi)
    # dopri5 integrates the ball in its own coordinates (ambient ODE = chart); float64 throughout.
    p = log_likelihood(v, x, B, method="dopri5", atol=1e-9, rtol=1e-9).exp()
    assert abs(float((p * w).sum()) - 1) < 1e-6  # measured 5e-9
    # the base alone integrates to 1 on this grid too (the test measures the flow, not the grid)
    assert abs(float((B.base_log_prob(x).exp() * w).sum()) - 1) < 1e-4


@pytest.mark.filterwarnings("ignore:There is a performance drop because we have not yet implemented the batching rule")
def test_density_integrates_to_one_on_the_hyperboloid():
    # Lorentz: P_x is the Minkowski-orthogonal projection (not symmetric), rho = 1.
    import manifolds.hyperbolic as hyp
    k = 2.0
    L, sk = hyp.Lorentz(2, k=k), math.sqrt(k)

    def v(x, t):  # a boost plus a non-Killing shear, divided by x_0 to keep the speed bounded
        boost = torch.stack([x[:, 1], x[:, 0], torch.zeros_like(x[:, 0])], -1)
        shear = torch.tanh(x[:, 1:2]) * torch.tensor([0.0, 0.0, 1.0], dtype=x.dtype)
        return (0.8 * boost + 0.5 * shear) / x[:, :1]

    # hyperbolic polar coordinates: x = sqrt(k) (cosh(r / sqrt k), sinh(r / sqrt k) (cos, sin)),
    # volume sqrt(k) sinh(r / sqrt k) dr dphi
    r, wr = np.polynomial.legendre.leggauss(48)
    R = 10.0 * sk
    r, wr = torch.tensor((r + 1) * R / 2, dtype=F64), torch.tensor(wr * R / 2, dtype=F64)
    n_phi = 32
    phi = torch.arange(n_phi, dtype=F64) * (2 * math.pi / n_phi)
    rr, pp = torch.meshgrid(r, phi, indexing="ij")
    ch, sh = torch.cosh(rr / sk), torch.sinh(rr / sk)
    x = (sk * torch.stack([ch, sh * torch.cos(pp), sh * torch.sin(pp)], -1)).reshape(-1, 3)
    w = (wr * sk * torch.sinh(r / sk))[:, None].expand(-1, n_phi).reshape(-1) * (2 * math.pi / n_phi)
    assert abs(float((L.base_log_prob(x).exp() * w).sum()) - 1) < 1e-6
    p = log_likelihood(v, x, L, steps=16).exp()
    assert float(p.max() / L.base_log_prob(x).exp().max()) > 1.05  # the flow changes the density
    assert abs(float((p * w).sum()) - 1) < 1e-4  # measured 2.6e-6 (rk4, 16 steps)


# ----------------------------------------------------------------- (e) Hutchinson
@pytest.mark.parametrize("kind", ["hutchinson", "hutchinson-rademacher"])
def test_hutchinson_agrees_with_exact_in_expectation(kind):
    # Each row of the batch draws its own probe: replicate 3 points K times.
    S2 = Sphere(2)
    W = torch.randn(3, 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    v = lambda x, t: torch.sin(x @ W) * (1 + t)[:, None]  # noqa: E731
    x = S2.random_base(3, generator=torch.Generator().manual_seed(6), dtype=F64)
    exact = log_likelihood(v, x, S2, steps=4)
    K = 1500
    est = log_likelihood(v, x.repeat_interleave(K, 0), S2, steps=4, divergence=kind, generator=torch.Generator().manual_seed(7))
    est = est.reshape(3, K)
    se = est.std(1) / math.sqrt(K)
    assert bool((se > 1e-3).all())
    assert bool(((est.mean(1) - exact).abs() < 4 * se).all()), (est.mean(1) - exact, se)
    # same generator state -> same estimate (reproducible)
    again = log_likelihood(v, x, S2, steps=4, divergence=kind, generator=torch.Generator().manual_seed(7))
    first = log_likelihood(v, x, S2, steps=4, divergence=kind, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(again, first)


def test_hutchinson_in_flat_space_with_torchdiffeq():
    flow = LinearFlow(3)
    x1 = flow.forward(torch.randn(2, 3, generator=torch.Generator().manual_seed(8), dtype=F64))
    K = 2000
    g = torch.Generator().manual_seed(9)
    est = log_likelihood(flow, x1.repeat_interleave(K, 0), None, method="dopri5", divergence="hutchinson", generator=g)
    est = est.reshape(2, K)
    se = est.std(1) / math.sqrt(K)
    assert bool(((est.mean(1) - flow.log_prob(x1)).abs() < 4 * se).all())


# ----------------------------------------------------------------- memory, gradients, validation
class _MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None]], -1))


class _LiveSavedTensors:
    """Counts tensors autograd currently holds for backward (saved_tensors_hooks + weakref.finalize).

    The holder keeps a *detached* alias of the saved tensor: holding the tensor itself closes a
    reference cycle through C++ for saved outputs (tensor -> grad_fn -> holder -> tensor) that
    gc cannot break.  Unpacking a detached alias is fine for first-order backward.
    """

    class _Holder:
        __slots__ = ("t", "__weakref__")

    def __init__(self):
        self.live = 0

    def _pack(self, t):
        h = self._Holder()
        h.t = t.detach()
        self.live += 1
        weakref.finalize(h, self._dec)
        return h

    def _dec(self):
        self.live -= 1

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda h: h.t)


def test_memory_is_flat_over_1000_steps():
    # The divergence needs autograd inside each evaluation, but nothing may survive the
    # evaluation: the number of tensors saved for backward must not grow with the step count.
    S2 = Sphere(2)
    model = _MLP()  # parameters require grad and grad mode is on: still no graph by default
    x = S2.random_base(4, generator=torch.Generator().manual_seed(10), dtype=F64)
    counter, seen, calls = _LiveSavedTensors(), [], [0]

    def v(y, t, every=250):
        if calls[0] % every == 0:
            gc.collect()
            seen.append(counter.live)
        calls[0] += 1
        return model(y, t)

    with counter.hooks():
        log_p = log_likelihood(v, x, S2, method="euler", steps=1000)
    gc.collect()
    assert calls[0] == 1000 and len(seen) == 4 and max(seen) == 0 and counter.live == 0, seen
    assert not log_p.requires_grad and bool(torch.isfinite(log_p).all())
    # control (the counter works): with requires_grad=True the graph is kept and grows with the steps
    seen.clear()
    with counter.hooks():
        log_p = log_likelihood(lambda y, t: v(y, t, every=1), x, S2, method="euler", steps=5, requires_grad=True)
    assert seen[-1] > seen[1] > 0, seen
    del log_p
    gc.collect()
    assert counter.live == 0
    log_p = log_likelihood(model, x, S2, method="euler", steps=5, requires_grad=True)
    log_p.sum().backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())


def test_gradient_for_maximum_likelihood_matches_finite_differences():
    S2 = Sphere(2)
    x = S2.random_base(3, generator=torch.Generator().manual_seed(11), dtype=F64)
    b = torch.tensor([0.3, -0.6, 0.2], dtype=F64, requires_grad=True)

    def nll(b):
        v = lambda y, t: torch.tanh(y + b) * (1 + t)[:, None]  # noqa: E731
        return -log_likelihood(v, x, S2, steps=6, requires_grad=True).sum()

    nll(b).backward()
    h = 1e-6
    fd = torch.stack([(nll(b.detach() + h * e) - nll(b.detach() - h * e)) / (2 * h) for e in torch.eye(3, dtype=F64)])
    torch.testing.assert_close(b.grad, fd.detach(), rtol=1e-6, atol=1e-8)
    # gradient w.r.t. the data point (detected: x requires grad)
    xg = x.clone().requires_grad_(True)
    log_likelihood(lambda y, t: torch.tanh(y + b.detach()), xg, S2, steps=4).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def test_float32_and_cond():
    S2 = Sphere(2)
    x = S2.random_base(8, generator=torch.Generator().manual_seed(12), dtype=torch.float32)
    seen = []

    def v(y, t, cond=None):
        seen.append(cond)
        return torch.cross(torch.tensor([0.0, 0.0, 1.0]).expand_as(y), y, dim=-1)

    log_p = log_likelihood(v, x, S2, steps=5, cond=7)
    assert log_p.dtype == torch.float32 and set(seen) == {7}
    torch.testing.assert_close(log_p, torch.full((8,), -math.log(4 * math.pi)), rtol=0, atol=1e-5)


def test_argument_validation():
    S2 = Sphere(2)
    x = S2.random_base(4, dtype=F64)
    zero = lambda y, t: torch.zeros_like(y)  # noqa: E731
    with pytest.raises(ValueError, match=r"`divergence` must be one of \['exact', 'hutchinson', 'hutchinson-rademacher'\]"):
        log_likelihood(zero, x, S2, divergence="skilling")
    with pytest.raises(ValueError, match="`method` must be one of"):
        log_likelihood(zero, x, S2, method="leapfrog")
    with pytest.raises(ValueError, match="`steps` must be >= 1"):
        log_likelihood(zero, x, S2, steps=-3)
    with pytest.raises(TypeError, match="`generator` must be a torch.Generator"):
        log_likelihood(zero, x, S2, divergence="hutchinson", generator=0)
    with pytest.raises(ValueError, match="not on the manifold"):
        log_likelihood(zero, x * 1.5, S2)
    with pytest.raises(ValueError, match=r"velocity returned shape \(4, 1\) at step 1 of 100"):
        log_likelihood(lambda y, t: y[:, :1], x, S2)
    with pytest.raises(ValueError, match=r"NaN or inf values at step 1 of 3 \(t = 1\)"):
        log_likelihood(lambda y, t: y / 0.0, x, S2, steps=3)
