"""Hypothesis hunts for NaN/inf in values and gradients at every manifold's hard points.

Hard points: x == y, nearby pairs (1e-12 .. 1e-2), and the far end of each manifold
(antipodes on the sphere, the torus seam, the edge of the Poincare ball, far points on the
hyperboloid, nearly singular SPD matrices, rotations by nearly pi), in float32 and float64.
CI runs a small profile; `HYPOTHESIS_PROFILE=long` runs many more draws (see benchmarks/fuzz_long.py).
"""

import pytest
from hypothesis import given

from .cases import CASES
from .hard_points import DRAWS, check_ops_at_hard_point, load_profile

load_profile()


@pytest.mark.parametrize("name", sorted(CASES))
@given(**DRAWS)
def test_no_nan_at_hard_points(name, kind, eps, seed, dtype, t):
    check_ops_at_hard_point(CASES[name](), name, kind, eps, seed, dtype, t)
