"""CoMFree: the centre-of-mass-free subspace, its invariant Gaussian and likelihoods of flows on it.

The generic property suite runs on it through tests/manifolds/cases.py; here: the density
against an independent orthonormal-coordinates reference, the sampling covariance, the
checks, and the exact log-likelihood of a linear flow (closed form) through
geoflow.solvers.log_likelihood, which needs the divergence tr(P J) on the (n - 1) d subspace.
"""

import math

import geoopt
import pytest
import torch

from geoflow.solvers import log_likelihood
from manifolds import CoMFree

F64 = torch.float64


def _orthonormal_basis(n, d, dtype=F64):
    """E (n d, (n - 1) d): orthonormal basis of the centred subspace in vec coordinates (Helmert ⊗ I_d)."""
    H = torch.zeros(n - 1, n, dtype=dtype)
    for k in range(1, n):  # Helmert rows: (1, ..., 1, -k, 0, ...) / sqrt(k (k + 1))
        H[k - 1, :k] = 1.0
        H[k - 1, k] = -k
        H[k - 1] /= math.sqrt(k * (k + 1))
    return torch.kron(H, torch.eye(d, dtype=dtype)).T


@pytest.mark.parametrize("n,d,std", [(4, 2, 1.0), (5, 3, 0.7), (13, 3, 2.0)])
def test_base_log_prob_matches_gaussian_in_orthonormal_coordinates(n, d, std):
    m = CoMFree(n, d, std=std)
    assert m.dim == (n - 1) * d and m.point_shape == (n, d)
    x = m.random_base(64, generator=torch.Generator().manual_seed(0), dtype=F64)
    E = _orthonormal_basis(n, d)
    torch.testing.assert_close(E.T @ E, torch.eye((n - 1) * d, dtype=F64))
    z = x.reshape(64, n * d) @ E  # coordinates in the subspace, x = E z exactly
    torch.testing.assert_close(z @ E.T, x.reshape(64, -1))
    ref = torch.distributions.Normal(torch.zeros((), dtype=F64), std).log_prob(z).sum(-1)
    torch.testing.assert_close(m.base_log_prob(x), ref, rtol=0, atol=1e-10)
    # the ambient-Gaussian formula (n d instead of (n - 1) d) is off by d/2 log(2 pi std^2)
    ambient = torch.distributions.Normal(torch.zeros((), dtype=F64), std).log_prob(x).sum((-2, -1))
    torch.testing.assert_close(m.base_log_prob(x) - ambient, torch.full((64,), 0.5 * d * math.log(2 * math.pi * std**2), dtype=F64))
    # base_log_prob centres its input: translations do not change it
    torch.testing.assert_close(m.base_log_prob(x + torch.randn(64, 1, d, dtype=F64)), m.base_log_prob(x))


