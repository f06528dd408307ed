"""load_dataset / GeoDataset: names, manifolds, seeded 80/10/10 splits, metadata and argument checks."""

import math

import pytest
import torch

import geoflow.data as gd
from geoflow.data import GeoDataset, available_datasets, load_dataset, load_earth, load_rna
from manifolds.euclidean import Euclidean
from manifolds.sphere import Sphere
from manifolds.torus import FlatTorus

REAL_ROWS = {"volcano": 827, "earthquake": 6120, "flood": 4875, "fire": 12809, "rna": 9478}
SYNTHETIC = ("vmf_mixture", "wrapped_normal_torus", "checkerboard_torus", "moons", "eight_gaussians", "checkerboard")
MANIFOLD = {
    "volcano": (Sphere, 3), "earthquake": (Sphere, 3), "flood": (Sphere, 3), "fire": (Sphere, 3),
    "rna": (FlatTorus, 7), "vmf_mixture": (Sphere, 3), "wrapped_normal_torus": (FlatTorus, 2),
    "checkerboard_torus": (FlatTorus, 2), "moons": (Euclidean, 2), "eight_gaussians": (Euclidean, 2),
    "checkerboard": (Euclidean, 2),
}


def _load(name, **kw):
    if name in SYNTHETIC:
        kw.setdefault("n_samples", 2000)
    return load_dataset(name, **kw)


def test_public_names_exist():
    for n in gd.__all__:
        assert hasattr(gd, n), n
    assert {"GeoDataset", "load_dataset", "available_datasets", "load_earth", "load_rna"} <= set(gd.__all__)


def test_available_datasets():
    names = available_datasets()
    meshes = [f"{m}_k{k}" for m in ("bunny", "spot") for k in (10, 50, 100)]
    assert names == list(REAL_ROWS) + ["digits"] + list(SYNTHETIC) + ["dw4", "lj13", "lj55"] + meshes
    names.append("x")  # a copy: the registry is not changed
    assert "x" not in available_datasets()


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        load_dataset("volcanos")
    msg = str(info.value)
    assert "'volcanos'" in msg and all(n in msg for n in available_datasets())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(MANIFOLD))
def test_points_on_manifold_and_split_sizes(name, dtype):
    ds = _load(name, dtype=dtype)
    assert isinstance(ds, GeoDataset) and ds.name == name
    cls, d = MANIFOLD[name]
    assert isinstance(ds.manifold, cls) and tuple(ds.manifold.point_shape) == (d,)
    n = REAL_ROWS.get(name, 2000)
    counts = ds.meta["counts"]
    assert counts["total"] == n
    assert (counts["val"], counts["test"]) == (n // 10, n // 10)
    assert counts["train"] == n - 2 * (n // 10)
    for split in ("train", "val", "test"):
        pts = getattr(ds, split)
        assert pts.shape == (counts[split], d) and pts.dtype == dtype
        ds.manifold.check_point(pts)
    idx = ds.meta["split_indices"]
    allidx = torch.cat([idx["train"], idx["val"], idx["test"]])
    assert torch.equal(allidx.sort().values, torch.arange(n))  # disjoint, and together all rows
    assert isinstance(ds.meta["provenance"], str) and "\n" not in ds.meta["provenance"]
    assert isinstance(ds.meta["units"], str) and ds.meta["seed"] == 0
    if name in SYNTHETIC:
        lp = ds.log_prob(ds.test)
        assert lp.shape == (counts["test"],) and lp.dtype == dtype and bool(torch.isfinite(lp).all())
    else:
        assert ds.log_prob is None and ds.meta["counts"]["rows_in_file"] == n


def test_split_rows_are_the_file_rows():
    ds = load_dataset("flood", dtype=torch.float64, seed=3)
    x = load_earth("flood", dtype=torch.float64)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(ds, split), x[ds.meta["split_indices"][split]])
    rna = load_dataset("rna", seed=1)
    theta, meta = load_rna()
    tr = rna.meta["split_indices"]["train"]
    assert torch.equal(rna.train, theta[tr])
    assert rna.meta["base"] == meta["base"] and rna.meta["columns"][0] == "alpha"
    assert [rna.meta["base"][i] for i in tr[:3].tolist()] == [meta["base"][i] for i in tr[:3].tolist()]


@pytest.mark.parametrize("name", ["volcano", "vmf_mixture", "checkerboard_torus"])
def test_same_seed_same_split_other_seed_differs(name):
    a, b, c = _load(name, seed=7), _load(name, seed=7), _load(name, seed=8)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split), getattr(b, split))
        assert torch.equal(a.meta["split_indices"][split], b.meta["split_indices"][split])
    assert not torch.equal(a.meta["split_indices"]["test"], c.meta["split_indices"]["test"])
    assert not torch.equal(a.test, c.test)


def test_split_is_a_seeded_randperm():
    ds = load_dataset("volcano", seed=11)
    perm = torch.randperm(827, generator=torch.Generator().manual_seed(11))
    assert torch.equal(ds.meta["split_indices"]["train"], perm[:663])
    assert torch.equal(ds.meta["split_indices"]["test"], perm[745:])


def test_synthetic_defaults_and_n_samples():
    ds = load_dataset("wrapped_normal_torus")
    assert ds.meta["counts"] == {"total": 10000, "train": 8000, "val": 1000, "test": 1000}
    assert gd.DEFAULT_SYNTHETIC_SAMPLES == 10000
    dist = ds.meta["distribution"]
    assert ds.log_prob == dist.log_prob and ds.manifold is dist.manifold
    small = load_dataset("vmf_mixture", n_samples=55, seed=2)
    assert (small.train.shape[0], small.val.shape[0], small.test.shape[0]) == (45, 5, 5)


