"""UNetVelocity: shapes, conditioning, the null label, per-sample independence; condition dropout."""

import pytest
import torch

from geoflow.nn import UNetVelocity, drop_condition, null_condition


def _net(**kw):
    torch.manual_seed(0)
    base = dict(base=8, channel_mults=(1, 2), time_dim=16)
    base.update(kw)
    return UNetVelocity(**base).double().eval()


def _x(n=4, c=1, h=8, w=8, seed=0):
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("c,h,w,mults", [(1, 8, 8, (1, 2)), (3, 16, 12, (1, 2, 2)), (2, 8, 8, (1,))])
def test_output_shape(c, h, w, mults):
    net = _net(in_channels=c, channel_mults=mults, num_res_blocks=2)
    x = _x(3, c, h, w)
    v = net(x, torch.rand(3, dtype=torch.float64))
    assert v.shape == x.shape and v.dtype == torch.float64 and torch.isfinite(v).all()
    assert net(x, 0.25).shape == x.shape  # scalar t broadcasts
    torch.testing.assert_close(net(x, 0.25), net(x, torch.full((3,), 0.25, dtype=torch.float64)), rtol=0, atol=0)


def test_time_and_class_conditioning_change_the_output():
    net = _net(num_classes=10)
    x = _x()
    t = torch.full((4,), 0.5, dtype=torch.float64)
    a = net(x, t, cond=torch.tensor([0, 0, 0, 0]))
    b = net(x, t, cond=torch.tensor([3, 3, 3, 3]))
    assert (a - b).abs().amax(dim=(1, 2, 3)).min() > 1e-6
    assert not torch.allclose(net(x, t), net(x, 0.9 * t))


def test_null_label_is_cond_none_and_per_row():
    net = _net(num_classes=10)
    x = _x()
    null = net(x, 0.5)
    torch.testing.assert_close(null, net(x, 0.5, cond=torch.full((4,), 10)), rtol=0, atol=0)
    torch.testing.assert_close(net.null_cond(4), torch.full((4,), 10))
    mixed = net(x, 0.5, cond=torch.tensor([10, 2, 10, 5]))
    # every row only sees its own label (GroupNorm normalises per sample)
    torch.testing.assert_close(mixed[[0, 2]], null[[0, 2]], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mixed[1:2], net(x[1:2], 0.5, cond=torch.tensor([2])), rtol=1e-12, atol=1e-12)


def test_vector_conditions_with_null_flag():
    net = _net(cond_dim=3)
    x = _x()
    c = torch.randn(4, 3, dtype=torch.float64)
    assert not torch.allclose(net(x, 0.5, cond=c), net(x, 0.5))
    flagged = torch.cat([torch.zeros(4, 3, dtype=torch.float64), torch.ones(4, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(net(x, 0.5), net(x, 0.5, cond=flagged), rtol=0, atol=0)


def test_gradients_reach_every_parameter():
    net = _net(num_classes=3).train()
    x = _x()
    net(x, torch.rand(4, dtype=torch.float64), cond=torch.tensor([0, 1, 2, 3])).pow(2).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing, missing


def test_unet_validation():
    with pytest.raises(ValueError, match="base"):
        UNetVelocity(base=0)
    with pytest.raises(ValueError, match="channel_mults"):
        UNetVelocity(channel_mults=())
    with pytest.raises(ValueError, match="time_dim"):
        UNetVelocity(time_dim=7)
    with pytest.raises(ValueError, match="at most one"):
        UNetVelocity(num_classes=3, cond_dim=2)
    net = _net(num_classes=3)
    with pytest.raises(ValueError, match=r"shape \(batch, 1, H, W\)"):
        net(torch.randn(2, 64, dtype=torch.float64), 0.5)
    with pytest.raises(ValueError, match="divisible by 2"):
        net(torch.randn(2, 1, 7, 8, dtype=torch.float64), 0.5)
    with pytest.raises(ValueError, match="class labels must lie"):
        net(_x(2), 0.5, cond=torch.tensor([0, 4]))
    with pytest.raises(TypeError, match="integer"):
        net(_x(2), 0.5, cond=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="unconditional"):
        _net()(_x(2), 0.5, cond=torch.tensor([0, 1]))


# ------------------------------------------------------------------ condition dropout
def test_drop_condition_labels():
    y = torch.arange(10) % 3
    assert torch.equal(drop_condition(y, 0.0, num_classes=3), y)
    assert torch.equal(drop_condition(y, 1.0, num_classes=3), torch.full((10,), 3))
    g = torch.Generator().manual_seed(0)
    big = torch.zeros(20000, dtype=torch.long)
    rate = (drop_condition(big, 0.1, num_classes=3, generator=g) == 3).double().mean()
    assert abs(float(rate) - 0.1) < 5 * (0.1 * 0.9 / 20000) ** 0.5  # binomial: 5 standard errors
    # one uniform per row whatever p is, so the training stream does not depend on p
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    drop_condition(y, 0.0, num_classes=3, generator=g1)
    drop_condition(y, 0.7, num_classes=3, generator=g2)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_drop_condition_vectors_and_null():
    c = torch.randn(6, 2)
    out = drop_condition(c, 1.0, cond_dim=2)
    torch.testing.assert_close(out, null_condition(6, cond_dim=2))
    kept = drop_condition(c, 0.0, cond_dim=2)
    torch.testing.assert_close(kept, torch.cat([c, torch.zeros(6, 1)], 1), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        drop_condition(c, 1.5, cond_dim=2)
    with pytest.raises(ValueError, match="no null condition"):
        null_condition(3)
