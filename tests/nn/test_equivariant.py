"""EGNNVelocity, TFNVelocity and geoflow.testing.assert_equivariant.

Every network passes assert_equivariant in float64 (rotations, reflections, translations, a
real permutation); TFN also passes e3nn's own assert_equivariant; models that break one
symmetry each fail it with a message naming that symmetry (so the check can fail).
"""

import copy
import math

import pytest
import torch
from torch_geometric.data import Batch, Data

from geoflow.nn import EGNNVelocity, TFNVelocity
from geoflow.testing import assert_equivariant, random_orthogonal
from manifolds import CoMFree

F64 = torch.float64
SMALL_TFN = dict(irreps_hidden="8x0e + 4x1o + 4x1e + 2x2e", layers=2, num_basis=8, radial_hidden=16, time_dim=8)


def _lively(model):
    """Scale up EGNN's near-zero coordinate read-out so that velocities are O(1) (a meaningful test)."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for layer in getattr(model, "layers", []):
            for head in ("phi_x", "phi_c"):  # phi_c: the cross-product gate of chiral layers
                if hasattr(layer, head):
                    w = getattr(layer, head)[-1].weight
                    w.copy_(0.3 * torch.randn(w.shape, generator=g, dtype=w.dtype))
    return model


@pytest.fixture(scope="module")
def egnn():
    torch.manual_seed(0)
    return _lively(EGNNVelocity(hidden=16, layers=2, time_dim=8, cond_dim=3)).double()


@pytest.fixture(scope="module")
def chiral():
    torch.manual_seed(0)
    return _lively(EGNNVelocity(hidden=16, layers=2, time_dim=8, cond_dim=3, chiral=True)).double()


@pytest.fixture(scope="module")
def tfn():
    torch.manual_seed(0)
    return TFNVelocity(cond_dim=3, **SMALL_TFN).double()


def _net(request, name):
    return request.getfixturevalue(name)


# ------------------------------------------------------------------ defaults
@torch.no_grad()
def test_both_construct_without_arguments_and_pass_assert_equivariant():
    torch.manual_seed(0)
    e = EGNNVelocity()
    assert e.config["hidden"] == 64 and e.config["layers"] == 4 and e.cutoff is None
    x = torch.randn(2, 5, 3)
    v = e(x, torch.rand(2))
    assert v.shape == x.shape and v.dtype == torch.float32
    errs = assert_equivariant(_lively(e), n_particles=5, com_free=True)
    assert max(errs.values()) < 1e-12
    t = TFNVelocity()
    assert next(t.parameters()).dtype == torch.float32
    assert t(x, 0.5).shape == x.shape
    errs = assert_equivariant(t, n_particles=5, com_free=True, batch=2)
    assert max(errs.values()) < 1e-12  # exact Clebsch-Gordan buffers after .double()


# ------------------------------------------------------------------ equivariance
@torch.no_grad()
@pytest.mark.parametrize("name", ["egnn", "tfn"])
def test_equivariant_in_float64_with_particle_types(request, name):
    model = _net(request, name)
    cond = torch.randint(0, 3, (3, 7), generator=torch.Generator().manual_seed(1))
    errs = assert_equivariant(model, n_particles=7, cond=cond, com_free=True)
    for kind in ["rotation", "reflection", "translation", "permutation", "centre-of-mass"]:
        assert any(k.startswith(kind) for k in errs), (kind, list(errs))
    assert max(errs.values()) < 1e-11, errs
    # the velocities are not trivially small
    x = torch.randn(3, 7, 3, dtype=F64)
    assert float(model(x, torch.rand(3, dtype=F64), cond=cond).abs().max()) > 1e-2


def test_egnn_in_2d_dw4_sized():
    torch.manual_seed(1)
    m = _lively(EGNNVelocity(hidden=16, layers=3, time_dim=8))
    errs = assert_equivariant(m, n_particles=4, dim=2, batch=5, com_free=True)
    assert max(errs.values()) < 1e-12


@torch.no_grad()
def test_egnn_invariant_feature_output():
    torch.manual_seed(2)
    m = _lively(EGNNVelocity(hidden=16, layers=2, time_dim=8, cond_dim=5, feature_out_dim=5))
    h = torch.randn(3, 6, 5, dtype=F64)  # e.g. noisy one-hot atom types of EquiFM's hybrid transport
    errs = assert_equivariant(m, n_particles=6, cond=h)
    assert any("output 1" in k for k in errs) and max(errs.values()) < 1e-12
    v, f = m.double()(torch.randn(3, 6, 3, dtype=F64), torch.rand(3, dtype=F64), cond=h)
    assert v.shape == (3, 6, 3) and f.shape == (3, 6, 5)


def test_tfn_passes_e3nn_assert_equivariant(tfn):
    from e3nn.util.test import assert_equivariant as e3nn_assert_equivariant

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 3, generator=g, dtype=F64)
    t = torch.rand(2, generator=g, dtype=F64)
    cond = torch.randint(0, 3, (2, 6), generator=g)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(F64)  # e3nn builds its D matrices in the default dtype
    try:
        errors = e3nn_assert_equivariant(
            lambda pos: tfn(pos, t, cond=cond), args_in=[x], irreps_in=tfn.irreps_in, irreps_out=tfn.irreps_out,
            tolerance=1e-10,
        )
    finally:
        torch.set_default_dtype(prev)
    assert set(errors) == {(0, False), (0, True), (1, False), (1, True)}  # rotations, parity, translations


def test_egnn_layer_matches_the_paper_equations_written_densely():
    """EGNNLayer (message passing, split first linear map) against Satorras et al. Eq. 3-6 on dense (n, n) pairs."""
    from geoflow.nn import EGNNLayer

    torch.manual_seed(11)
    n, H = 6, 8
    layer = EGNNLayer(H, coords_range=3.0).double()
    with torch.no_grad():
        layer.phi_x[-1].weight.normal_()
    h = torch.randn(n, H, dtype=F64)
    x = torch.randn(n, 3, dtype=F64)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    off = i != j
    edge_index = torch.stack([j[off], i[off]])  # source j -> target i
    h_new, x_new = layer(h, x, edge_index)
    # dense reference
    rel = x[:, None, :] - x[None, :, :]  # x_i - x_j
    d2 = (rel**2).sum(-1, keepdim=True)
    m = layer.phi_e(torch.cat([h[:, None, :].expand(n, n, H), h[None, :, :].expand(n, n, H), d2], -1))
    m = m * layer.phi_a(m)
    s = 3.0 * torch.tanh(layer.phi_x(m))
    mask = off[..., None].to(F64)
    x_ref = x + (mask * rel / (d2.sqrt() + 1) * s).sum(1) / (n - 1)
    h_ref = h + layer.phi_h(torch.cat([h, (mask * m).sum(1) / (n - 1)], -1))
    torch.testing.assert_close(x_new, x_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(h_new, h_ref, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ input forms
@torch.no_grad()
@pytest.mark.parametrize("name", ["egnn", "tfn", "chiral"])
def test_pyg_batch_of_different_sizes_matches_dense_inputs(request, name):
    model = _net(request, name)
    g = torch.Generator().manual_seed(4)
    sizes = [4, 7, 2, 5]
    xs = [torch.randn(n, 3, generator=g, dtype=F64) for n in sizes]
    types = [torch.randint(0, 3, (n,), generator=g) for n in sizes]
    t = torch.rand(len(sizes), generator=g, dtype=F64)
    batch = Batch.from_data_list([Data(pos=x, x=c) for x, c in zip(xs, types)])
    v = model(batch, t)
    assert v.shape == (sum(sizes), 3)
    ref = torch.cat([model(x[None], t[i : i + 1], cond=c[None])[0] for i, (x, c) in enumerate(zip(xs, types))])
    torch.testing.assert_close(v, ref, rtol=0, atol=1e-12)
    # per-graph CoM free
    means = torch.zeros(len(sizes), 3, dtype=F64).index_add_(0, batch.batch, v)
    assert float(means.abs().max()) < 1e-12
    # a dense batch of equal sizes equals the PyG batch of the same graphs
    x = torch.randn(3, 5, 3, generator=g, dtype=F64)
    c = torch.randint(0, 3, (3, 5), generator=g)
    tt = torch.rand(3, generator=g, dtype=F64)
    b = Batch.from_data_list([Data(pos=x[i], x=c[i]) for i in range(3)])
    torch.testing.assert_close(model(b, tt), model(x, tt, cond=c).reshape(15, 3), rtol=0, atol=1e-12)
    # radius graphs on a PyG batch (padded neighbour search) equal the per-graph dense ones
    small = copy.deepcopy(model)
    small.cutoff = 1.5
    ref = torch.cat([small(x[None], t[i : i + 1], cond=c[None])[0] for i, (x, c) in enumerate(zip(xs, types))])
    torch.testing.assert_close(small(batch, t), ref, rtol=0, atol=1e-12)
    # explicit cond overrides data.x; a single Data works
    torch.testing.assert_close(model(Data(pos=x[0]), tt[:1], cond=c[0]), model(x[:1], tt[:1], cond=c[:1])[0], rtol=0, atol=1e-12)


@torch.no_grad()
@pytest.mark.parametrize("name", ["egnn", "tfn", "chiral"])
def test_cond_changes_the_output_and_ints_equal_one_hot(request, name):
    model = _net(request, name)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 6, 3, generator=g, dtype=F64)
    t = torch.rand(2, generator=g, dtype=F64)
    a = torch.zeros(2, 6, dtype=torch.long)
    b = a.clone()
    b[:, 0] = 2
    va, vb = model(x, t, cond=a), model(x, t, cond=b)
    assert float((va - vb).abs().max()) > 1e-3
    torch.testing.assert_close(model(x, t, cond=torch.nn.functional.one_hot(b, 3).to(F64)), vb, rtol=0, atol=1e-13)
    # time matters too
    assert float((model(x, torch.zeros(2, dtype=F64), cond=a) - model(x, torch.ones(2, dtype=F64), cond=a)).abs().max()) > 1e-4


# ------------------------------------------------------------------ chirality (SE(3) vs E(3))
@torch.no_grad()
def test_chiral_egnn_is_se3_but_not_e3_equivariant(chiral, egnn):
    cond = torch.randint(0, 3, (3, 7), generator=torch.Generator().manual_seed(21))
    errs = assert_equivariant(chiral, n_particles=7, cond=cond, com_free=True, reflections=False)
    for kind in ["rotation", "translation", "permutation", "centre-of-mass"]:
        assert any(k.startswith(kind) for k in errs), (kind, list(errs))
    assert not any(k.startswith("reflection") for k in errs)
    assert max(errs.values()) < 1e-11, errs
    with pytest.raises(AssertionError, match="reflection"):
        assert_equivariant(chiral, n_particles=7, cond=cond, com_free=True)
    # a configuration and its mirror image: the E(3) model maps one onto the other, the chiral one does not
    g = torch.Generator().manual_seed(22)
    x = torch.randn(3, 7, 3, generator=g, dtype=F64)
    t = torch.rand(3, generator=g, dtype=F64)
    mirror = torch.tensor([1.0, 1.0, -1.0], dtype=F64)
    torch.testing.assert_close(egnn(x * mirror, t, cond=cond), egnn(x, t, cond=cond) * mirror, rtol=0, atol=1e-12)
    gap = (chiral(x * mirror, t, cond=cond) - chiral(x, t, cond=cond) * mirror).abs().max()
    assert float(gap) > 1e-3 * float(chiral(x, t, cond=cond).abs().max())
    # chiral layers add a cross-product gate to the E(3) layer: with the gate at zero they are the E(3) layer
    plain = EGNNVelocity(hidden=16, layers=2, time_dim=8, cond_dim=3).double()
    state = {k: v for k, v in chiral.state_dict().items() if "phi_c" not in k}
    plain.load_state_dict(state)
    silent = copy.deepcopy(chiral)
    for layer in silent.layers:
        layer.phi_c[-1].weight.zero_()
    torch.testing.assert_close(silent(x, t, cond=cond), plain(x, t, cond=cond), rtol=0, atol=1e-13)
    assert chiral.config["chiral"] is True and egnn.config["chiral"] is False


def test_chiral_egnn_bad_options():
    with pytest.raises(TypeError, match="chiral"):
        EGNNVelocity(chiral="yes")
    m = EGNNVelocity(hidden=8, layers=1, time_dim=4, chiral=True)
    with pytest.raises(ValueError, match="chiral=True.*3-D"):
        m(torch.randn(2, 4, 2), torch.rand(2))


# ------------------------------------------------------------------ graphs
@torch.no_grad()
@pytest.mark.parametrize("name", ["egnn", "tfn"])
def test_radius_graph_equals_fully_connected_beyond_the_diameter(request, name):
    full = _net(request, name)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 8, 3, generator=g, dtype=F64)
    t = torch.rand(3, generator=g, dtype=F64)
    cond = torch.randint(0, 3, (3, 8), generator=g)
    diameter = float(torch.cdist(x, x).max())
    big = copy.deepcopy(full)
    big.cutoff = diameter / 0.79  # the taper (last 20% of the cutoff) starts past the diameter
    torch.testing.assert_close(big(x, t, cond=cond), full(x, t, cond=cond), rtol=0, atol=1e-12)
    small = copy.deepcopy(full)
    small.cutoff = 0.5 * diameter
    assert float((small(x, t, cond=cond) - full(x, t, cond=cond)).abs().max()) > 1e-4
    assert_equivariant(small, x, t=t, cond=cond, com_free=True)


@torch.no_grad()
def test_radius_graph_is_continuous_when_a_pair_crosses_the_cutoff():
    torch.manual_seed(7)
    m = _lively(EGNNVelocity(hidden=16, layers=2, time_dim=8, cutoff=1.5)).double()
    hard = _lively(EGNNVelocity(hidden=16, layers=2, time_dim=8, cutoff=1.5, taper=0.0)).double()
    hard.load_state_dict(m.state_dict())
    base = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.9, 0.0], [0.8, 0.4, 0.0]], dtype=F64)

    def at(r, model):
        x = torch.cat([base, torch.tensor([[r, 0.0, 0.3]], dtype=F64)])[None]
        return model(x, torch.tensor([0.5], dtype=F64))

    eps = 1e-7  # particle 3 crosses the cutoff of particle 0 at r ~ 1.4697
    r_c = math.sqrt(1.5**2 - 0.3**2)
    jump_smooth = float((at(r_c - eps, m) - at(r_c + eps, m)).abs().max())
    jump_hard = float((at(r_c - eps, hard) - at(r_c + eps, hard)).abs().max())
    assert jump_smooth < 1e-5 < 1e-3 < jump_hard


# ------------------------------------------------------------------ gradients, numerics
@pytest.mark.parametrize("name", ["egnn", "tfn", "chiral"])
def test_gradients_are_finite_also_for_coincident_particles(request, name):
    model = _net(request, name)
    x = torch.randn(2, 5, 3, dtype=F64)
    x[0, 1] = x[0, 0]  # two particles on top of each other
    x.requires_grad_(True)
    cond = torch.randint(0, 3, (2, 5))
    v = model(x, torch.rand(2, dtype=F64), cond=cond)
    assert torch.isfinite(v).all()
    v.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    model.zero_grad()


@torch.no_grad()
def test_egnn_float32_large_coordinates_stay_finite():
    m = EGNNVelocity(hidden=16, layers=2, time_dim=8)
    x = 1e3 * torch.randn(2, 6, 3)
    v = m(x, torch.rand(2))
    assert torch.isfinite(v).all() and float(v.abs().max()) <= 2 * 15.0 + 1e-3  # tanh-bounded updates


def test_egnn_velocity_is_tangent_to_comfree_and_samples_stay_centred():
    from geoflow.solvers import sample

    torch.manual_seed(8)
    m = _lively(EGNNVelocity(hidden=16, layers=2, time_dim=8)).double()
    M = CoMFree(5, 3)
    x0 = M.random_base(4, generator=torch.Generator().manual_seed(8), dtype=F64)
    M.check_vector(x0, m(x0, torch.rand(4, dtype=F64)).detach())
    with torch.no_grad():
        x1 = sample(m, x0, M, method="rk4", steps=4)
    M.check_point(x1)


# ------------------------------------------------------------------ validation
def test_bad_inputs_raise_clear_errors(egnn, tfn):
    x = torch.randn(2, 4, 3, dtype=F64)
    t = torch.rand(2, dtype=F64)
    with pytest.raises(ValueError, match="needs per-particle features"):
        egnn(x, t)
    with pytest.raises(ValueError, match=r"types must lie in \[0, 2\]"):
        egnn(x, t, cond=torch.full((2, 4), 3))
    with pytest.raises(ValueError, match=r"shape \(2, 4, 3\)"):
        egnn(x, t, cond=torch.randn(2, 4, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"shape \(batch, n_particles, d\)"):
        egnn(x[0], t, cond=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`t` must be a scalar or have shape \(2,\)"):
        egnn(x, torch.rand(3, dtype=F64), cond=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="dtype"):
        egnn(x.float(), t, cond=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="unconditional"):
        EGNNVelocity(hidden=8, layers=1, time_dim=4)(x.float(), t.float(), cond=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="3-D only"):
        tfn(torch.randn(2, 4, 2, dtype=F64), t, cond=torch.zeros(2, 4, dtype=torch.long))
    for kw, match in [(dict(hidden=0), "hidden"), (dict(cutoff=-1.0), "cutoff"), (dict(taper=1.0), "taper"),
                      (dict(time_dim=7), "time_dim"), (dict(cond_dim=-1), "cond_dim")]:
        with pytest.raises(ValueError, match=match):
            EGNNVelocity(**kw)
    with pytest.raises(ValueError, match="irreps_hidden"):
        TFNVelocity(irreps_hidden="8x1o")
    with pytest.raises(TypeError):
        EGNNVelocity(64)  # keyword-only


# ------------------------------------------------------------------ assert_equivariant can fail
class _FlatMLP(torch.nn.Module):
    """Not equivariant at all: an MLP on the flattened coordinates."""

    def __init__(self, n, d):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(n * d + 1, 32), torch.nn.Tanh(), torch.nn.Linear(32, n * d))

    def forward(self, x, t):
        return self.net(torch.cat([x.flatten(1), t[:, None]], dim=1)).reshape(x.shape)


class _IndexedEGNN(torch.nn.Module):
    """E(3)-equivariant and translation-invariant, but weights particles by their index: not permutation-equivariant."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(9)
        self.egnn = _lively(EGNNVelocity(hidden=8, layers=1, time_dim=4))

    def forward(self, x, t):
        w = torch.arange(1, x.shape[1] + 1, dtype=x.dtype)[None, :, None]
        return self.egnn(x, t) * w


