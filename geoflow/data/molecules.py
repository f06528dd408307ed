"""QM9 molecules: the shipped subset, padded batches with atom-type channels, and valence-based stability.

* :func:`load_qm9`: 2000 QM9 molecules (DFT geometries, H C N O F, 4 to 29 atoms, explicit
  hydrogens) shipped inside the package, as lists of positions and atom types.
* :func:`pad_molecules`: a batch of molecules as dense tensors: positions ``(B, N, 3)``, one-hot
  atom types ``(B, N, 5)`` and a node mask ``(B, N)`` (the layout of EDM and EquiFM, where
  padded atoms are zero and masked out).
* :func:`bond_orders`, :func:`stability`: the bond-length rule of EDM (Hoogeboom et al. 2022,
  "Equivariant Diffusion for Molecule Generation in 3D", ICML), used by EquiFM (Song et al.
  2023) and others to score generated molecules: a pair is bonded with order 1, 2 or 3 when its
  distance is below the tabulated typical length of that bond plus a margin (10, 5 and 3 pm),
  an atom is *stable* when the bond orders at it sum to its valence (H 1, C 4, N 3, O 2, F 1),
  and a molecule is stable when all its atoms are.  On the QM9 data themselves these give
  atom stability 99.0 % and molecule stability 95.2 % in EDM's paper; the tests check the
  shipped subset against those figures.

* :func:`validity`: EDM's validity and uniqueness with RDKit (optional dependency, ``pip install
  rdkit`` or ``geoflow[chem]``): the molecule is built from its atoms and the bond orders of
  :func:`bond_orders` and is *valid* when RDKit sanitizes it; uniqueness is the fraction of
  distinct canonical SMILES (of each molecule's largest fragment) among the valid ones.  EDM
  reports 97.7 % validity for the QM9 data.

Bond lengths (pm) are the typical covalent bond lengths of organic chemistry tables (the
values EDM uses for these five elements).
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ._parsing import PathLike, read_bytes

__all__ = [
    "QM9_ELEMENTS",
    "QM9_VALENCES",
    "load_qm9",
    "pad_molecules",
    "bond_orders",
    "stability",
    "Stability",
    "validity",
    "Validity",
]

#: Atom types of QM9, in the order of the one-hot channel.
QM9_ELEMENTS: tuple[str, ...] = ("H", "C", "N", "O", "F")
#: Valence of each element: the sum of bond orders at a stable atom.
QM9_VALENCES: dict[str, int] = {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1}

_QM9_FILE = "qm9_subset2000.csv.gz"
_QM9_SHA256 = "193347efaed937ca9745a4d709800e1b83c5745c7a29b88936a6ceaf8f9beefa"
_QM9_ROWS = 2000

# Typical bond lengths in pm (single, double, triple), symmetric in the pair.
_SINGLE = {
    ("H", "H"): 74, ("H", "C"): 109, ("H", "N"): 101, ("H", "O"): 96, ("H", "F"): 92,
    ("C", "C"): 154, ("C", "N"): 147, ("C", "O"): 143, ("C", "F"): 135,
    ("N", "N"): 145, ("N", "O"): 140, ("N", "F"): 136,
    ("O", "O"): 148, ("O", "F"): 142, ("F", "F"): 142,
}  # fmt: skip
_DOUBLE = {("C", "C"): 134, ("C", "N"): 129, ("C", "O"): 120, ("N", "N"): 125, ("N", "O"): 121, ("O", "O"): 121}
_TRIPLE = {("C", "C"): 120, ("C", "N"): 116, ("C", "O"): 113, ("N", "N"): 110}
#: Margins (pm) added to the single, double and triple bond lengths.
BOND_MARGINS_PM: tuple[int, int, int] = (10, 5, 3)


def _table(lengths: dict) -> torch.Tensor:
    """Symmetric (5, 5) table of lengths in Angstrom (0 where the bond does not exist)."""
    k = len(QM9_ELEMENTS)
    t = torch.zeros(k, k, dtype=torch.float64)
    for (a, b), pm in lengths.items():
        i, j = QM9_ELEMENTS.index(a), QM9_ELEMENTS.index(b)
        t[i, j] = t[j, i] = pm / 100.0
    return t


_TABLES = [_table(_SINGLE), _table(_DOUBLE), _table(_TRIPLE)]


def load_qm9(*, path: Optional[PathLike] = None, center: bool = True, dtype: torch.dtype = torch.float32) -> dict:
    """The shipped QM9 subset: 2000 molecules with DFT geometries (Angstrom).

    The rows are a seeded random subset of QM9 (Ramakrishnan et al. 2014, Sci. Data 1:140022) as
    packaged in PyPI ``qm9pack`` 1.0.3 (``numpy.random.default_rng(0).choice(130831, 2000,
    replace=False)``, sorted; see ``files/PROVENANCE.md``); geoflow ships their ``Index``,
    ``SMILES``, ``Elements`` and ``XYZ_Ang`` columns verbatim, gzipped.

    Args:
        path: a file in the same format to read instead of the packaged one (plain or gzipped CSV
            with the columns Index, SMILES, Elements, XYZ_Ang).
        center: subtract each molecule's centroid (the CoM-free convention of EDM/EquiFM: the
            unweighted mean of the atom positions).
        dtype: floating dtype of the positions.

    Returns:
        ``{"positions": [Tensor (n_i, 3)], "types": [LongTensor (n_i,)] (indices into
        :data:`QM9_ELEMENTS`), "smiles": [str], "index": LongTensor (molecules,)}``.

    Raises:
        ValueError: a malformed file (the message names the file, the row and the problem).
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"`dtype` must be a floating torch.dtype, got {dtype!r}")
    if not isinstance(center, bool):
        raise TypeError(f"`center` must be a bool, got {center!r}")
    data, source, _ = read_bytes(_QM9_FILE, path, _QM9_SHA256 if path is None else None)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{source}: not a readable gzip file ({exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source}: not UTF-8 text ({exc})") from None
    reader = csv.DictReader(io.StringIO(text))
    need = {"Index", "SMILES", "Elements", "XYZ_Ang"}
    if reader.fieldnames is None or not need <= set(reader.fieldnames):
        raise ValueError(f"{source}: expected a CSV header with the columns {sorted(need)}, got {reader.fieldnames}")
    positions, types, smiles, index = [], [], [], []
    for row_no, row in enumerate(reader, start=2):
        where = f"{source}, line {row_no}"
        try:
            elements = ast.literal_eval(row["Elements"])
            xyz = ast.literal_eval(row["XYZ_Ang"])
            idx = int(row["Index"])
        except (ValueError, SyntaxError, TypeError) as exc:
            raise ValueError(f"{where}: cannot parse the Elements / XYZ_Ang / Index fields ({exc})") from None
        unknown = sorted(set(elements) - set(QM9_ELEMENTS)) if isinstance(elements, list) else None
        if not isinstance(elements, list) or unknown:
            raise ValueError(f"{where}: Elements must be a list of {QM9_ELEMENTS}, got {row['Elements'][:60]!r}")
        x = torch.tensor(xyz, dtype=torch.float64)
        if x.shape != (len(elements), 3):
            raise ValueError(f"{where}: XYZ_Ang has shape {tuple(x.shape)}, expected ({len(elements)}, 3) for its "
                             f"{len(elements)} elements")
        if not torch.isfinite(x).all():
            raise ValueError(f"{where}: XYZ_Ang holds NaN or inf")
        if center:
            x = x - x.mean(0, keepdim=True)
        positions.append(x.to(dtype))
        types.append(torch.tensor([QM9_ELEMENTS.index(e) for e in elements], dtype=torch.long))
        smiles.append(row["SMILES"])
        index.append(idx)
    if not positions:
        raise ValueError(f"{source}: no molecules")
    if path is None and len(positions) != _QM9_ROWS:
        raise RuntimeError(f"{source}: expected {_QM9_ROWS} molecules, got {len(positions)}; reinstall geoflow")
    return {"positions": positions, "types": types, "smiles": smiles, "index": torch.tensor(index)}


def pad_molecules(positions: Sequence[torch.Tensor], types: Sequence[torch.Tensor], max_atoms: Optional[int] = None):
    """Dense batch of molecules: ``(x (B, N, 3), h (B, N, 5) one-hot, mask (B, N) bool)``.

    Padded atoms have zero positions and zero one-hot rows and ``mask`` False.  ``N`` is
    ``max_atoms`` or the largest molecule.
    """
    if len(positions) != len(types) or not positions:
        raise ValueError(f"`positions` and `types` must be non-empty and of equal length, got {len(positions)} "
                         f"and {len(types)}")
    sizes = [p.shape[0] for p in positions]
    n = max(sizes) if max_atoms is None else max_atoms
    if n < max(sizes):
        raise ValueError(f"`max_atoms` = {max_atoms} is below the largest molecule ({max(sizes)} atoms)")
    B, k = len(positions), len(QM9_ELEMENTS)
    x = positions[0].new_zeros(B, n, 3)
    h = positions[0].new_zeros(B, n, k)
    mask = torch.zeros(B, n, dtype=torch.bool)
    for b, (p, t) in enumerate(zip(positions, types)):
        if p.shape != (t.shape[0], 3):
            raise ValueError(f"molecule {b}: positions of shape {tuple(p.shape)} do not match {t.shape[0]} types")
        x[b, : p.shape[0]] = p
        h[b, : p.shape[0]] = torch.nn.functional.one_hot(t, k).to(h.dtype)
        mask[b, : p.shape[0]] = True
    return x, h, mask


def bond_orders(positions: torch.Tensor, types: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Bond orders from distances and atom types (EDM's rule), shape ``(B, N, N)`` (or ``(N, N)``).

    order(i, j) = 1 if d_ij < l1 + 0.10 A, raised to 2 if also d_ij < l2 + 0.05 A and to 3 if
    also d_ij < l3 + 0.03 A, where l1, l2, l3 are the typical single, double and triple bond
    lengths of the pair of elements (a bond order the pair does not have is never assigned);
    0 on the diagonal and for masked atoms.

    Args:
        positions: ``(B, N, 3)`` or ``(N, 3)``, in Angstrom.
        types: ``(B, N)`` or ``(N,)`` indices into :data:`QM9_ELEMENTS`.
        mask: ``(B, N)`` bool (None: all atoms are real).
    """
    single = positions.dim() == 2
    if single:
        positions, types = positions[None], types[None]
        mask = None if mask is None else mask[None]
    if positions.dim() != 3 or positions.shape[-1] != 3 or types.shape != positions.shape[:2]:
        raise ValueError(f"expected positions (B, N, 3) and types (B, N), got {tuple(positions.shape)} and "
                         f"{tuple(types.shape)}")
    if mask is None:
        mask = torch.ones(types.shape, dtype=torch.bool, device=types.device)
    t = types.clamp(0, len(QM9_ELEMENTS) - 1)
    d = torch.cdist(positions.double(), positions.double())
    order = torch.zeros(d.shape, dtype=torch.long, device=d.device)
    for k, (table, margin) in enumerate(zip(_TABLES, BOND_MARGINS_PM)):
        length = table.to(d.device)[t[:, :, None], t[:, None, :]]
        hit = (length > 0) & (d < length + margin / 100.0)
        order = torch.where(hit & (order == k), torch.full_like(order, k + 1), order)
    pair = mask[:, :, None] & mask[:, None, :]
    eye = torch.eye(d.shape[-1], dtype=torch.bool, device=d.device)
    order = torch.where(pair & ~eye, order, torch.zeros_like(order))
    return order[0] if single else order


@dataclass
class Stability:
    """Valence-based scores of a batch of molecules.

    Attributes:
        atom_stable: fraction of real atoms whose bond orders sum to their valence.
        molecule_stable: fraction of molecules whose atoms are all stable.
        per_molecule: bool tensor ``(B,)``.
        n_atoms, n_molecules: counts the fractions are over.
    """

    atom_stable: float
    molecule_stable: float
    per_molecule: torch.Tensor
    n_atoms: int
    n_molecules: int


def stability(positions: torch.Tensor, types: torch.Tensor, mask: Optional[torch.Tensor] = None) -> Stability:
    """Atom and molecule stability (EDM, Hoogeboom et al. 2022) of a padded batch.

    Shapes: positions ``(B, N, 3)`` (Angstrom), types ``(B, N)``, mask ``(B, N)``.
    """
    if mask is None:
        mask = torch.ones(types.shape, dtype=torch.bool, device=types.device)
    order = bond_orders(positions, types, mask)
    valence = torch.tensor([QM9_VALENCES[e] for e in QM9_ELEMENTS], device=types.device)[types.clamp(0, 4)]
    ok = (order.sum(-1) == valence) | ~mask
    per_mol = ok.all(-1)
    n_atoms = int(mask.sum())
    return Stability(
        atom_stable=float((ok & mask).sum()) / max(n_atoms, 1),
        molecule_stable=float(per_mol.double().mean()),
        per_molecule=per_mol,
        n_atoms=n_atoms,
        n_molecules=int(per_mol.numel()),
    )


@dataclass
class Validity:
    """RDKit validity of a batch of molecules (EDM's protocol).

    Attributes:
        valid: fraction of molecules that RDKit sanitizes.
        unique: fraction of distinct canonical SMILES (largest fragment) among the valid ones.
        smiles: the canonical SMILES of each valid molecule's largest fragment (None if invalid).
        n_molecules: count the fractions are over.
    """

    valid: float
    unique: float
    smiles: list
    n_molecules: int


def _rdkit():
    try:
        from rdkit import Chem, RDLogger
    except ImportError:  # pragma: no cover - rdkit is in the dev and chem extras
        raise ImportError("validity needs RDKit: pip install rdkit (or geoflow[chem])") from None
    RDLogger.DisableLog("rdApp.*")  # sanitization failures are the measurement, not news
    return Chem


def validity(positions: torch.Tensor, types: torch.Tensor, mask: Optional[torch.Tensor] = None) -> Validity:
    """EDM's validity and uniqueness of a padded batch, with RDKit (Hoogeboom et al. 2022).

    Each molecule becomes an RDKit molecule with its atoms and the bonds of :func:`bond_orders`
    (orders 1-3); it is valid when ``Chem.SanitizeMol`` accepts it (valences, aromaticity),
    and its SMILES is that of its largest fragment.

    Shapes: positions ``(B, N, 3)`` (Angstrom), types ``(B, N)``, mask ``(B, N)``.
    """
    Chem = _rdkit()
    if positions.dim() != 3 or positions.shape[-1] != 3 or types.shape != positions.shape[:2]:
        raise ValueError(f"expected positions (B, N, 3) and types (B, N), got {tuple(positions.shape)} and "
                         f"{tuple(types.shape)}")
    if mask is None:
        mask = torch.ones(types.shape, dtype=torch.bool, device=types.device)
    order = bond_orders(positions, types, mask).cpu()
    types, mask = types.cpu(), mask.cpu()
    kinds = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    smiles = []
    for b in range(types.shape[0]):
        idx = mask[b].nonzero().flatten().tolist()
        mol = Chem.RWMol()
        for i in idx:
            mol.AddAtom(Chem.Atom(QM9_ELEMENTS[int(types[b, i])]))
        pos = {i: k for k, i in enumerate(idx)}
        for i in idx:
            for j in idx:
                if i < j and int(order[b, i, j]) > 0:
                    mol.AddBond(pos[i], pos[j], kinds[int(order[b, i, j])])
        try:
            Chem.SanitizeMol(mol)
        except Exception:  # RDKit raises several kinds (valence, kekulization): all mean invalid
            smiles.append(None)
            continue
        frags = Chem.rdmolops.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
        largest = max(frags, key=lambda m: m.GetNumAtoms())
        smiles.append(Chem.MolToSmiles(Chem.RemoveHs(largest, sanitize=False)))
    good = [s for s in smiles if s is not None]
    n = len(smiles)
    return Validity(valid=len(good) / max(n, 1), unique=len(set(good)) / max(len(good), 1), smiles=smiles,
                    n_molecules=n)
