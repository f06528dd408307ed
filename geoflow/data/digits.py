"""The 8x8 handwritten digits (scikit-learn's ``load_digits`` file), shipped with geoflow.

``files/digits.csv.gz`` is a byte-for-byte copy of ``sklearn/datasets/data/digits.csv.gz``
(scikit-learn 1.9.1): 1797 rows, no header, 64 pixel intensities (integers 0..16, row-major
8x8) then the class label 0..9 (Alpaydin & Kaynak 1998, UCI *Optical Recognition of
Handwritten Digits*).  Provenance, licence and sha256 in ``files/PROVENANCE.md``.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Optional

import torch

from manifolds import Euclidean
from ._parsing import Column, PathLike, parse_table, read_bytes
from .real import _check_dtype, _FileSpec

__all__ = ["load_digits", "DIGITS_SHAPE", "DIGITS_CLASSES"]

#: Point shape of one digit image (channels, height, width).
DIGITS_SHAPE: tuple[int, int, int] = (1, 8, 8)
#: Class labels of the digits set.
DIGITS_CLASSES: tuple[int, ...] = tuple(range(10))
#: Largest pixel intensity in the file (pixels are integers 0..16).
_MAX_PIXEL = 16

_DIGITS = _FileSpec(
    file="digits.csv.gz",
    rows=1797,
    sha256="09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22",
    provenance=(
        "UCI Optical Recognition of Handwritten Digits (Alpaydin & Kaynak 1998), test-set portion; "
        "file from PyPI scikit-learn 1.9.1 sklearn/datasets/data/digits.csv.gz (behind sklearn.datasets.load_digits)"
    ),
    license="scikit-learn BSD-3-Clause; UCI lists the dataset as CC BY 4.0",
)

_COLUMNS = tuple(Column(f"pixel{i}", low=0.0, high=float(_MAX_PIXEL)) for i in range(64)) + (
    Column("label", low=0.0, high=float(len(DIGITS_CLASSES) - 1)),
)

_UNITS = "pixel intensities v in 0..16 scaled to [-1, 1] as x = v / 8 - 1; images (1, 8, 8), row-major"


def _decompress(data: bytes, source: str) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data  # a plain (uncompressed) CSV given by `path`
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{source}: not a readable gzip file ({type(exc).__name__}: {exc})") from None


def _read_digits(path: Optional[PathLike]) -> tuple[torch.Tensor, torch.Tensor, str, str]:
    """(pixels (rows, 64) float64 in 0..16, labels (rows,) int64, source, sha256)."""
    raw, source, digest = read_bytes(_DIGITS.file, path, _DIGITS.sha256)
    values, _ = parse_table(_decompress(raw, source), source=source, sep=",", columns=_COLUMNS)
    frac = values != values.round()
    if bool(frac.any()):
        row, col = (int(i) for i in frac.nonzero()[0])
        raise ValueError(
            f"{source}: data row {row + 1}: {_COLUMNS[col].name} = {float(values[row, col])!r} is not an integer "
            "(pixels are integers 0..16, labels integers 0..9)"
        )
    return values[:, :64], values[:, 64].long(), source, digest


def _pixels_to_images(pixels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (pixels / (_MAX_PIXEL / 2) - 1).to(dtype).reshape(-1, *DIGITS_SHAPE)


def load_digits(
    *, path: Optional[PathLike] = None, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load the 8x8 digits as images in [-1, 1] with their labels.

    .. math:: x = v / 8 - 1, \\qquad v \\in \\{0, \\dots, 16\\}

    Args:
        path: read this file (same format: 65 comma-separated integer columns, gzip-compressed
            or plain) instead of the packaged one.
        dtype: floating dtype of the images.

    Returns:
        ``(images, labels)``: images of shape ``(rows, 1, 8, 8)`` and int64 labels ``(rows,)``
        in 0..9, in file order.

    Raises:
        ValueError: a malformed file (the message names the file and the problem: not gzip,
            column count, non-numeric or non-integer value, pixel outside 0..16, label outside 0..9).
        RuntimeError: the packaged file is damaged (sha256 mismatch).
    """
    dtype = _check_dtype(dtype)
    pixels, labels, _, _ = _read_digits(path)
    return _pixels_to_images(pixels, dtype), labels


def _digits_dataset(path: Optional[PathLike], dtype: torch.dtype):
    """(images, labels, manifold, meta) for :func:`geoflow.data.load_dataset`."""
    pixels, labels, source, digest = _read_digits(path)
    meta = dict(
        provenance=_DIGITS.provenance if path is None else f"user file {source}",
        file=source, sha256=digest, license=_DIGITS.license if path is None else None,
        units=_UNITS, classes=DIGITS_CLASSES,
    )
    return _pixels_to_images(pixels, dtype), labels, Euclidean(shape=DIGITS_SHAPE), meta
