"""QM9: the shipped subset, padding, and EDM's valence stability (checked on the data and on hand-built molecules)."""

import gzip
import math

import pytest
import torch

from geoflow.data.molecules import QM9_ELEMENTS, bond_orders, load_qm9, pad_molecules, stability, validity


@pytest.fixture(scope="module")
def qm9():
    return load_qm9()


def test_qm9_subset_shapes_types_and_centring(qm9):
    sizes = torch.tensor([p.shape[0] for p in qm9["positions"]])
    assert len(qm9["positions"]) == 2000 and int(sizes.min()) >= 3 and int(sizes.max()) == 29
    assert all(t.shape[0] == p.shape[0] for p, t in zip(qm9["positions"], qm9["types"]))
    assert set(torch.cat(qm9["types"]).tolist()) == set(range(len(QM9_ELEMENTS)))
    assert max(float(p.mean(0).abs().max()) for p in qm9["positions"]) < 1e-5
    assert qm9["smiles"][0] == "N#CC#N" and int(qm9["index"][0]) == 25


def test_qm9_data_are_as_stable_as_edm_reports(qm9):
    """EDM (Hoogeboom et al. 2022, Table 1, 'Data') reports 99.0 % atom and 95.2 % molecule stability on QM9."""
    x, h, mask = pad_molecules(qm9["positions"], qm9["types"])
    s = stability(x, h.argmax(-1), mask)
    assert s.n_atoms == sum(p.shape[0] for p in qm9["positions"]) and s.n_molecules == 2000
    assert abs(s.atom_stable - 0.990) < 0.01 and abs(s.molecule_stable - 0.952) < 0.02


def _water(oh=0.96, angle=104.5):
    a = math.radians(angle) / 2
    return torch.tensor([[0.0, 0.0, 0.0], [oh * math.sin(a), oh * math.cos(a), 0.0], [-oh * math.sin(a), oh * math.cos(a), 0.0]])


def test_bond_orders_of_hand_built_molecules():
    o, h, c = (QM9_ELEMENTS.index(e) for e in "OHC")
    water = _water()
    order = bond_orders(water, torch.tensor([o, h, h]))
    assert order.tolist() == [[0, 1, 1], [1, 0, 0], [1, 0, 0]]
    co2 = torch.tensor([[0.0, 0, 0], [1.17, 0, 0], [-1.17, 0, 0]])
    assert bond_orders(co2, torch.tensor([c, o, o])).tolist() == [[0, 2, 2], [2, 0, 0], [2, 0, 0]]
    # Stable as built; an O-H stretched to 1.2 A breaks the bond and both atoms.
    types = torch.tensor([[o, h, h], [c, o, o]])
    s = stability(torch.stack([water, co2]), types)
    assert s.molecule_stable == 1.0 and s.atom_stable == 1.0
    broken = _water(oh=1.2)
    s = stability(broken[None], torch.tensor([[o, h, h]]))
    assert s.molecule_stable == 0.0 and s.atom_stable == 0.0


def test_qm9_data_are_as_valid_as_edm_reports(qm9):
    """EDM reports 97.7 % RDKit validity on QM9 (Table 1, 'Data'); the shipped molecules' SMILES come back."""
    x, h, mask = pad_molecules(qm9["positions"], qm9["types"])
    v = validity(x, h.argmax(-1), mask)
    assert v.n_molecules == 2000 and abs(v.valid - 0.977) < 0.02
    assert v.unique > 0.95  # 2000 distinct molecules; a few lose distinctness to the distance rule
    from rdkit import Chem

    # where the bond rule recovers the molecule, its SMILES is the dataset's (canonicalised)
    same = sum(s == Chem.MolToSmiles(Chem.MolFromSmiles(ref)) for s, ref in zip(v.smiles[:200], qm9["smiles"][:200])
               if s is not None)
    assert same > 0.8 * 200


def test_validity_of_hand_built_molecules():
    o, h, c = (QM9_ELEMENTS.index(e) for e in "OHC")
    co2 = torch.tensor([[0.0, 0, 0], [1.17, 0, 0], [-1.17, 0, 0]])
    water = _water()
    pad = torch.zeros(1, 3)
    x = torch.stack([torch.cat([water, pad]), torch.cat([co2, pad]), torch.cat([_water(oh=1.2), pad]),
                     torch.cat([co2, pad])])
    types = torch.tensor([[o, h, h, 0], [c, o, o, 0], [o, h, h, 0], [c, o, o, 0]])
    mask = torch.tensor([[True, True, True, False]] * 4)
    v = validity(x, types, mask)
    # a stretched O-H leaves O, H and H unbonded: RDKit adds implicit hydrogens and accepts it (a valid
    # but different molecule, largest fragment "O"); validity is laxer than stability
    assert v.smiles == ["O", "O=C=O", "O", "O=C=O"] and v.valid == 1.0 and v.unique == 0.5
    # a carbon with five bonds is not valid
    ch5 = torch.tensor([[0.0, 0, 0], [1.09, 0, 0], [-1.09, 0, 0], [0, 1.09, 0], [0, -1.09, 0], [0, 0, 1.09]])
    v = validity(ch5[None], torch.tensor([[c, h, h, h, h, h]]))
    assert v.smiles == [None] and v.valid == 0.0 and v.unique == 0.0
    with pytest.raises(ValueError, match="expected positions"):
        validity(ch5, torch.tensor([c, h, h, h, h, h]))


def test_padding_and_masks():
    w = _water()
    x, h, mask = pad_molecules([w, w[:2]], [torch.tensor([3, 0, 0]), torch.tensor([3, 0])], max_atoms=4)
    assert x.shape == (2, 4, 3) and h.shape == (2, 4, 5) and mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert float(x[1, 2:].abs().sum()) == 0 and float(h[1, 2:].sum()) == 0
    s = stability(x, h.argmax(-1), mask)  # padded atoms neither bond nor count
    assert s.n_atoms == 5 and s.per_molecule.tolist() == [True, False]
    with pytest.raises(ValueError, match="`max_atoms` = 2 is below the largest molecule \\(3 atoms\\)"):
        pad_molecules([w], [torch.tensor([3, 0, 0])], max_atoms=2)


def test_malformed_qm9_files_are_named(tmp_path):
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(gzip.compress(b"Index,SMILES,Elements,XYZ_Ang\n1,C,\"['C','Q']\",\"[[0,0,0],[1,0,0]]\"\n"))
    with pytest.raises(ValueError, match="bad.csv.gz, line 2: Elements must be a list of"):
        load_qm9(path=bad)
    short = tmp_path / "short.csv"
    short.write_text("Index,SMILES,Elements,XYZ_Ang\n1,C,\"['C','H']\",\"[[0,0,0]]\"\n")
    with pytest.raises(ValueError, match="short.csv, line 2: XYZ_Ang has shape \\(1, 3\\), expected \\(2, 3\\)"):
        load_qm9(path=short)
    header = tmp_path / "header.csv"
    header.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="header.csv: expected a CSV header with the columns"):
        load_qm9(path=header)
