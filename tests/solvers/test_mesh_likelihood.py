"""log_likelihood on a triangle mesh: tangent-plane divergence through Mesh.proju."""

import math

import pytest
import torch

from geoflow.solvers import log_likelihood
from manifolds import Sphere

import trimesh  # a dependency of geoflow: a missing install must fail, not skip
from manifolds.mesh import Mesh  # noqa: E402


@pytest.fixture(scope="module")
def ico():
    s = trimesh.creation.icosphere(subdivisions=4)  # 2562 vertices
    return Mesh(s.vertices, s.faces, n_eigs=5)


def test_rotation_keeps_uniform_density_up_to_the_mesh_resolution():
    """A rotation of the sphere keeps the uniform density; on an icosphere the projected flow does so up to
    the discretisation, and the error falls as the mesh is refined (smooth tangent planes, Mesh.proju)."""
    w = torch.tensor([0.3, -1.0, 0.5], dtype=torch.float64)

    def v(x, t):
        return torch.linalg.cross(w.expand_as(x), x, dim=-1)

    errors = []
    for sub in (2, 3):
        s = trimesh.creation.icosphere(subdivisions=sub)
        mesh = Mesh(s.vertices, s.faces, n_eigs=5)
        x1 = mesh.random_base(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        for method in ("euler", "rk4"):
            lp = log_likelihood(v, x1, mesh, method=method, steps=8)
            errors.append((sub, float((lp + math.log(mesh.total_area)).abs().max())))
    coarse = max(e for s, e in errors if s == 2)
    fine = max(e for s, e in errors if s == 3)
    assert fine < 0.01 and fine < coarse / 2, errors


def test_mesh_likelihood_approaches_sphere(ico):
    # a compressible flow (gradient of a height function): the mesh result approaches the sphere's
    a = torch.tensor([0.0, 0.0, 1.5], dtype=torch.float64)

    def v(x, t):
        return a - (a * x).sum(-1, keepdim=True) * x / (x * x).sum(-1, keepdim=True)

    x1 = ico.random_base(64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lp_mesh = log_likelihood(v, x1, ico, method="rk4", steps=20)
    S = Sphere(2)
    lp_sphere = log_likelihood(v, S.projx(x1), S, method="rk4", steps=20)
    # the change of log-density, which the flow causes, must agree; the base constants differ by the area
    change_mesh = lp_mesh + math.log(ico.total_area)
    change_sphere = lp_sphere + math.log(4 * math.pi)
    assert float(change_sphere.abs().max()) > 0.5  # the test is not vacuous
    err = (change_mesh - change_sphere).abs()
    assert float(err.median()) < 0.02 and float(err.max()) < 0.1
    assert torch.isfinite(lp_mesh).all()
