"""Strict parsing of the small delimited text tables geoflow ships (private helpers).

Every problem raises ``ValueError("<file>: line <n>: <what is wrong>")``, where the line
number is 1-based and counts every physical line of the file (comments included).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from importlib import resources
from typing import Optional, Sequence, Union

import torch

__all__: list[str] = []  # private module

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Column:
    """One column of a table: its name and, for numeric columns, the allowed closed range."""

    name: str
    numeric: bool = True
    low: float = -math.inf
    high: float = math.inf
    unit: str = ""


def read_bytes(package_file: str, path: Optional[PathLike], expected_sha256: Optional[str]) -> tuple[bytes, str, str]:
    """Bytes of ``path`` if given, else of the packaged ``files/<package_file>``.

    Returns ``(data, source, sha256)`` where ``source`` names the file in error messages.
    A packaged file whose sha256 differs from ``expected_sha256`` raises ``RuntimeError``
    (a damaged installation); files given by ``path`` are not checked.
    """
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"`path` must be a str or os.PathLike, got {type(path).__name__} {path!r}")
        path = os.fspath(path)
        with open(path, "rb") as fh:
            data = fh.read()
        return data, path, hashlib.sha256(data).hexdigest()
    ref = resources.files(__package__).joinpath("files").joinpath(package_file)
    data = ref.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise RuntimeError(
            f"{ref}: the packaged data file is damaged: sha256 {digest} != expected {expected_sha256} "
            "(see geoflow/data/files/PROVENANCE.md); reinstall geoflow"
        )
    return data, str(ref), digest


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _show(line: str, width: int = 80) -> str:
    return repr(line if len(line) <= width else line[: width - 3] + "...")


def parse_table(
    data: bytes, *, source: str, sep: str, columns: Sequence[Column]
) -> tuple[torch.Tensor, dict[str, tuple[str, ...]]]:
    """Parse a delimited table into a float64 tensor of its numeric columns.

    Rules: lines whose first non-blank character is ``#`` and blank lines are skipped; the
    first remaining line is a header (and skipped) when none of its numeric columns holds a
    number; ``\\n`` and ``\\r\\n`` line ends both work, with or without a final newline.

    Args:
        data: the raw file content (UTF-8, an optional BOM is ignored).
        source: the file name used in error messages.
        sep: the field separator (``","`` or ``"\\t"``).
        columns: the expected columns, in order.

    Returns:
        ``(values, strings)``: ``values`` of shape ``(rows, n_numeric)`` (float64) and a dict
        mapping each non-numeric column name to a tuple of its values.

    Raises:
        ValueError: naming ``source``, the line number and the problem (wrong number of
            columns, a non-numeric value, NaN or inf, a value outside its range, an empty
            text field, or no data rows at all).
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source}: not a UTF-8 text file ({exc})") from None
    n_cols = len(columns)
    numeric_idx = [i for i, c in enumerate(columns) if c.numeric]
    text_idx = [i for i, c in enumerate(columns) if not c.numeric]
    sep_name = {"\t": "tabs", ",": "commas"}.get(sep, repr(sep))
    names = ", ".join(c.name for c in columns)
    values: list[list[float]] = []
    strings: list[list[str]] = [[] for _ in text_idx]
    seen_content = False
    lines = text.split("\n")
    for lineno, raw in enumerate(lines, start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(sep)]
        if len(fields) != n_cols:
            raise ValueError(
                f"{source}: line {lineno}: expected {n_cols} columns ({names}) separated by {sep_name}, "
                f"got {len(fields)}: {_show(line)}"
            )
        if not seen_content:
            seen_content = True
            if not any(_is_number(fields[i]) for i in numeric_idx):
                continue  # a header line, e.g. "Latitude,Longitude"
        row = []
        for i in numeric_idx:
            col, field = columns[i], fields[i]
            try:
                v = float(field)
            except ValueError:
                raise ValueError(
                    f"{source}: line {lineno}: non-numeric value {field!r} in column {i + 1} ({col.name}): {_show(line)}"
                ) from None
            if math.isnan(v):
                raise ValueError(f"{source}: line {lineno}: NaN in column {i + 1} ({col.name}): {_show(line)}")
            if math.isinf(v):
                raise ValueError(f"{source}: line {lineno}: infinite value in column {i + 1} ({col.name}): {_show(line)}")
            if not col.low <= v <= col.high:
                unit = f" {col.unit}" if col.unit else ""
                raise ValueError(
                    f"{source}: line {lineno}: {col.name} = {field} is out of range [{col.low:g}, {col.high:g}]{unit} "
                    f"(column {i + 1}): {_show(line)}"
                )
            row.append(v)
        for k, i in enumerate(text_idx):
            if not fields[i]:
                raise ValueError(f"{source}: line {lineno}: empty value in column {i + 1} ({columns[i].name}): {_show(line)}")
            strings[k].append(fields[i])
        values.append(row)
    if not values:
        last = max(len(lines) - (1 if lines and lines[-1] == "" else 0), 1)
        raise ValueError(
            f"{source}: line {last}: end of file reached without a data row; the file is empty or holds only "
            f"'#' comments and a header (expected rows of {names} separated by {sep_name})"
        )
    out = torch.tensor(values, dtype=torch.float64).reshape(len(values), len(numeric_idx))
    return out, {columns[i].name: tuple(s) for i, s in zip(text_idx, strings)}
