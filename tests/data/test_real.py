"""The shipped earth / RNA files: integrity, row counts, embedding, and strict parsing of corrupt files."""

import hashlib
import math
import re
from importlib import resources

import numpy as np
import pytest
import torch

from geoflow.data import EARTH_DATASETS, RNA_ANGLES, lat_lon_to_sphere, load_dataset, load_earth, load_rna
from geoflow.data import _parsing
from manifolds.sphere import Sphere
from manifolds.torus import FlatTorus

FILES = resources.files("geoflow.data").joinpath("files")
ROWS = {"volcano": 827, "earthquake": 6120, "flood": 4875, "fire": 12809}
FILE_OF = {"volcano": "volerup.csv", "earthquake": "quakes_all.csv", "flood": "flood.csv", "fire": "fire.csv"}


def _provenance_table():
    """{file: (rows, bytes, sha256)} read from the table at the top of PROVENANCE.md."""
    text = FILES.joinpath("PROVENANCE.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `\w+` \| `([\w.]+)` \| (\d+) \| (\d+) \| `([0-9a-f]{64})` \|$", text, flags=re.M)
    return {f: (int(r), int(b), s) for f, r, b, s in rows}


# ------------------------------------------------------------------ integrity
def test_packaged_files_match_provenance_table():
    table = _provenance_table()
    assert set(table) == {"volerup.csv", "quakes_all.csv", "flood.csv", "fire.csv", "rna.tsv", "digits.csv.gz"}
    for name, (rows, size, sha) in table.items():
        data = FILES.joinpath(name).read_bytes()
        assert len(data) == size, name
        assert hashlib.sha256(data).hexdigest() == sha, name
    for name, file in FILE_OF.items():
        assert table[file][0] == ROWS[name]
    assert table["rna.tsv"][0] == 9478


def test_damaged_packaged_file_is_refused():
    with pytest.raises(RuntimeError, match="damaged"):
        _parsing.read_bytes("volerup.csv", None, "0" * 64)


# ------------------------------------------------------------------ earth
@pytest.mark.parametrize("name", EARTH_DATASETS)
def test_earth_rows_and_points_against_numpy_reference(name):
    x = load_earth(name, dtype=torch.float64)
    assert x.shape == (ROWS[name], 3) and x.dtype == torch.float64
    Sphere(2).check_point(x)
    # independent reference: numpy's parser and the embedding written out by hand
    with FILES.joinpath(FILE_OF[name]).open("r", encoding="utf-8") as fh:
        lines = [ln for ln in fh.read().splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines[0][0].isdigit() and lines[0][0] != "-":
        lines = lines[1:]
    ll = np.loadtxt(lines, delimiter=",")
    lat, lon = np.deg2rad(ll[:, 0]), np.deg2rad(ll[:, 1])
    ref = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
    np.testing.assert_allclose(x.numpy(), ref, rtol=0, atol=1e-14)


def test_earth_float32_default_and_known_first_row():
    x = load_earth("volcano")
    assert x.dtype == torch.float32
    Sphere(2).check_point(x)
    lat, lon = math.radians(-30.2), math.radians(-178.47)  # first data row of volerup.csv
    expected = [math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)]
    torch.testing.assert_close(x[0], torch.tensor(expected), rtol=0, atol=1e-7)


def test_lat_lon_to_sphere_poles_and_date_line():
    ll = torch.tensor([[90.0, 0.0], [-90.0, 123.0], [0.0, 180.0], [0.0, -180.0], [0.0, 90.0]], dtype=torch.float64)
    x = lat_lon_to_sphere(ll)
    ref = torch.tensor([[0, 0, 1], [0, 0, -1], [-1, 0, 0], [-1, 0, 0], [0, 1, 0]], dtype=torch.float64)
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        lat_lon_to_sphere(torch.zeros(3, 3))


def test_unknown_earth_name_and_bad_dtype():
    with pytest.raises(ValueError, match="volcano, earthquake, flood, fire"):
        load_earth("volcanoes")
    with pytest.raises(TypeError, match="dtype"):
        load_earth("volcano", dtype=torch.int64)


# ------------------------------------------------------------------ rna
def test_rna_rows_angles_and_metadata():
    theta, meta = load_rna(dtype=torch.float64)
    assert theta.shape == (9478, 7)
    FlatTorus(7).check_point(theta)
    assert float(theta.min()) >= -math.pi and float(theta.max()) < math.pi
    assert len(meta["source"]) == len(meta["base"]) == 9478
    assert set(meta["base"]) == {"A", "C", "G", "U"}
    assert len(set(meta["source"])) == 113
    # independent reference: split the tab-separated text by hand
    rows = FILES.joinpath("rna.tsv").read_text(encoding="utf-8").splitlines()
    deg = np.array([[float(v) for v in r.split("\t")[2:]] for r in rows])
    ref = np.remainder(np.deg2rad(deg) + np.pi, 2 * np.pi) - np.pi
    np.testing.assert_allclose(theta.numpy(), ref, rtol=0, atol=1e-14)
    assert meta["source"][0] == rows[0].split("\t")[0] and meta["base"][-1] == rows[-1].split("\t")[1]
    assert RNA_ANGLES == ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "chi")
    theta32, _ = load_rna()
    assert theta32.dtype == torch.float32
    FlatTorus(7).check_point(theta32)


