"""random_base with a generator on one device and ``device=`` another: drawn on the generator's, then moved.

(A seeded CPU generator must give the same points on every device; tests/test_cuda.py checks it on a GPU.
Here the target is torch's "meta" device, which every machine has: the draw must come from the CPU
generator, advance it exactly as a CPU draw does, and land on the requested device.)
"""

import pytest
import torch

from .cases import CASES


@pytest.mark.parametrize("name", sorted(CASES))
def test_random_base_draws_on_the_generator_and_moves(name):
    m = CASES[name]()
    g_ref, g = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    ref = m.random_base(3, generator=g_ref, dtype=torch.float64)
    got = m.random_base(3, generator=g, dtype=torch.float64, device="meta")
    assert got.device.type == "meta" and got.shape == ref.shape and got.dtype == torch.float64
    assert torch.equal(g.get_state(), g_ref.get_state())  # the CPU stream advanced as for a CPU draw
    same = m.random_base(3, generator=torch.Generator().manual_seed(0), dtype=torch.float64, device="cpu")
    assert torch.equal(same, ref)
