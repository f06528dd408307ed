import pytest
import torch

#: One tolerance table for the whole suite (e3nn's habit): absolute/relative tolerances per dtype.
TOL = {torch.float32: 1e-4, torch.float64: 1e-9}


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
