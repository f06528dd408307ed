"""benchmarks/field_stiffness.py: the per-cloud Jacobians and the overlap / flung-out count."""

from types import SimpleNamespace

import torch

from ._bench import load_benchmark

fs = load_benchmark("field_stiffness")


def test_jacobians_equal_autograd_per_cloud():
    from geoflow.nn import EGNNVelocity

    torch.manual_seed(0)
    model = EGNNVelocity(hidden=16, layers=2).double()
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    x = x - x.mean(1, keepdim=True)
    J = fs.jacobians(model, x, 0.3)
    assert J.shape == (3, 15, 15)
    for b in range(3):
        want = torch.autograd.functional.jacobian(
            lambda y: model(y.reshape(1, 5, 3), torch.full((1,), 0.3, dtype=y.dtype)).reshape(-1), x[b].reshape(-1)
        )
        torch.testing.assert_close(J[b], want, rtol=1e-10, atol=1e-12)


def test_geometry_counts_overlaps_and_flung_out_particles_among_high_energy_samples():
    g = torch.Generator().manual_seed(1)
    grid = torch.stack(torch.meshgrid(*[torch.arange(2.0)] * 3, indexing="ij"), -1).reshape(8, 3)  # cube, spacing 1
    test = grid + 0.05 * torch.randn(20, 8, 3, generator=g)

    def energy(x):  # repulsive at short range: high for an overlapping pair only
        d = torch.cdist(x, x) + torch.eye(x.shape[1], dtype=x.dtype) * 1e9
        return (d.amin((-2, -1)) ** -12).double()

    data = SimpleNamespace(test=test, energy=energy)
    ok = test[:3].clone()
    overlap = test[:2].clone()
    overlap[:, 1] = overlap[:, 0] + 0.01
    far = test[:1].clone()
    far[:, 2] = 50.0
    r = fs.geometry(torch.cat((ok, overlap, far)), data)
    assert r["n"] == 6
    assert abs(r["frac_above_test_max_energy"] - 2 / 6) < 1e-12  # the two overlaps; the flung-out one is not high
    assert abs(r["frac_overlapping_pair"] - 2 / 6) < 1e-12 and abs(r["frac_flung_out"] - 1 / 6) < 1e-12
    assert r["of_high_energy_overlapping"] == 1.0 and r["of_high_energy_flung_out"] == 0.0
