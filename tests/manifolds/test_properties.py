"""The public property suite (manifolds.testing.assert_manifold) over every manifold, both dtypes."""

import pytest
import torch

from manifolds.testing import assert_manifold

from .cases import CASES


@pytest.mark.parametrize("name", sorted(CASES))
def test_property_suite(name, dtype):
    assert_manifold(CASES[name](), dtype=dtype)


@pytest.mark.parametrize("name", sorted(CASES))
def test_broadcasting_batches(name):
    m = CASES[name]()
    g = torch.Generator().manual_seed(1)
    x = m.random_base(4, 3, generator=g, dtype=torch.float64)
    y = m.random_base(3, generator=g, dtype=torch.float64)
    assert x.shape == (4, 3, *m.point_shape)
    d = m.dist(x, y)  # (4, 3) against (3,)
    assert d.shape == (4, 3)
    torch.testing.assert_close(d, m.dist(x, y.expand_as(x)))
    assert m.logmap(x, y).shape == x.shape
    assert m.inner(x, m.logmap(x, y)).shape == (4, 3)
    assert m.base_log_prob(x).shape == (4, 3)
    t = torch.rand(4, 3, generator=g, dtype=torch.float64)
    assert m.geodesic(x, y, t).shape == x.shape
    # an empty batch works too
    e = m.random_base(0, dtype=torch.float64)
    assert e.shape == (0, *m.point_shape) and m.dist(e, e).shape == (0,)


@pytest.mark.parametrize("name", sorted(CASES))
def test_random_base_reproducible(name):
    m = CASES[name]()
    a = m.random_base(5, generator=torch.Generator().manual_seed(3))
    b = m.random_base(5, generator=torch.Generator().manual_seed(3))
    assert a.dtype == torch.get_default_dtype()
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_finite_values_and_gradients_at_x_equal_y(name, dtype):
    m = CASES[name]()
    x = m.random_base(8, generator=torch.Generator().manual_seed(2), dtype=dtype).requires_grad_()
    y = x.detach().clone().requires_grad_()
    out = m.dist(x, y).sum() + m.logmap(x, y).pow(2).sum() + m.geodesic(x, y, 0.3).sum()
    out = out + m.expmap(x, torch.zeros_like(x)).sum() + m.norm(x, torch.zeros_like(x)).sum()
    assert torch.isfinite(out)
    out.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    torch.testing.assert_close(m.dist(x, y).detach(), torch.zeros(8, dtype=dtype), atol=1e-3 if dtype == torch.float32 else 1e-7, rtol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_check_point_rejects_bad_input(name):
    m = CASES[name]()
    x = m.random_base(3, dtype=torch.float64)
    bad_shape = torch.zeros(3, *[s + 1 for s in m.point_shape], dtype=torch.float64)
    with pytest.raises(ValueError, match="trailing shape"):
        m.check_point(bad_shape)
    with pytest.raises(ValueError, match="NaN or inf"):
        m.check_point(torch.full_like(x, float("nan")))
    with pytest.raises(TypeError, match="floating dtype"):
        m.check_point(x.to(torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        m.check_point(x.tolist())
    with pytest.raises(TypeError, match="dtype"):
        m.check_vector(x, m.logmap(x, x).float())


def test_every_case_is_exported():
    import manifolds

    for name in manifolds.__all__:
        assert hasattr(manifolds, name), name