def test_real_subset_with_n_samples():
    ds = load_dataset("earthquake", n_samples=100, seed=4)
    assert ds.meta["counts"] == {"total": 100, "train": 80, "val": 10, "test": 10, "rows_in_file": 6120}
    idx = torch.cat(list(ds.meta["split_indices"].values()))
    assert idx.unique().numel() == 100 and int(idx.max()) < 6120
    full = load_earth("earthquake")
    assert torch.equal(ds.val, full[ds.meta["split_indices"]["val"]])
    with pytest.raises(ValueError, match="exceeds the 827 rows"):
        load_dataset("volcano", n_samples=828)


def test_packaged_metadata():
    ds = load_dataset("fire")
    assert ds.meta["sha256"] == "c5c6c9490b1d8c58ba9eb78d9e2f82d1c1e62694ca5cff917c54600d3d83f459"
    assert ds.meta["file"].endswith("fire.csv") and "FIRMS" in ds.meta["provenance"]
    assert "b35b739464ca8264e418e400301f5f45cb7a16b3" in ds.meta["provenance"]
    assert "degrees" in ds.meta["units"] and ds.meta["license"]
    rna = load_dataset("rna")
    assert "vislearn/FFF" in rna.meta["provenance"] and rna.meta["license"].startswith("MIT")
    assert "radians" in rna.meta["units"]
    assert len(rna.meta["source"]) == 9478
    assert "GeoDataset(name='fire', manifold=Sphere(n=2), train=(10249, 3)" in repr(ds)


def test_user_file_through_path(tmp_path):
    p = tmp_path / "mine.csv"
    rows = [(10.0 * math.sin(i), 170.0 * math.cos(i)) for i in range(30)]
    p.write_text("lat,lon\n" + "\n".join(f"{a},{b}" for a, b in rows))
    ds = load_dataset("volcano", path=p, dtype=torch.float64)
    assert ds.meta["counts"]["total"] == 30 and ds.meta["file"] == str(p)
    assert ds.meta["license"] is None and str(p) in ds.meta["provenance"]
    Sphere(2).check_point(ds.train)
    few = tmp_path / "few.csv"
    few.write_text("1,2\n3,4\n")
    with pytest.raises(ValueError, match="at least 10"):
        load_dataset("fire", path=few)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(name="vmf_mixture", path="x.csv"), ValueError, "synthetic"),
        (dict(name="volcano", seed=-1), ValueError, "seed"),
        (dict(name="volcano", seed=1.0), TypeError, "seed"),
        (dict(name="volcano", seed=True), TypeError, "seed"),
        (dict(name="volcano", dtype=torch.int32), TypeError, "dtype"),
        (dict(name="volcano", dtype="float32"), TypeError, "dtype"),
        (dict(name="vmf_mixture", n_samples=5), ValueError, "n_samples"),
        (dict(name="vmf_mixture", n_samples=100.0), TypeError, "n_samples"),
        (dict(name="volcano", path=3), TypeError, "path"),
        (dict(name=None), ValueError, "valid names"),
    ],
)
def test_argument_checks(kwargs, exc, match):
    name = kwargs.pop("name")
    with pytest.raises(exc, match=match):
        load_dataset(name, **kwargs)


def test_missing_user_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_dataset("rna", path=tmp_path / "nope.tsv")


@pytest.fixture
def coarse_mesh_targets(monkeypatch):
    """Mesh targets from the unrefined mesh (a 2500-vertex eigensolve instead of the 40 s refined one)."""
    import geoflow.data.datasets as datasets

    monkeypatch.setattr(datasets, "_MESH_UPSAMPLE", 0)


@pytest.mark.parametrize("name", ["bunny_k10", "spot_k100"])
def test_mesh_datasets(name, coarse_mesh_targets):
    from geoflow.data.meshes import mesh_splits
    from manifolds import Mesh

    mesh, k = name.split("_k")
    ds = load_dataset(name, seed=1, n_samples=500, dtype=torch.float64)
    assert isinstance(ds.manifold, Mesh) and ds.manifold.premetric == "biharmonic" and ds.manifold.n_eigs == 100
    assert (ds.train.shape, ds.val.shape, ds.test.shape) == ((400, 3), (50, 3), (50, 3))
    assert ds.train.dtype == torch.float64
    assert ds.meta["counts"] == {"total": 500, "train": 400, "val": 50, "test": 50}
    assert ds.meta["mesh"] == mesh and ds.meta["k"] == int(k) and ds.meta["upsample"] == 0
    assert f"k={k}" in ds.meta["provenance"] and "Chen & Lipman" in ds.meta["provenance"]
    assert ds.meta["file"] == f"{mesh}.obj" and len(ds.meta["sha256"]) == 64 and ds.meta["license"]
    ref = mesh_splits(mesh, int(k), 1, n=500, upsample=0, dtype=torch.float64)
    for got, want in zip((ds.train, ds.val, ds.test), ref):
        assert torch.equal(got, want)
    ds.manifold.check_point(ds.test)  # on the surface
    other = load_dataset(name, seed=2, n_samples=500)
    assert not torch.allclose(other.train, ds.train.float())


def test_mesh_dataset_arguments(coarse_mesh_targets, tmp_path):
    with pytest.raises(ValueError, match="only for file-based"):
        load_dataset("bunny_k10", path=tmp_path / "x.obj")
    with pytest.raises(ValueError, match="bunny_k10"):
        load_dataset("bunny_k20")  # lists the valid names