def test_random_base_is_centred_with_covariance_std2_P():
    n, d, std = 4, 2, 1.5
    m = CoMFree(n, d, std=std)
    x = m.random_base(40000, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert float(x.mean(dim=1).abs().max()) < 1e-13
    flat = x.reshape(-1, n * d)
    cov = flat.T @ flat / flat.shape[0]
    P = torch.kron(torch.eye(n, dtype=F64) - 1.0 / n, torch.eye(d, dtype=F64))
    assert float((cov - std**2 * P).abs().max()) < 0.06  # ~4 standard errors at 40k samples
    # squared radius ~ std^2 chi^2 with (n - 1) d degrees of freedom
    r2 = (flat * flat).sum(-1) / std**2
    assert abs(float(r2.mean()) - (n - 1) * d) < 0.1


def test_geometry_is_flat_and_projections_centre():
    m = CoMFree(5, 3)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(7, 5, 3, generator=g, dtype=F64)
    p = m.projx(x)
    torch.testing.assert_close(p.sum(1), torch.zeros(7, 3, dtype=F64), rtol=0, atol=1e-13)
    torch.testing.assert_close(p, x - x.mean(1, keepdim=True))
    u = torch.randn(7, 5, 3, generator=g, dtype=F64)
    torch.testing.assert_close(m.proju(p, u), u - u.mean(1, keepdim=True))
    y = m.projx(torch.randn(7, 5, 3, generator=g, dtype=F64))
    torch.testing.assert_close(m.expmap(p, m.logmap(p, y)), y)
    torch.testing.assert_close(m.dist(p, y), torch.linalg.matrix_norm(y - p))
    torch.testing.assert_close(m.geodesic(p, y, 0.25), 0.75 * p + 0.25 * y)


def test_check_point_says_how_far_off_and_what_to_do():
    m = CoMFree(4, 3)
    x = m.random_base(2, dtype=F64)
    m.check_point(x)
    with pytest.raises(ValueError, match=r"off by up to 0\.5.*use projx"):
        m.check_point(x + 0.5)
    with pytest.raises(ValueError, match="trailing shape"):
        m.check_point(torch.zeros(2, 3, 3, dtype=F64))
    with pytest.raises(ValueError, match="use projx.*proju"):
        m.check_vector(x, torch.ones_like(x))
    m.check_vector(x, m.proju(x, torch.ones_like(x)))


def test_constructor_validation():
    with pytest.raises(ValueError, match="n_particles"):
        CoMFree(1)
    with pytest.raises(TypeError, match="n_particles"):
        CoMFree(2.5)
    with pytest.raises(ValueError, match="dim"):
        CoMFree(3, 0)
    with pytest.raises(ValueError, match="std"):
        CoMFree(3, std=-1.0)
    assert repr(CoMFree(3, 2, std=2.0)) == "CoMFree(n_particles=3, dim=2, std=2.0)"


class _LinearFlow(torch.nn.Module):
    """v(x) = A vec(x) on R^(n d) (not CoM-preserving by itself; the solvers project it with P)."""

    def __init__(self, A, n, d):
        super().__init__()
        self.A, self.n, self.d = A, n, d

    def forward(self, x, t):
        return (x.reshape(x.shape[0], -1) @ self.A.T).reshape(x.shape)


@pytest.mark.parametrize("n,d,std", [(4, 2, 1.0), (5, 3, 1.3)])
def test_log_likelihood_of_a_linear_flow_in_closed_form(n, d, std):
    """On X the projected flow is dz/dt = B z with B = E^T A E: x1 = E expm(B) z0, log p1 = log p0(z0) - tr(B)."""
    g = torch.Generator().manual_seed(3)
    m = CoMFree(n, d, std=std)
    D = n * d
    A = 0.8 / math.sqrt(D) * torch.randn(D, D, generator=g, dtype=F64)
    E = _orthonormal_basis(n, d)
    B = E.T @ A @ E
    x1 = m.random_base(16, generator=g, dtype=F64) * 1.2
    z1 = x1.reshape(16, D) @ E
    z0 = z1 @ torch.linalg.matrix_exp(-B).T
    normal = torch.distributions.Normal(torch.zeros((), dtype=F64), std)
    expected = normal.log_prob(z0).sum(-1) - torch.trace(B)
    flow = _LinearFlow(A, n, d)
    for divergence, steps in [("exact", 60)]:
        log_p, x0 = log_likelihood(flow, x1, m, method="rk4", steps=steps, divergence=divergence, return_x0=True)
        torch.testing.assert_close(x0.reshape(16, D), z0 @ E.T, rtol=0, atol=1e-7)
        torch.testing.assert_close(log_p, expected, rtol=0, atol=1e-7)
    # the divergence is tr(P A) = tr(B), not tr(A)
    assert abs(float(torch.trace(A) - torch.trace(B))) > 1e-3


def test_hutchinson_divergence_is_unbiased_on_the_subspace():
    """Mean over probes of the Hutchinson log-likelihood approaches the exact one (E[eps^T J P eps] = tr(P J))."""
    n, d = 4, 2
    m = CoMFree(n, d)
    g = torch.Generator().manual_seed(5)
    flow = _LinearFlow(0.3 * torch.randn(n * d, n * d, generator=g, dtype=F64), n, d)
    x1 = m.random_base(4, generator=g, dtype=F64)
    reps = torch.stack([
        log_likelihood(flow, x1, m, steps=4, divergence="hutchinson-rademacher", generator=torch.Generator().manual_seed(s))
        for s in range(24)
    ])
    exact = log_likelihood(flow, x1, m, steps=4)
    assert float((reps.mean(0) - exact).abs().max()) < 4 * float(reps.std(0).max()) / math.sqrt(24) + 1e-9


def test_riemannian_adam_keeps_parameters_centred():
    m = CoMFree(6, 3)
    p = geoopt.ManifoldParameter(m.random_base(2, generator=torch.Generator().manual_seed(4)), manifold=m)
    opt = geoopt.optim.RiemannianAdam([p], lr=0.1)
    target = torch.arange(18.0).reshape(6, 3)
    for _ in range(20):
        opt.zero_grad()
        ((p - target) ** 2).sum().backward()
        opt.step()
    assert float(p.detach().mean(dim=1).abs().max()) < 1e-5
    # it moves towards the centred target
    assert float(((p.detach() - m.projx(target)) ** 2).sum()) < float(((m.random_base(2) - m.projx(target)) ** 2).sum())
