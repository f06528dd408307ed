"""The property suite must fail on broken manifolds (a suite that cannot fail proves nothing)."""

import math

import pytest
import torch

import manifolds as M
from manifolds.testing import assert_manifold, check_normalised


class WrongVolume(M.Sphere):
    def base_log_prob(self, x):  # off by log 2: integrates to 2
        return super().base_log_prob(x) + math.log(2.0)


class SlowExp(M.Sphere):
    def expmap(self, x, u):  # moves at 0.9 times the speed: exp/log/dist no longer agree
        return super().expmap(x, 0.9 * u)


class LeakyProju(M.Sphere):
    def proju(self, x, u):
        return u - 0.5 * (x * u).sum(-1, keepdim=True) * x


class AsymmetricDist(M.FlatTorus):
    def dist(self, x, y, *, keepdim=False):
        return super().dist(x, y, keepdim=keepdim) * (1 + 0.01 * torch.tanh(x.sum(-1, keepdim=keepdim)))


class WrongWrappedDensity(M.Euclidean):
    def base_log_prob(self, x):  # the density of N(0, 1.3^2) for samples of N(0, 1): still normalised
        return torch.distributions.Normal(0.0, 1.3).log_prob(x).sum(-1) + 0.2


@pytest.mark.parametrize(
    "broken, match",
    [
        (WrongVolume(2), "not normalised"),
        (SlowExp(2), "logmap|dist"),
        (LeakyProju(2), "tangent"),
        (AsymmetricDist(2), "symmetric"),
        (WrongWrappedDensity(2), "not normalised"),
    ],
    ids=["volume", "exp-speed", "proju", "dist-symmetry", "density"],
)
def test_suite_catches_broken_manifolds(broken, match):
    with pytest.raises((AssertionError, ValueError), match=match):
        assert_manifold(broken, dtype=torch.float64, gradcheck=False)


def test_check_normalised_estimates_one_for_correct_densities():
    for m in [M.Sphere(2), M.FlatTorus(3), M.Euclidean(2)]:
        est = check_normalised(m, n_samples=20000)
        assert abs(est - 1) < 0.03
