"""Every figure renders headless to a real, non-blank PNG of the expected size."""

from __future__ import annotations

import sys

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from napari_brainorg.analyses import figures
from napari_brainorg.analyses.comparison import compare_models
from napari_brainorg.analyses.consistency import temporal_consistency
from napari_brainorg.analyses.layers import layer_histogram
from napari_brainorg.analyses.recovery import recovery_scores
from napari_brainorg.errors import ShapeError

DPI = 50
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(fig, path, *, colourful=False):
    w, h = fig.get_size_inches()
    figures.save_figure(fig, path, dpi=DPI)
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = mpimg.imread(path)
    assert pixels.shape[:2] == (round(h * DPI), round(w * DPI))
    rgb = pixels[..., :3]
    assert rgb.var() > 0
    # Not just text on white: a real share of the picture is drawn.
    assert np.mean(rgb.min(axis=-1) < 0.9) > 0.02
    if colourful:
        chroma = rgb.max(axis=-1) - rgb.min(axis=-1)
        assert np.mean(chroma > 0.2) > 0.005
    return pixels


@pytest.fixture
def atoms(rng):
    a = rng.standard_normal((120, 12))
    a[:, :3] += 2 * rng.standard_normal((120, 1))
    return a / np.linalg.norm(a, axis=0)


@pytest.fixture
def association(rng):
    rows = [(a, n, rng.random(), rng.random() < 0.15) for a in range(12)
            for n in ["medial visual", "auditory", "default mode", "sensorimotor"]]
    return pd.DataFrame(rows, columns=["atom", "network", "overlap", "associated"])


def test_layer_histogram_figure(rng, tmp_path):
    codes = rng.standard_normal((12, 300)) * (rng.random((12, 300)) < 0.2)
    index = pd.DataFrame({"layer": np.repeat(np.arange(6), 50)})
    _check_png(figures.layer_histogram_figure(layer_histogram(codes, index)), tmp_path / "layers.png",
               colourful=True)


def test_layer_histogram_figure_from_tsv_columns(tmp_path):
    """The table read back from layer_hist.tsv has string layer names."""
    hist = pd.DataFrame([[3, 0, 1], [0, 2, 2]], columns=["0", "1", "2"]).rename_axis("atom")
    _check_png(figures.layer_histogram_figure(hist, normalize=False), tmp_path / "layers_tsv.png")


def test_atom_correlation_figure(atoms, tmp_path):
    fig = figures.atom_correlation_figure(atoms)
    assert "n atoms = 12" in fig.axes[0].get_title()
    _check_png(fig, tmp_path / "corr.png", colourful=True)
    _check_png(figures.atom_correlation_figure(atoms, cluster=False), tmp_path / "corr_raw.png")


def test_association_heatmap_figure(association, tmp_path):
    fig = figures.association_heatmap_figure(association)  # falls back to 'overlap'
    assert fig.axes[1].get_ylabel() == "overlap"
    _check_png(fig, tmp_path / "assoc.png", colourful=True)
    with pytest.raises(ShapeError, match="score column"):
        figures.association_heatmap_figure(association.drop(columns="overlap"))


def test_signed_association_heatmap_is_centred_on_zero(association):
    table = association.assign(statistic=np.linspace(-3.0, 1.0, len(association)))
    image = figures.association_heatmap_figure(table, value="statistic", signed=True).axes[0].images[0]
    assert image.get_clim() == (-3.0, 3.0)  # a deactivation (-3) is as strong a colour as +3
    assert image.get_cmap().name == "RdBu_r"
    unsigned = figures.association_heatmap_figure(table, value="statistic").axes[0].images[0]
    assert unsigned.get_clim() == (-3.0, 1.0)


@pytest.mark.parametrize("display", ["glass", "stat"])
def test_r2_figure(display, tmp_path):
    from napari_brainorg.datasets import mni_mask_path

    mask = nib.load(mni_mask_path())
    data = np.zeros(mask.shape, np.float32)
    data[30:45, 40:60, 35:50] = 0.12
    data *= np.asarray(mask.dataobj) > 0
    fig = figures.r2_glass_figure(nib.Nifti1Image(data, mask.affine), display=display)
    _check_png(fig, tmp_path / f"r2_{display}.png", colourful=True)


def test_r2_figure_runs_without_network_or_display(tmp_path):
    """A fresh headless interpreter with sockets disabled renders the glass brain."""
    import subprocess

    code = (
        "import socket\n"
        "def _no(*a, **k): raise OSError('network disabled in this test')\n"
        "socket.socket.connect = _no\n"
        "import numpy as np, nibabel as nib\n"
        "from napari_brainorg.analyses.figures import r2_glass_figure, save_figure\n"
        "img = nib.Nifti1Image(np.pad(np.full((5, 5, 5), 0.1, np.float32), 20), np.diag([-2., 2., 2., 1.]))\n"
        f"save_figure(r2_glass_figure(img, display='stat'), {str(tmp_path / 'offline.png')!r}, dpi=40)\n"
    )
    env = {"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    assert (tmp_path / "offline.png").read_bytes()[:8] == PNG_MAGIC


def test_atom_timecourse_figure(atoms, tmp_path):
    words = [f"word{i}" for i in range(120)]
    fig = figures.atom_timecourse_figure(atoms[:, 0], 1.5, words, n_labels=5, atom_id=0)
    labels = [t.get_text() for t in fig.axes[0].texts]
    peaks = np.argsort(atoms[1:-1, 0])[::-1]
    assert len(labels) == 5 and f"word{peaks[0] + 1}" in labels  # the highest peak is labelled
    _check_png(fig, tmp_path / "timecourse.png")
    with pytest.raises(ShapeError, match="one per volume"):
        figures.atom_timecourse_figure(atoms[:, 0], 1.5, words[:10])


def test_consistency_and_model_comparison_figures(atoms, association, rng, tmp_path):
    table = temporal_consistency(atoms, association, n_null=200, random_state=0)
    fig = figures.consistency_figure(table)
    assert any(t.get_text().startswith("n=") for t in fig.axes[0].texts)  # n atoms on the bars
    _check_png(fig, tmp_path / "consistency.png", colourful=True)
    other = association.assign(associated=rng.random(len(association)) < 0.3)
    out = compare_models({"bert": atoms, "llama": atoms[:, ::-1].copy()}, {"bert": association, "llama": other},
                         r2_by_model={"bert": rng.uniform(0, 0.1, 500), "llama": rng.uniform(0, 0.2, 500)},
                         n_null=100)
    fig = figures.model_comparison_figure(out["coverage"], out["summary"])
    assert len(fig.axes) == 3
    _check_png(fig, tmp_path / "models.png", colourful=True)


def test_recovery_figure(association, tmp_path):
    expected = [{"source": 0, "network": "auditory", "sign": 1}, {"source": 4, "network": "default mode", "sign": -1}]
    scores = recovery_scores(expected, {"activated": association,
                                        "deactivated": association.assign(associated=~association["associated"])})
    _check_png(figures.recovery_figure(scores), tmp_path / "recovery.png", colourful=True)