def _identity_velocity(x, t):
    """E(3)- and permutation-equivariant, but not translation-invariant."""
    return x.clone()


def _chiral(x, t):
    """SE(3) but not E(3): v_i = sum_j |x_i - x_j| (x_i - c) x (x_j - c) changes sign under reflections."""
    c = x.mean(dim=1, keepdim=True)
    y = x - c
    cross = torch.linalg.cross(y[:, :, None, :].expand(-1, -1, x.shape[1], -1), y[:, None, :, :].expand(-1, x.shape[1], -1, -1))
    w = torch.cdist(x, x)[..., None]
    return (w * cross).sum(2)


def test_assert_equivariant_fails_on_broken_models():
    with pytest.raises(AssertionError, match=r"_FlatMLP is not rotation-equivariant.*max error"):
        assert_equivariant(_FlatMLP(5, 3), n_particles=5)
    with pytest.raises(AssertionError, match=r"not permutation-equivariant.*max error"):
        assert_equivariant(_IndexedEGNN(), n_particles=5)
    # ... while the same network without the index weights passes
    assert_equivariant(_IndexedEGNN().egnn, n_particles=5)
    with pytest.raises(AssertionError, match="not translation-invariant"):
        assert_equivariant(_identity_velocity, n_particles=5)
    assert_equivariant(_identity_velocity, n_particles=5, translations=False)
    with pytest.raises(AssertionError, match="not reflection-equivariant"):
        assert_equivariant(_chiral, n_particles=5)
    errs = assert_equivariant(_chiral, n_particles=5, reflections=False)  # an SE(3) model skips reflections
    assert not any("reflection" in k for k in errs)
    with pytest.raises(AssertionError, match="centre-of-mass free"):
        assert_equivariant(lambda x, t: x.clone(), n_particles=4, translations=False, com_free=True)


def test_random_orthogonal_determinants():
    g = torch.Generator().manual_seed(10)
    for d in (2, 3):
        R = random_orthogonal(50, d, generator=g)
        S = random_orthogonal(50, d, proper=False, generator=g)
        eye = torch.eye(d, dtype=F64).expand(50, d, d)
        torch.testing.assert_close(R @ R.transpose(-1, -2), eye)
        torch.testing.assert_close(torch.linalg.det(R), torch.ones(50, dtype=F64))
        torch.testing.assert_close(torch.linalg.det(S), -torch.ones(50, dtype=F64))


def test_public_names():
    import geoflow.nn as nn_pkg
    import geoflow.testing as testing

    for name in ["EGNNVelocity", "TFNVelocity", "EGNNLayer", "ChiralEGNNLayer", "TFNLayer"]:
        assert name in nn_pkg.__all__ and hasattr(nn_pkg, name)
    for name in testing.__all__:
        assert hasattr(testing, name)
