"""log_volume_density = log sqrt(det G) in ambient orthonormal coordinates (used by the likelihood solver)."""

import pytest
import torch

import manifolds as M


def _sym_basis(n):
    out = []
    for i in range(n):
        for j in range(i, n):
            e = torch.zeros(n, n, dtype=torch.float64)
            e[i, j] = e[j, i] = 1.0
            out.append(e / e.norm())
    return torch.stack(out)


@pytest.mark.parametrize(
    "m, basis",
    [
        (M.SPD(3), _sym_basis(3)),
        (M.SPD(3, metric="log-euclidean"), _sym_basis(3)),
        (M.SPD(2, metric="log-euclidean"), _sym_basis(2)),
        (M.PoincareBall(3, c=0.7), torch.eye(3, dtype=torch.float64)),
    ],
    ids=["spd-affine", "spd-le", "spd2-le", "poincare"],
)
def test_log_volume_density_is_half_logdet_of_the_metric(m, basis):
    x = m.random_base(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = m.log_volume_density(x)
    for k in range(5):
        G = torch.stack([torch.stack([m.inner(x[k], a, b) for b in basis]) for a in basis])
        torch.testing.assert_close(got[k], 0.5 * torch.logdet(G), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("metric", ["affine", "log-euclidean"])
def test_spd_log_volume_density_gradient_finite_at_repeated_eigenvalues(metric):
    m = M.SPD(3, metric=metric)
    for x in [torch.eye(3, dtype=torch.float64), torch.diag(torch.tensor([2.0, 2.0, 0.5], dtype=torch.float64))]:
        x = x.clone().requires_grad_()
        m.log_volume_density(x).backward()
        assert torch.isfinite(x.grad).all()
        if metric == "affine":  # d/dP of -(n+1)/2 logdet P = -(n+1)/2 P^-1
            torch.testing.assert_close(x.grad, -2.0 * torch.linalg.inv(x.detach()))


def test_embedded_manifolds_have_zero_density():
    for m in [M.Sphere(2), M.FlatTorus(2), M.Lorentz(2), M.SO3(), M.Euclidean(2)]:
        x = m.random_base(3)
        assert torch.equal(m.log_volume_density(x), torch.zeros(3))
