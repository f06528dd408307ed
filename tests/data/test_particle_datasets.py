"""Particle systems through load_dataset: fixed splits on CoMFree, energies, generated LJ data and its cache."""

import numpy as np
import pytest
import torch

from manifolds import CoMFree

from geoflow.data import available_datasets, load_dataset
from geoflow.data.particles import dw4_energy, generated_lj, lj_energy, load_dw4


def _rows(x):
    return {r.tobytes() for r in x.reshape(x.shape[0], -1).numpy()}


def test_dw4_dataset_is_centred_disjoint_and_carries_its_energy():
    assert {"dw4", "lj13", "lj55"} <= set(available_datasets())
    ds = load_dataset("dw4")
    assert ds.manifold == CoMFree(4, 2) or repr(ds.manifold) == repr(CoMFree(4, 2))
    for split in ("train", "val", "test"):
        x = getattr(ds, split)
        assert x.shape[1:] == (4, 2)
        assert float(x.mean(-2).abs().max()) < 1e-5  # centred
        assert torch.equal(x, load_dw4(split))
    assert not (_rows(ds.test) & _rows(ds.train)) and not (_rows(ds.val) & _rows(ds.train))
    torch.testing.assert_close(ds.energy(ds.test[:50]), dw4_energy(ds.test[:50]))
    assert ds.meta["counts"]["test"] == ds.test.shape[0]


def test_dw4_n_samples_is_a_seeded_subset_of_train():
    a, b = load_dataset("dw4", n_samples=500, seed=4), load_dataset("dw4", n_samples=500, seed=4)
    c = load_dataset("dw4", n_samples=500, seed=5)
    assert a.train.shape == (500, 4, 2) and torch.equal(a.train, b.train) and not torch.equal(a.train, c.train)
    assert _rows(a.train) <= _rows(load_dw4("train"))
    assert torch.equal(a.test, load_dw4("test"))
    with pytest.raises(ValueError, match="exceeds the .* training rows of 'dw4'"):
        load_dataset("dw4", n_samples=10**7)


def test_generated_lj_is_cached_reproducible_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOFLOW_CACHE", str(tmp_path))
    x = generated_lj(13, "train", 20)
    assert x.shape == (20, 13, 3) and x.dtype == torch.float32
    assert float(x.mean(-2).abs().max()) < 1e-5
    files = list(tmp_path.glob("lj13-train-20-v*.npy"))
    assert len(files) == 1
    assert torch.equal(generated_lj(13, "train", 20), x)  # read back from the cache
    # An equilibrated LJ13 sample: energies near the shipped test split's (mean -43.1).
    assert -47 < float(lj_energy(x.double()).mean()) < -39
    files[0].write_bytes(b"not a numpy file")
    with pytest.raises(ValueError, match=r"lj13-train-20-v1\.npy: corrupt cached LJ data.*delete the file"):
        generated_lj(13, "train", 20)
    np.save(files[0], np.zeros((20, 13, 3), np.float64))
    with pytest.raises(ValueError, match="expected \\(20, 13, 3\\) float32"):
        generated_lj(13, "train", 20)


def test_lj13_dataset_uses_shipped_val_test_and_generated_train(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOFLOW_CACHE", str(tmp_path))
    ds = load_dataset("lj13", n_samples=20)
    assert repr(ds.manifold) == repr(CoMFree(13, 3))
    assert ds.train.shape == (20, 13, 3) and ds.test.shape == (5000, 13, 3) and ds.val.shape == (2000, 13, 3)
    assert ds.energy is lj_energy
    with pytest.raises(ValueError, match="`path` is only for file-based datasets"):
        load_dataset("lj13", path="x.npy")