def test_rna_180_degrees_wraps_to_minus_pi(tmp_path):
    p = tmp_path / "r.tsv"
    p.write_text("s\tbase\talpha\tbeta\tgamma\tdelta\tepsilon\tzeta\tchi\n1abc\tA\t180\t-180\t0\t90\t-90\t179.5\t1\n")
    theta, meta = load_rna(path=p, dtype=torch.float64)
    torch.testing.assert_close(theta[0, :2], torch.tensor([-math.pi, -math.pi], dtype=torch.float64))
    assert theta[0, 3] == pytest.approx(math.pi / 2)
    assert meta == {"source": ("1abc",), "base": ("A",)}
    theta32, _ = load_rna(path=p)
    assert float(theta32.max()) < math.pi and float(theta32[0, 0]) == pytest.approx(-math.pi)


# ------------------------------------------------------------------ robust parsing
def test_parser_accepts_crlf_bom_comments_header_and_no_final_newline(tmp_path):
    p = tmp_path / "ok.csv"
    p.write_bytes(b"\xef\xbb\xbf# comment\r\n  # indented comment\r\nLAT , LON\r\n10,20\r\n\r\n# mid comment\r\n-5.5,-170")
    x = load_earth("flood", path=p, dtype=torch.float64)
    torch.testing.assert_close(x, lat_lon_to_sphere(torch.tensor([[10.0, 20.0], [-5.5, -170.0]], dtype=torch.float64)))
    q = tmp_path / "noheader.csv"
    q.write_text("1,2\n3,4\n\n")  # no header, trailing blank lines
    assert load_earth("fire", path=q).shape == (2, 3)


EARTH_CORRUPT = [
    # (content, line number, regex for what is wrong)
    ("# c\nlat,lon\n1,2\n3,4,5\n", 4, r"expected 2 columns .* got 3"),
    ("1,2\n3\n", 2, r"expected 2 columns .* got 1"),
    ("lat;lon\n1;2\n", 1, r"expected 2 columns .* got 1"),
    ("lat,lon\n1,2\n3,abc\n", 3, r"non-numeric value 'abc' in column 2 \(lon\)"),
    ("1,2\n,4\n", 2, r"non-numeric value '' in column 1 \(lat\)"),
    ("1,2\nnan,4\n", 2, r"NaN in column 1 \(lat\)"),
    ("1,2\n3,NaN", 2, r"NaN in column 2 \(lon\)"),
    ("1,2\n3,-inf\n", 2, r"infinite value in column 2"),
    ("1,2\r\n95,4\r\n", 2, r"lat = 95 is out of range \[-90, 90\] degrees"),
    ("# x\n1,2\n3,180.5", 3, r"lon = 180.5 is out of range \[-180, 180\] degrees"),
    ("", 1, r"without a data row.*empty"),
    ("# only a comment\nlat,lon\n", 2, r"without a data row"),
    ("lat,lon\nfoo,bar\n", 2, r"non-numeric value 'foo'"),
]


@pytest.mark.parametrize("content, line, what", EARTH_CORRUPT, ids=[f"case{i}" for i in range(len(EARTH_CORRUPT))])
def test_corrupt_earth_file_names_file_line_and_problem(tmp_path, content, line, what):
    p = tmp_path / "bad.csv"
    p.write_bytes(content.encode())
    with pytest.raises(ValueError) as info:
        load_earth("volcano", path=p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: line {line}: "), msg
    assert re.search(what, msg), msg
    with pytest.raises(ValueError, match=re.escape(f"{p}: line {line}: ")):
        load_dataset("volcano", path=p)


_RNA_OK = "1abc\tG\t-69.1\t173.9\t51.4\t80.8\t-62.9\t10.9\t-167.6"
RNA_CORRUPT = [
    (f"{_RNA_OK}\n1abc\tG\t1\t2\t3\t4\t5\t6\n", 2, r"expected 9 columns .* separated by tabs, got 8"),
    (f"{_RNA_OK}\n{_RNA_OK.replace('173.9', 'x')}\n", 2, r"non-numeric value 'x' in column 4 \(beta\)"),
    (f"{_RNA_OK}\n{_RNA_OK.replace('-167.6', 'nan')}\n", 2, r"NaN in column 9 \(chi\)"),
    (f"# c\n{_RNA_OK}\n{_RNA_OK.replace('80.8', '200')}", 3, r"delta = 200 is out of range \[-180, 180\] degrees"),
    (f"{_RNA_OK}\n{_RNA_OK.replace('G', '')}\n", 2, r"empty value in column 2 \(base\)"),
    ("# nothing\n", 1, r"without a data row"),
]


@pytest.mark.parametrize("content, line, what", RNA_CORRUPT, ids=[f"case{i}" for i in range(len(RNA_CORRUPT))])
def test_corrupt_rna_file_names_file_line_and_problem(tmp_path, content, line, what):
    p = tmp_path / "bad.tsv"
    p.write_text(content)
    with pytest.raises(ValueError) as info:
        load_rna(path=p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: line {line}: "), msg
    assert re.search(what, msg), msg


def test_non_utf8_file_is_refused(tmp_path):
    p = tmp_path / "bin.csv"
    p.write_bytes(b"1,2\n\xff\xfe,3\n")
    with pytest.raises(ValueError, match=re.escape(str(p)) + ".*not a UTF-8"):
        load_earth("fire", path=p)
