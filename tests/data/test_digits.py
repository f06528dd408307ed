"""The shipped 8x8 digits: integrity, values against numpy, labels aligned with splits, corrupt files."""

import gzip
import hashlib
import io
from importlib import resources

import numpy as np
import pytest
import torch

from geoflow.data import DIGITS_SHAPE, GeoDataset, load_dataset, load_digits
from geoflow.data import _parsing
from manifolds import Euclidean

FILE = resources.files("geoflow.data").joinpath("files").joinpath("digits.csv.gz")


def _reference():
    """Independent reference: numpy's parser on the gunzipped file."""
    raw = np.loadtxt(io.BytesIO(gzip.decompress(FILE.read_bytes())), delimiter=",")
    return raw[:, :64], raw[:, 64].astype(np.int64)


def test_packaged_file_bytes_and_sha256():
    data = FILE.read_bytes()
    assert len(data) == 57523
    assert hashlib.sha256(data).hexdigest() == "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
    with pytest.raises(RuntimeError, match="damaged"):
        _parsing.read_bytes("digits.csv.gz", None, "0" * 64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_images_and_labels_match_numpy_reference(dtype):
    images, labels = load_digits(dtype=dtype)
    pix, lab = _reference()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == dtype
    assert labels.dtype == torch.int64 and torch.equal(labels, torch.from_numpy(lab))
    np.testing.assert_array_equal(images.reshape(1797, 64).double().numpy(), pix / 8.0 - 1.0)
    assert float(images.min()) == -1.0 and float(images.max()) == 1.0
    assert torch.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_load_dataset_splits_labels_and_manifold():
    ds = load_dataset("digits", seed=0)
    assert isinstance(ds, GeoDataset) and ds.num_classes == 10
    assert isinstance(ds.manifold, Euclidean) and ds.manifold.point_shape == DIGITS_SHAPE == (1, 8, 8)
    assert repr(ds.manifold) == "Euclidean(shape=(1, 8, 8))"
    assert (ds.train.shape[0], ds.val.shape[0], ds.test.shape[0]) == (1439, 179, 179)
    images, labels = load_digits()
    for split in ("train", "val", "test"):
        idx = ds.meta["split_indices"][split]
        torch.testing.assert_close(getattr(ds, split), images[idx], rtol=0, atol=0)
        assert torch.equal(ds.labels[split], labels[idx])
    all_idx = torch.cat([ds.meta["split_indices"][k] for k in ("train", "val", "test")])
    assert torch.equal(all_idx.sort().values, torch.arange(1797))  # disjoint and complete
    assert ds.meta["sha256"].startswith("09f66e6d") and "scikit-learn" in ds.meta["provenance"]
    assert "num_classes=10" in repr(ds)


def test_split_seeds():
    a, b, c = load_dataset("digits", seed=3), load_dataset("digits", seed=3), load_dataset("digits", seed=4)
    assert torch.equal(a.train, b.train) and torch.equal(a.labels["test"], b.labels["test"])
    assert not torch.equal(a.meta["split_indices"]["test"], c.meta["split_indices"]["test"])
    sub = load_dataset("digits", seed=3, n_samples=100)
    assert sub.meta["counts"] == {"total": 100, "train": 80, "val": 10, "test": 10, "rows_in_file": 1797}
    assert sub.labels["val"].shape == (10,)


def test_image_space_geometry():
    m = load_dataset("digits", n_samples=20).manifold
    g = torch.Generator().manual_seed(0)
    x = m.random_base(5, generator=g, dtype=torch.float64)
    y = m.random_base(5, generator=g, dtype=torch.float64)
    assert x.shape == (5, 1, 8, 8)
    ref = -0.5 * x.reshape(5, -1).pow(2).sum(-1) - 32 * np.log(2 * np.pi)
    torch.testing.assert_close(m.base_log_prob(x), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.dist(x, y), (x - y).reshape(5, -1).norm(dim=-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.inner(x, y, x), (x * y).reshape(5, -1).sum(-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.norm(x, y), y.reshape(5, -1).norm(dim=-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.expmap(x, m.logmap(x, y)), y, rtol=0, atol=1e-15)
    assert m.dim == 64
    assert repr(m) == "Euclidean(shape=(1, 8, 8))"


def _write(tmp_path, text, *, gz=True):
    p = tmp_path / ("d.csv.gz" if gz else "d.csv")
    p.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return p


def _row(pixels=None, label=3):
    pixels = [0] * 64 if pixels is None else pixels
    return ",".join(str(v) for v in [*pixels, label])


def test_user_files_plain_and_gzip(tmp_path):
    text = "\n".join(_row([16] * 64, k % 10) for k in range(12)) + "\n"
    for gz in (True, False):
        x, y = load_digits(path=_write(tmp_path, text, gz=gz))
        assert x.shape == (12, 1, 8, 8) and bool((x == 1).all()) and y.tolist() == [k % 10 for k in range(12)]
    ds = load_dataset("digits", path=_write(tmp_path, text))
    assert ds.meta["provenance"].startswith("user file") and ds.meta["counts"]["total"] == 12


@pytest.mark.parametrize(
    "text,match",
    [
        (_row() + "\n" + ",".join(["1"] * 64) + "\n", r"line 2: expected 65 columns"),
        (_row() + "\n" + _row([17] + [0] * 63) + "\n", r"line 2: pixel0 = 17 is out of range \[0, 16\]"),
        (_row(label=10) + "\n", r"line 1: label = 10 is out of range \[0, 9\]"),
        (_row() + "\n" + _row([0] * 5 + [3.5] + [0] * 58) + "\n", r"data row 2: pixel5 = 3.5 is not an integer"),
        (_row([0] * 63 + ["x"]) + "\n", "non-numeric value 'x'"),
        (_row([0] * 63 + ["nan"]) + "\n", "NaN"),
        ("", "without a data row"),
    ],
)
def test_corrupt_files_are_refused_with_file_and_line(tmp_path, text, match):
    p = _write(tmp_path, text)
    with pytest.raises(ValueError, match=match) as info:
        load_digits(path=p)
    assert str(p) in str(info.value)


def test_truncated_gzip_is_refused(tmp_path):
    good = gzip.compress(("\n".join(_row() for _ in range(20)) + "\n").encode())
    p = tmp_path / "trunc.csv.gz"
    p.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="not a readable gzip file"):
        load_digits(path=p)


def test_geodataset_label_validation():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="both `labels` and `num_classes`"):
        GeoDataset("x", Euclidean(2), x, x, x, labels={"train": torch.zeros(4, dtype=torch.long)})
    bad = {k: torch.zeros(3, dtype=torch.long) for k in ("train", "val", "test")}
    with pytest.raises(ValueError, match=r"labels\['train'\] must be an int64 tensor of shape \(4,\)"):
        GeoDataset("x", Euclidean(2), x, x, x, labels=bad, num_classes=2)
