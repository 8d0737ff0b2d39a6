"""Region time-series tables as labs share them, and the same subject given twice."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from napari_brainorg.errors import FMRIInputError
from napari_brainorg.io.fmri import check_distinct_runs, load_fmri, load_region_timeseries


@pytest.fixture
def values():
    return np.random.default_rng(0).normal(80, 10, size=(30, 4))


def test_whitespace_separated_txt_is_read_with_or_without_a_header(tmp_path, values):
    plain = tmp_path / "sub-01.txt"
    np.savetxt(plain, values, fmt=" %.6e")  # leading blanks and several spaces, as numpy and AFNI write
    named = tmp_path / "sub-02.txt"
    named.write_text("A1  STG\tIFG  PCC\n" + "\n".join("  ".join(f"{v:.6e}" for v in row) for row in values) + "\n")
    out = load_region_timeseries([plain, named])
    assert out.region_names == ["A1", "STG", "IFG", "PCC"]
    np.testing.assert_allclose(out.data[0], values.astype(np.float32), rtol=1e-6)
    assert out.data[0].shape == out.data[1].shape == (30, 4)


def test_a_first_row_mixing_names_and_numbers_is_data_with_a_bad_value(tmp_path, values):
    path = tmp_path / "sub-01.tsv"
    path.write_text("\n".join("\t".join(f"{v:.3f}" for v in row) for row in values).replace("8", "x", 1) + "\n")
    with pytest.raises(FMRIInputError, match=r"sub-01.tsv, line 1, column \d: '\S*x\S*' is not a number"):
        load_region_timeseries(path)


def test_a_short_line_is_named_with_its_count(tmp_path, values):
    path = tmp_path / "sub-01.csv"
    rows = [",".join(f"{v:.3f}" for v in row) for row in values]
    rows[6] = ",".join(rows[6].split(",")[:3])
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(FMRIInputError, match=r"sub-01.csv, line 7: 3 values; line 1 has 4"):
        load_region_timeseries(path)


def test_a_constant_subject_is_named(tmp_path, values):
    good, flat = tmp_path / "sub-01.tsv", tmp_path / "sub-02.tsv"
    np.savetxt(good, values, delimiter="\t")
    np.savetxt(flat, np.zeros_like(values), delimiter="\t")
    with pytest.raises(FMRIInputError, match=r"sub-02.tsv: every one of its 4 regions is constant \(e.g. "
                                             r"'region_0' = 0 at every volume\)"):
        load_region_timeseries([good, flat])


def test_tables_with_other_columns_name_both_files_and_counts(tmp_path, values):
    a, b = tmp_path / "sub-01.tsv", tmp_path / "sub-02.tsv"
    np.savetxt(a, values, delimiter="\t")
    np.savetxt(b, values[:, :3], delimiter="\t")
    with pytest.raises(FMRIInputError, match=r"sub-02.tsv has 3 regions \(columns\) and 30 volumes; sub-01.tsv "
                                             r"has 4 and 30"):
        load_region_timeseries([a, b])


def test_a_glob_pattern_stands_for_its_files_sorted(tmp_path, values):
    for i in (3, 1, 2):
        np.savetxt(tmp_path / f"s{i}.tsv", values + i, delimiter="\t")
    out = load_region_timeseries(str(tmp_path / "s*.tsv"))
    assert out.subjects == ["s1", "s2", "s3"]
    np.testing.assert_allclose(out.data[2], (values + 3).astype(np.float32))


def test_the_same_table_twice_or_a_byte_identical_copy_is_refused(tmp_path, values):
    a = tmp_path / "sub-01.tsv"
    np.savetxt(a, values, delimiter="\t")
    with pytest.raises(FMRIInputError, match=rf"'{a}' is '{a}' listed again"):
        load_region_timeseries([a, a])
    copy = tmp_path / "sub-07.tsv"
    shutil.copy(a, copy)
    with pytest.raises(FMRIInputError, match=rf"'{copy}' is byte-identical to '{a}'"):
        load_region_timeseries([a, copy])
    with pytest.raises(FMRIInputError, match=r"fmri.images\[1\] '.*sub-07.tsv' is byte-identical to "
                                             r"fmri.images\[0\] '.*sub-01.tsv'"):
        check_distinct_runs([a, copy], ["fmri.images[0]", "fmri.images[1]"])


def test_a_run_given_twice_is_refused(tmp_path):
    data = np.random.default_rng(1).normal(100, 1, (6, 6, 6, 12)).astype(np.float32)
    run = tmp_path / "sub-01_bold.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), run)
    copy = tmp_path / "sub-02_bold.nii.gz"
    shutil.copy(run, copy)
    with pytest.raises(FMRIInputError, match=rf"'{copy}' is byte-identical to '{run}'"):
        load_fmri([run, copy], mask=None)
