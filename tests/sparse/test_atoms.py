"""Per-atom members and their layers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from napari_brainorg.errors import ConfigError, ShapeError
from napari_brainorg.sparse.atoms import atom_members, atoms_table, layer_histogram


@pytest.fixture
def small():
    """3 atoms, 8 ANs over layers 0, 1, 2 (units 0..), hand-checkable."""
    an_index = pd.DataFrame({
        "layer": [0, 0, 0, 1, 1, 2, 2, 2],
        "unit": [0, 1, 2, 0, 1, 0, 1, 2],
        "site": ["ffn_hidden"] * 8,
    })
    codes = np.array([
        # an: 0     1     2     3     4     5     6     7
        [0.5, 0.0, -2.0, 0.0, 0.0, 0.0, 0.0, 0.05],  # atom 0: layers 0, 0, 2
        [0.0, 0.0, 0.0, 1.0, -1.5, 0.2, 0.3, 0.0],   # atom 1: layers 1, 1, 2, 2
        [0.0] * 8,                                    # atom 2: unused
    ])
    return codes, an_index


def test_atom_members(small):
    codes, an_index = small
    members = atom_members(codes, an_index)
    assert len(members) == 3
    m0 = members[0]
    assert list(m0.columns) == ["an", "layer", "unit", "site", "code"]
    assert m0["an"].tolist() == [2, 0, 7]  # |code| descending
    assert m0["code"].tolist() == [-2.0, 0.5, 0.05]
    assert m0["layer"].tolist() == [0, 0, 2]
    assert members[1]["an"].tolist() == [4, 3, 6, 5]
    assert members[2].empty and list(members[2].columns) == list(m0.columns)
    # threshold on |code|
    strong = atom_members(codes, an_index, min_abs=0.25)
    assert strong[0]["an"].tolist() == [2, 0]
    assert strong[1]["an"].tolist() == [4, 3, 6]


def test_sparse_codes_give_the_same_answers(small):
    codes, an_index = small
    csr = sp.csr_matrix(codes)
    for a, b in zip(atom_members(codes, an_index), atom_members(csr, an_index)):
        pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(layer_histogram(codes, an_index), layer_histogram(csr, an_index))
    pd.testing.assert_frame_equal(atoms_table(codes, an_index), atoms_table(csr, an_index))


def test_layer_histogram(small):
    codes, an_index = small
    hist = layer_histogram(codes, an_index)
    assert hist.shape == (3, 3)
    assert hist.index.name == "atom" and hist.columns.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(hist.to_numpy(), [[2, 0, 1], [0, 2, 2], [0, 0, 0]])
    weighted = layer_histogram(codes, an_index, weight="abs")
    np.testing.assert_allclose(weighted.to_numpy(), [[2.5, 0, 0.05], [0, 2.5, 0.5], [0, 0, 0]])
    norm = layer_histogram(codes, an_index, normalize=True)
    np.testing.assert_allclose(norm.to_numpy(), [[2 / 3, 0, 1 / 3], [0, 0.5, 0.5], [0, 0, 0]])
    # every layer shown, including one with no AN in this index
    wide = layer_histogram(codes, an_index, layers=[0, 1, 2, 3])
    assert wide.columns.tolist() == [0, 1, 2, 3] and wide[3].sum() == 0
    with pytest.raises(ValueError, match=r"'layers' must include every layer.*\[2\]"):
        layer_histogram(codes, an_index, layers=[0, 1])
    with pytest.raises(ConfigError, match="'weight' must be one of"):
        layer_histogram(codes, an_index, weight="sum")


def test_atoms_table(small):
    codes, an_index = small
    table = atoms_table(codes, an_index)
    assert table.columns.tolist() == ["atom", "n_ans", "fraction_ans", "n_positive", "n_negative",
                                      "n_layers_spanned", "peak_layer", "main_layers", "mean_abs_code"]
    assert table["n_ans"].tolist() == [3, 4, 0]
    assert table["n_positive"].tolist() == [2, 3, 0]
    assert table["n_negative"].tolist() == [1, 1, 0]
    assert table["n_layers_spanned"].tolist() == [2, 2, 0]
    # atom 0: layer 0 holds 2/3 >= half; atom 1: tie 2/2 -> layer 1 alone is half
    assert table["main_layers"].tolist() == ["0", "1", ""]
    assert table["peak_layer"].tolist() == [0, 1, ""]
    np.testing.assert_allclose(table["mean_abs_code"], [2.55 / 3, 3.0 / 4, 0.0])
    np.testing.assert_allclose(table["fraction_ans"], [3 / 8, 4 / 8, 0])
    # a larger share needs more layers
    assert atoms_table(codes, an_index, main_share=0.9)["main_layers"].tolist() == ["0,2", "1,2", ""]


def test_vectorised_on_many_ans(rng):
    n_layers, per_layer, k = 12, 3000, 64
    an_index = pd.DataFrame({"layer": np.repeat(np.arange(n_layers), per_layer),
                             "unit": np.tile(np.arange(per_layer), n_layers), "site": "ffn_hidden"})
    codes = rng.standard_normal((k, len(an_index))) * (rng.random((k, len(an_index))) < 0.05)
    hist = layer_histogram(codes, an_index)
    layer_of = an_index["layer"].to_numpy()
    for j in (0, 17, 63):
        expected = np.bincount(layer_of[codes[j] != 0], minlength=n_layers)
        np.testing.assert_array_equal(hist.loc[j].to_numpy(), expected)
    table = atoms_table(codes, an_index)
    np.testing.assert_array_equal(table["n_ans"], (codes != 0).sum(1))
    members = atom_members(codes, an_index, min_abs=1.0)
    assert sum(len(m) for m in members) == int((np.abs(codes) > 1.0).sum())


def test_bad_input(small):
    codes, an_index = small
    with pytest.raises(ShapeError, match=r"expected shape \(n_atoms, 8\); shape \(8, 3\).*Transpose"):
        atoms_table(codes.T, an_index)
    with pytest.raises(ShapeError, match="'layer' column"):
        layer_histogram(codes, an_index.drop(columns="layer"))
    with pytest.raises(TypeError, match="'an_index' must be a pandas DataFrame"):
        atom_members(codes, an_index.to_numpy())
    with pytest.raises(ValueError, match="'min_abs' must be a finite number >= 0; -1"):
        atom_members(codes, an_index, min_abs=-1)
    with pytest.raises(ValueError, match="'main_share' must be a number in"):
        atoms_table(codes, an_index, main_share=0)


def test_orient_atoms_makes_member_codes_mostly_positive(rng):
    import scipy.sparse as sp

    from napari_brainorg.sparse.atoms import orient_atoms

    n_volumes, k, n_ans = 50, 6, 40
    atoms = rng.normal(size=(n_volumes, k))
    codes = np.zeros((k, n_ans))
    for j in range(k):
        members = rng.choice(n_ans, 9, replace=False)
        codes[j, members] = np.abs(rng.normal(size=9)) + 0.1
        codes[j, members[:2]] *= -1  # 7 of 9 members positive
    codes[5] = 0  # an atom without members: its largest |value| decides
    atoms[7 % n_volumes, 5] = -100.0
    X = atoms @ codes
    flip = np.array([1, -1, -1, 1, -1, 1.0])
    for given in (codes * flip[:, None], sp.csr_matrix(codes * flip[:, None])):
        out_atoms, out_codes, flipped = orient_atoms(atoms * flip, given)
        dense = out_codes.toarray() if sp.issparse(out_codes) else out_codes
        assert sp.issparse(out_codes) == sp.issparse(given)
        np.testing.assert_allclose(out_atoms @ dense, X)  # the model is unchanged
        np.testing.assert_allclose(dense[:5], codes[:5])  # the same orientation from either sign
        np.testing.assert_allclose(out_atoms[:, :5], atoms[:, :5])
        assert flipped[:5].tolist() == (flip[:5] < 0).tolist()
        assert out_atoms[7, 5] == 100.0 and (np.sign(dense[:5][dense[:5] != 0]) > 0).mean() > 0.7
