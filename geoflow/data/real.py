"""Real datasets shipped with geoflow: earth-science events on S^2 and RNA torsions on T^7.

The files live in ``geoflow/data/files/`` (byte-for-byte copies; provenance, licences and
sha256 in ``files/PROVENANCE.md``). Every loader also takes an explicit ``path`` so that a
user's own file in the same format can be read (and validated) the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from manifolds._math import wrap_angle

from ._parsing import Column, PathLike, parse_table, read_bytes

__all__ = ["EARTH_DATASETS", "RNA_ANGLES", "lat_lon_to_sphere", "load_earth", "load_rna"]


@dataclass(frozen=True)
class _FileSpec:
    file: str
    rows: int
    sha256: str
    provenance: str
    license: str


_EARTH_SOURCE = "oxcsml/riemannian-score-sde@b35b739464ca8264e418e400301f5f45cb7a16b3 data/{file}"
_EARTH_PAPER = "Mathieu & Nickel, Riemannian Continuous Normalizing Flows, NeurIPS 2020"
_EARTH_LICENSE = (
    "source repository has no licence file; underlying data are US-government public data "
    "(NOAA, NASA); the Dartmouth Flood Observatory asks for citation"
)

_EARTH: dict[str, _FileSpec] = {
    name: _FileSpec(
        file=file,
        rows=rows,
        sha256=sha,
        provenance=f"{provider}; file from {_EARTH_SOURCE.format(file=file)}; {_EARTH_PAPER}",
        license=_EARTH_LICENSE,
    )
    for name, file, rows, sha, provider in [
        ("volcano", "volerup.csv", 827,
         "f7bbaf32a412f5fe82350f48e0c55100be260803969c16557343f687fd0593fc",
         "NOAA NGDC/NCEI Significant Volcanic Eruptions Database"),
        ("earthquake", "quakes_all.csv", 6120,
         "3e5e1a10fb2faf1899106264289334037d039f00f5265d13dad388a93d8ff2f7",
         "NOAA NGDC/NCEI Significant Earthquake Database (events without lat/lon removed)"),
        ("flood", "flood.csv", 4875,
         "ffb1e3182c3053afcdeceec4727c262a29da10255d20747c08144da5b0963486",
         "Dartmouth Flood Observatory, Global Archive of Large Flood Events"),
        ("fire", "fire.csv", 12809,
         "c5c6c9490b1d8c58ba9eb78d9e2f82d1c1e62694ca5cff917c54600d3d83f459",
         "NASA EOSDIS FIRMS active-fire data"),
    ]
}

_RNA = _FileSpec(
    file="rna.tsv",
    rows=9478,
    sha256="189183ca25bd45c8a7578d3c1cd8a555b5139bb1ab0ac1a0bd25672be19badf7",
    provenance=(
        "RNA torsions of 113 PDB structures from Murray et al., PNAS 2003; file from "
        "vislearn/FFF@02db8ec7e1a8cf87bd311893e1a24f4b0eb646d8 fff/data/raw_data/torus/rna.tsv; "
        "Huang et al., Riemannian Diffusion Models, NeurIPS 2022"
    ),
    license="MIT (vislearn/FFF)",
)

#: Names of the earth-science sets accepted by :func:`load_earth`.
EARTH_DATASETS: tuple[str, ...] = tuple(_EARTH)
#: The seven torsion angles of ``rna.tsv``, in column order.
RNA_ANGLES: tuple[str, ...] = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "chi")

_LAT_LON = (
    Column("lat", low=-90.0, high=90.0, unit="degrees"),
    Column("lon", low=-180.0, high=180.0, unit="degrees"),
)
_RNA_COLUMNS = (Column("source", numeric=False), Column("base", numeric=False)) + tuple(
    Column(a, low=-180.0, high=180.0, unit="degrees") for a in RNA_ANGLES
)


def _check_dtype(dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"`dtype` must be a floating torch.dtype, got {dtype!r}")
    return dtype


def lat_lon_to_sphere(lat_lon: torch.Tensor, *, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Points on the unit sphere S^2 from latitude/longitude in degrees.

    .. math:: x = (\\cos\\phi \\cos\\lambda,\\ \\cos\\phi \\sin\\lambda,\\ \\sin\\phi)

    with latitude phi and longitude lambda converted to radians. The trigonometry runs in
    float64, then the result is cast to ``dtype`` (default: ``lat_lon``'s dtype).

    Shapes: ``lat_lon`` ``(*batch, 2)`` (lat, lon) -> ``(*batch, 3)``.
    """
    if not isinstance(lat_lon, torch.Tensor) or lat_lon.shape[-1:] != (2,):
        raise ValueError(f"`lat_lon` must be a tensor of shape (..., 2), got {getattr(lat_lon, 'shape', lat_lon)!r}")
    out_dtype = _check_dtype(dtype if dtype is not None else lat_lon.dtype)
    rad = torch.deg2rad(lat_lon.to(torch.float64))
    lat, lon = rad[..., 0], rad[..., 1]
    x = torch.stack((lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()), dim=-1)
    return x.to(out_dtype)


def _earth_spec(name: str) -> _FileSpec:
    if name not in _EARTH:
        raise ValueError(f"unknown earth dataset {name!r}; valid names: {', '.join(EARTH_DATASETS)}")
    return _EARTH[name]


def _read_earth(name: str, path: Optional[PathLike]) -> tuple[torch.Tensor, str, str]:
    spec = _earth_spec(name)
    data, source, digest = read_bytes(spec.file, path, spec.sha256)
    lat_lon, _ = parse_table(data, source=source, sep=",", columns=_LAT_LON)
    return lat_lon, source, digest


def load_earth(name: str, *, path: Optional[PathLike] = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Load an earth-science event set as points on ``manifolds.Sphere(2)``.

    The files hold (latitude, longitude) in decimal degrees, comma-separated, with optional
    ``#`` comment lines and an optional non-numeric header (Mathieu & Nickel, *Riemannian
    Continuous Normalizing Flows*, NeurIPS 2020). Points are
    x = (cos lat cos lon, cos lat sin lon, sin lat) (see :func:`lat_lon_to_sphere`).

    Args:
        name: ``"volcano"`` (827 rows), ``"earthquake"`` (6120), ``"flood"`` (4875) or
            ``"fire"`` (12809).
        path: read this file instead of the packaged one (same format).
        dtype: floating dtype of the result.

    Returns:
        Points of shape ``(rows, 3)``, in file order.

    Raises:
        ValueError: unknown ``name``, or a malformed file (the message names the file, the
            line and the problem: column count, non-numeric value, NaN/inf, lat outside
            [-90, 90] or lon outside [-180, 180], no data rows).
    """
    dtype = _check_dtype(dtype)
    lat_lon, _, _ = _read_earth(name, path)
    return lat_lon_to_sphere(lat_lon, dtype=dtype)


def _read_rna(path: Optional[PathLike]) -> tuple[torch.Tensor, dict[str, tuple[str, ...]], str, str]:
    data, source, digest = read_bytes(_RNA.file, path, _RNA.sha256)
    degrees, strings = parse_table(data, source=source, sep="\t", columns=_RNA_COLUMNS)
    return degrees, strings, source, digest


def _degrees_to_torus(degrees: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # wrap once in float64 and once more after the cast, so the stored angle is in the
    # target dtype's [-pi, pi) (180 degrees -> -pi).
    return wrap_angle(wrap_angle(torch.deg2rad(degrees)).to(dtype))


def load_rna(
    *, path: Optional[PathLike] = None, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, dict[str, tuple[str, ...]]]:
    """Load the RNA torsion-angle set as points on ``manifolds.FlatTorus(7)``.

    ``rna.tsv`` has 9478 tab-separated rows ``source, base, alpha, beta, gamma, delta,
    epsilon, zeta, chi`` with the angles in degrees (Huang et al., *Riemannian Diffusion
    Models*, NeurIPS 2022). Angles are converted to radians and wrapped to [-pi, pi):
    theta = wrap(pi * degrees / 180).

    Args:
        path: read this file instead of the packaged one (same format; ``#`` comments and
            a non-numeric header line are allowed).
        dtype: floating dtype of the angles.

    Returns:
        ``(angles, meta)``: angles of shape ``(rows, 7)`` in the column order of
        :data:`RNA_ANGLES`, and ``meta = {"source": (...), "base": (...)}`` with one PDB id
        and one base letter per row, in file order.

    Raises:
        ValueError: a malformed file (the message names the file, the line and the problem:
            column count, non-numeric or empty value, NaN/inf, angle outside [-180, 180]
            degrees, no data rows).
    """
    dtype = _check_dtype(dtype)
    degrees, strings, _, _ = _read_rna(path)
    return _degrees_to_torus(degrees, dtype), {"source": strings["source"], "base": strings["base"]}

