"""Figures of the analyses, as matplotlib ``Figure`` objects.

Figures are built with the object-oriented API (``matplotlib.figure.Figure``), never
through ``pyplot``'s global state, so they render headless (Agg), from worker
threads, and are never shown: the caller saves them (:func:`save_figure`) or embeds
them (napari). Every figure about consistency or diversity states the number of atoms.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..errors import ShapeError
from .consistency import atom_correlations, atom_diversity

VALUE_COLUMNS = ("overlap_rate", "overlap", "dice", "correlation")


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG atomically (temporary name, then rename).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : path of the PNG to write
    dpi : int

    Returns
    -------
    path : Path
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    FigureCanvasAgg(fig)
    try:
        fig.savefig(tmp, dpi=dpi, format="png", facecolor="white")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def layer_histogram_figure(
    layer_hist: pd.DataFrame,
    *,
    normalize: bool = True,
    title: str | None = None,
    cmap: str = "viridis",
    figsize: tuple[float, float] = (8.0, 7.0),
) -> Figure:
    """Heatmap of atoms × layers with marginal histograms.

    Parameters
    ----------
    layer_hist : DataFrame of shape (n_atoms, n_layers)
        Counts of member ANs (from ``layers.layer_histogram``).
    normalize : bool
        Colour each row as the fraction of the atom's members (True) or raw counts.
    title : str, optional
    cmap : str
    figsize : (width, height) in inches

    Returns
    -------
    fig : Figure
        Main panel: atoms (rows) × layers (columns). Top: ANs per layer summed over
        atoms. Right: ANs per atom.
    """
    counts = layer_hist.to_numpy(dtype=float)
    if counts.ndim != 2 or counts.size == 0:
        raise ShapeError(f"'layer_hist' must be a non-empty (n_atoms, n_layers) table; shape {counts.shape}.")
    per_atom = counts.sum(axis=1)
    shown = counts / np.where(per_atom > 0, per_atom, 1)[:, None] if normalize else counts
    fig = Figure(figsize=figsize)
    grid = fig.add_gridspec(2, 3, width_ratios=(5, 1, 0.25), height_ratios=(1, 5),
                            wspace=0.05, hspace=0.05)
    ax = fig.add_subplot(grid[1, 0])
    top = fig.add_subplot(grid[0, 0], sharex=ax)
    right = fig.add_subplot(grid[1, 1], sharey=ax)
    cax = fig.add_subplot(grid[1, 2])
    n_atoms, n_layers = counts.shape
    im = ax.imshow(shown, aspect="auto", cmap=cmap, interpolation="nearest",
                   extent=(-0.5, n_layers - 0.5, n_atoms - 0.5, -0.5))
    ax.set_xlabel("layer")
    ax.set_ylabel("atom")
    ax.set_xticks(np.arange(n_layers))
    ax.set_xticklabels([str(c) for c in layer_hist.columns], fontsize=7, rotation=90 if n_layers > 16 else 0)
    if n_atoms <= 40:
        ax.set_yticks(np.arange(n_atoms))
        ax.set_yticklabels([str(i) for i in layer_hist.index], fontsize=6)
    top.bar(np.arange(n_layers), counts.sum(axis=0), color="0.4")
    top.set_ylabel("ANs")
    top.tick_params(labelbottom=False)
    right.barh(np.arange(n_atoms), per_atom, color="0.4")
    right.set_xlabel("ANs")
    right.tick_params(labelleft=False)
    fig.colorbar(im, cax=cax, label="fraction of atom's ANs" if normalize else "ANs")
    fig.suptitle(title or f"Layers of each atom's ANs ({n_atoms} atoms)")
    return fig


def _cluster_order(corr: np.ndarray) -> np.ndarray:
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    dist = 1.0 - np.nan_to_num(corr, nan=0.0)
    np.fill_diagonal(dist, 0.0)
    dist = np.clip((dist + dist.T) / 2, 0.0, None)
    return leaves_list(linkage(squareform(dist, checks=False), method="average"))


def atom_correlation_figure(
    atoms,
    *,
    cluster: bool = True,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (7.0, 6.0),
) -> Figure:
    """Correlation matrix of the atoms' time courses.

    Parameters
    ----------
    atoms : ndarray of shape (n_volumes, n_atoms)
    cluster : bool
        Order atoms by average-linkage clustering on ``1 - r`` (labels keep the
        atoms' own numbers).
    labels : sequence of str, optional
        One per atom (default: the atom numbers).
    title : str, optional
        Default states the number of atoms and their diversity.
    figsize : (width, height) in inches

    Returns
    -------
    fig : Figure
    """
    corr = atom_correlations(atoms)
    k = corr.shape[0]
    labels = [str(i) for i in range(k)] if labels is None else [str(x) for x in labels]
    if len(labels) != k:
        raise ShapeError(f"'labels' has {len(labels)} entries; expected one per atom ({k}).")
    order = _cluster_order(corr) if cluster and k > 2 else np.arange(k)
    fig = Figure(figsize=figsize)
    ax = fig.add_subplot()
    im = ax.imshow(corr[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    if k <= 64:
        ax.set_xticks(np.arange(k))
        ax.set_yticks(np.arange(k))
        ax.set_xticklabels([labels[i] for i in order], fontsize=5, rotation=90)
        ax.set_yticklabels([labels[i] for i in order], fontsize=5)
    ax.set_xlabel("atom" + (" (clustered order)" if cluster and k > 2 else ""))
    ax.set_ylabel("atom")
    fig.colorbar(im, ax=ax, label="Pearson r of time courses")
    div = atom_diversity(atoms)
    # two lines: one would run over the colour bar's top label
    ax.set_title(title or (f"Atom correlations (n atoms = {k})\ndiversity 1−mean|r| = "
                           f"{div['diversity']:.2f}; effective number = {div['effective_number']:.1f}"),
                 fontsize=9)
    return fig


def association_heatmap_figure(
    table: pd.DataFrame,
    value: str | None = "overlap_rate",
    *,
    associated: str = "associated",
    atoms: Sequence[int] | None = None,
    networks: Sequence[str] | None = None,
    title: str | None = None,
    cmap: str = "magma",
    signed: bool = False,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Atoms × networks heatmap of an association score, associated cells marked.

    Parameters
    ----------
    table : DataFrame
        Long table with ``atom``, ``network``, the score column and ``associated``.
    value : str or None
        Score to colour. When the column is missing (or None), the first of
        ``overlap_rate``, ``overlap``, ``dice``, ``correlation`` present is used.
    associated : str
        Boolean column; those cells get a white-edged marker.
    atoms, networks : sequences, optional
        Row / column order and selection (default: all, sorted atoms, networks in
        order of appearance).
    title : str, optional
    cmap : str
    signed : bool
        The score has a sign (the association test's ``statistic``: + activates,
        − deactivates): a diverging map centred on zero (``RdBu_r``) replaces ``cmap``.
    figsize : (width, height), optional

    Returns
    -------
    fig : Figure
    """
    if value is None or value not in table.columns:
        present = [c for c in VALUE_COLUMNS if c in table.columns]
        if not present:
            raise ShapeError(
                f"'table' has no score column {value!r} nor any of {list(VALUE_COLUMNS)}; "
                f"columns {list(table.columns)} were provided."
            )
        value = present[0]
    for col in ("atom", "network"):
        if col not in table.columns:
            raise ShapeError(f"'table' lacks the {col!r} column; it has {list(table.columns)}.")
    atoms = sorted(pd.unique(table["atom"])) if atoms is None else list(atoms)
    networks = list(pd.unique(table["network"].astype(str))) if networks is None else list(networks)
    scores = (table.assign(network=table["network"].astype(str))
              .pivot_table(index="atom", columns="network", values=value, aggfunc="max")
              .reindex(index=atoms, columns=networks))
    mat = scores.to_numpy(dtype=float)
    if figsize is None:
        figsize = (2.5 + 0.45 * len(networks), 2.0 + 0.14 * len(atoms))
    fig = Figure(figsize=figsize)
    ax = fig.add_subplot()
    if signed:
        lim = float(np.nanmax(np.abs(mat))) if np.isfinite(mat).any() else 1.0
        im = ax.imshow(mat, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    else:
        im = ax.imshow(mat, aspect="auto", cmap=cmap, interpolation="nearest")
    if associated in table.columns:
        flags = (table.assign(network=table["network"].astype(str), _f=table[associated].astype(float))
                 .pivot_table(index="atom", columns="network", values="_f", aggfunc="max")
                 .reindex(index=atoms, columns=networks).fillna(0).to_numpy() > 0)
        rows, cols = np.nonzero(flags)
        ax.scatter(cols, rows, marker="s", s=40, facecolors="none", edgecolors="cyan", linewidths=1.5,
                   label=associated)
    ax.set_xticks(np.arange(len(networks)))
    ax.set_xticklabels(networks, rotation=60, ha="right", fontsize=7)
    step = max(1, len(atoms) // 40)
    ax.set_yticks(np.arange(0, len(atoms), step))
    ax.set_yticklabels([str(atoms[i]) for i in range(0, len(atoms), step)], fontsize=6)
    ax.set_xlabel("network")
    ax.set_ylabel("atom")
    fig.colorbar(im, ax=ax, label=value)
    # the key of the marked cells in the title (a legend above the axes ran over it)
    marked = f"; cyan squares: {associated}" if associated in table.columns and rows.size else ""
    ax.set_title(title or f"Atom × network {value} ({len(atoms)} atoms{marked})", fontsize=9)
    fig.tight_layout()
    return fig


def r2_glass_figure(
    r2_img,
    *,
    threshold: float | str | None = 0.01,
    vmax: float | None = None,
    title: str | None = None,
    display: str = "glass",
    bg_img=None,
    cmap: str | None = None,
    figsize: tuple[float, float] = (9.0, 3.5),
) -> Figure:
    """Voxel-wise R² map, as a glass brain or slices over a template.

    Parameters
    ----------
    r2_img : NIfTI image or path (3D)
    threshold : float, "auto" or None
        Voxels at or below are not drawn (default 0.01; "auto": nilearn's choice).
    vmax : float, optional
    title : str, optional
    display : {"glass", "stat"}
        ``"glass"``: ``nilearn.plotting.plot_glass_brain`` (needs no template);
        ``"stat"``: ``plot_stat_map`` over ``bg_img`` (default nilearn's bundled
        MNI152 template; both work offline).
    bg_img : NIfTI image or path, optional
    cmap : str, optional
        Default ``"YlOrRd"`` on the white glass brain (its top colour stays visible
        on white), ``"hot"`` over the template.
    figsize : (width, height) in inches

    Returns
    -------
    fig : Figure
    """
    from nilearn import image, plotting

    from ..errors import check_choice

    check_choice("display", display, ("glass", "stat"))
    img = image.load_img(r2_img)
    if len(img.shape) != 3:
        raise ShapeError(f"'r2_img' must be a 3D image; shape {img.shape} was provided.")
    data = np.asarray(img.dataobj, dtype=float)
    finite = data[np.isfinite(data)]
    if vmax is None:
        vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    fig = Figure(figsize=figsize)
    kwargs = dict(figure=fig, threshold=threshold, vmax=vmax, colorbar=True,
                  title=title or "voxel-wise R²",
                  cmap=cmap or ("YlOrRd" if display == "glass" else "hot"))
    if display == "glass":
        plotting.plot_glass_brain(img, plot_abs=False, vmin=0.0, symmetric_cbar=False, **kwargs)
    else:
        if bg_img is None:
            from nilearn.datasets import load_mni152_template

            bg_img = load_mni152_template(resolution=2)
        plotting.plot_stat_map(img, bg_img=bg_img, symmetric_cbar=False, vmin=0.0, **kwargs)
    return fig


def atom_timecourse_figure(
    atom,
    tr: float,
    words_per_volume: Sequence | None = None,
    *,
    n_labels: int = 8,
    atom_id: int | str | None = None,
    title: str | None = None,
    story_starts: Sequence[tuple[str, int]] | None = None,
    figsize: tuple[float, float] = (10.0, 3.5),
) -> Figure:
    """An atom's time course over the scan, with words at its highest peaks.

    Parameters
    ----------
    atom : ndarray of shape (n_volumes,)
    tr : float
        Repetition time in seconds (x axis in seconds).
    words_per_volume : sequence of length n_volumes, optional
        The words to show at each volume (a string, or a list of strings). Give the
        words that drive the response at that volume (for HRF-convolved atoms, the
        words a few seconds earlier).
    n_labels : int
        Label the ``n_labels`` highest peaks with their words.
    atom_id : int or str, optional
    title : str, optional
    story_starts : sequence of (name, first_volume), optional
        Several stories one after another: a dashed line where each story starts after
        the first, its name above the axes.
    figsize : (width, height) in inches

    Returns
    -------
    fig : Figure
    """
    atom = np.asarray(atom, dtype=float).reshape(-1) if np.ndim(atom) == 2 and 1 in np.shape(atom) \
        else np.asarray(atom, dtype=float)
    if atom.ndim != 1:
        raise ShapeError(f"'atom' must be 1D (n_volumes,); shape {atom.shape} was provided.")
    if tr <= 0:
        raise ValueError(f"'tr' must be > 0 seconds; {tr!r} was provided.")
    times = np.arange(atom.size) * tr
    fig = Figure(figsize=figsize)
    ax = fig.add_subplot()
    ax.plot(times, atom, color="tab:blue", lw=1.2)
    ax.axhline(0, color="0.7", lw=0.8)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("amplitude")
    ax.set_xlim(times[0], times[-1] if atom.size > 1 else tr)
    if words_per_volume is not None:
        if len(words_per_volume) != atom.size:
            raise ShapeError(
                f"'words_per_volume' has {len(words_per_volume)} entries; expected one per volume "
                f"({atom.size})."
            )
        text = [" ".join(w) if isinstance(w, (list, tuple)) else ("" if w is None else str(w))
                for w in words_per_volume]
        interior = np.flatnonzero((atom[1:-1] >= atom[:-2]) & (atom[1:-1] >= atom[2:])) + 1
        peaks = interior[np.argsort(atom[interior])[::-1]]
        peaks = [p for p in peaks if text[p].strip()][:n_labels]
        for p in peaks:
            label = text[p] if len(text[p]) <= 30 else text[p][:29] + "…"
            ax.annotate(label, (times[p], atom[p]), xytext=(0, 6), textcoords="offset points",
                        rotation=35, fontsize=7, ha="left", va="bottom", color="0.15")
            ax.plot(times[p], atom[p], "o", color="tab:red", ms=3)
        ax.set_ylim(atom.min() - 0.05 * np.ptp(atom), atom.max() + 0.35 * (np.ptp(atom) or 1.0))
    if story_starts:  # room above the trace for the stories' names
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + 0.25 * (high - low))
    for story, first in story_starts or ():
        if first > 0:
            ax.axvline(first * tr, color="0.35", lw=0.9, ls="--")
        ax.annotate(str(story), (first * tr, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -3),
                    textcoords="offset points", fontsize=7, va="top", ha="left", color="0.3")
    name = "" if atom_id is None else f" {atom_id}"
    ax.set_title(title or f"Atom{name} time course (TR = {tr:g} s, {atom.size} volumes)", fontsize=9)
    fig.tight_layout()
    return fig


def consistency_figure(
    table: pd.DataFrame, *, title: str | None = None, figsize: tuple[float, float] | None = None
) -> Figure:
    """Consistency of each network's atoms against its size-matched null.

    Parameters
    ----------
    table : DataFrame
        From ``consistency.temporal_consistency`` (optionally with a ``model`` column).
        The number of atoms is written on every bar.

    Returns
    -------
    fig : Figure
    """
    need = {"network", "n_atoms", "consistency", "null_mean", "null_sd"}
    if need - set(table.columns):
        raise ShapeError(f"'table' lacks columns {sorted(need - set(table.columns))}.")
    has_model = "model" in table.columns
    models = list(pd.unique(table["model"])) if has_model else [None]
    networks = list(pd.unique(table["network"]))
    width = 0.8 / len(models)
    if figsize is None:
        figsize = (max(5.0, 1.0 + 0.7 * len(networks) * max(1, len(models)) ** 0.5), 4.0)
    fig = Figure(figsize=figsize)
    ax = fig.add_subplot()
    x = np.arange(len(networks))
    tops = [0.0]
    for i, model in enumerate(models):
        part = table[table["model"] == model] if has_model else table
        part = part.set_index("network").reindex(networks)
        pos = x - 0.4 + width * (i + 0.5)
        vals = part["consistency"].to_numpy(dtype=float)
        lo = (part["null_mean"] - 2 * part["null_sd"]).to_numpy(dtype=float)
        hi = (part["null_mean"] + 2 * part["null_sd"]).to_numpy(dtype=float)
        # The null band sits behind a narrower bar of the observed value.
        ax.bar(pos, np.nan_to_num(hi - lo), bottom=np.nan_to_num(lo), width=width * 0.9, color="0.85",
               edgecolor="0.6", label="random sets of n atoms: mean ± 2 SD" if i == 0 else None, zorder=1)
        ax.bar(pos, np.nan_to_num(vals), width=width * 0.5, zorder=2,
               label=f"{model}" if has_model else "atoms of the network")
        for p, v, h, n in zip(pos, vals, hi, part["n_atoms"].fillna(0).astype(int)):
            top = np.nanmax([0.0, v, h])
            tops.append(top)
            ax.text(p, top + 0.01, f"n={n}", ha="center", va="bottom", fontsize=7)
    ax.set_ylim(top=max(tops) * 1.2 + 0.05)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels([str(n) for n in networks], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("mean pairwise r of atoms")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(title or "Temporal consistency of each network's atoms (n = atoms)", fontsize=9)
    fig.tight_layout()
    return fig


def model_comparison_figure(
    coverage: pd.DataFrame,
    summary: pd.DataFrame | None = None,
    *,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Models side by side: atoms per network, and consistency against diversity.

    Parameters
    ----------
    coverage : DataFrame (networks × models)
        Atoms associated per network (``comparison.fbn_coverage``).
    summary : DataFrame indexed by model, optional
        ``comparison.compare_models(...)["summary"]``; with columns ``diversity``,
        ``mean_consistency`` and ``n_atoms`` a second panel plots consistency against
        diversity, each point labelled with its model and number of atoms; with
        ``r2_median``/``r2_p95`` a third panel shows encoding performance.

    Returns
    -------
    fig : Figure
    """
    panels = 1
    # consistency against diversity needs two models and a consistency to plot (else an empty panel)
    show_cd = (summary is not None and {"diversity", "mean_consistency", "n_atoms"} <= set(summary.columns)
               and len(summary) > 1 and bool(pd.to_numeric(summary["mean_consistency"], errors="coerce").notna().any()))
    show_r2 = summary is not None and {"r2_median", "r2_p95"} <= set(summary.columns)
    panels += int(show_cd) + int(show_r2)
    if figsize is None:
        figsize = (4.5 * panels + 1.0, 4.0)
    fig = Figure(figsize=figsize)
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
    ax = axes[0]
    models = list(coverage.columns)
    x = np.arange(coverage.shape[0])
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        ax.bar(x - 0.4 + width * (i + 0.5), coverage[m].to_numpy(), width=width * 0.9, label=str(m))
    ax.set_xticks(x)
    ax.set_xticklabels([str(n) for n in coverage.index], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("atoms associated")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Networks covered", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    j = 1
    if show_cd:
        ax = axes[j]
        j += 1
        for m, row in summary.iterrows():
            ax.scatter(row["diversity"], row["mean_consistency"], s=40)
            ax.annotate(f"{m} (n atoms={int(row['n_atoms'])})", (row["diversity"], row["mean_consistency"]),
                        xytext=(4, 4), textcoords="offset points", fontsize=7)
        ax.set_xlabel("diversity (1 − mean |r| of atoms)")
        ax.set_ylabel("mean consistency of a network's atoms")
        ax.set_title("Consistency vs diversity", fontsize=9)
    if show_r2:
        ax = axes[j]
        xm = np.arange(summary.shape[0])
        ax.bar(xm - 0.2, summary["r2_median"], width=0.4, label="median")
        ax.bar(xm + 0.2, summary["r2_p95"], width=0.4, label="95th percentile")
        ax.set_xticks(xm)
        ax.set_xticklabels([str(m) for m in summary.index], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("R² in mask")
        ax.set_title("Encoding performance", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def recovery_figure(
    scores: Mapping, *, title: str | None = None, figsize: tuple[float, float] | None = None
) -> Figure:
    """Planted and declared links: hits, misses and false alarms.

    Parameters
    ----------
    scores : dict
        From ``recovery.recovery_scores`` (uses ``details``: ``source``, ``atom``,
        ``atlas``, ``network``, ``direction``, ``status``; ``precision``, ``recall``).

    Returns
    -------
    fig : Figure
        Rows: planted sources (a matched atom's false alarms on its source's row), then
        unmatched atoms with false alarms; columns:
        atlas:network (direction);
        green = recovered, orange = missed, red = declared but not planted.
    """
    from matplotlib.colors import ListedColormap

    details = pd.DataFrame(scores.get("details", []))
    if details.empty:
        raise ShapeError("'scores' has no details: nothing was planted or declared.")
    if "atlas" not in details:
        details["atlas"] = ""
    # a matched atom's false alarms sit on its source's row; unmatched atoms get their own
    details["row"] = np.where(details["source"] >= 0, "source " + details["source"].astype(str),
                              "atom " + details["atom"].astype(str) + " (unmatched)")
    details["column"] = [(f"{a}:" if a else "") + f"{n} ({str(d)[:5]})"
                         for a, n, d in zip(details["atlas"], details["network"], details["direction"])]
    order = details.assign(unmatched=details["source"] < 0).sort_values(["unmatched", "source", "atom"])
    rows = list(pd.unique(order["row"]))
    networks = list(pd.unique(details.sort_values(["atlas", "network"])["column"]))
    code = {"tp": 1, "fn": 2, "fp": 3}
    mat = np.zeros((len(rows), len(networks)))
    for r, n, s in zip(details["row"], details["column"], details["status"]):
        mat[rows.index(r), networks.index(n)] = code[s]
    if figsize is None:
        figsize = (3.0 + 0.5 * len(networks), 2.0 + 0.3 * len(rows))
    fig = Figure(figsize=figsize)
    ax = fig.add_subplot()
    cmap = ListedColormap(["#f2f2f2", "#2ca02c", "#ff7f0e", "#d62728"])
    ax.imshow(mat, cmap=cmap, vmin=0, vmax=3, aspect="auto", interpolation="nearest")
    ax.set_xticks(np.arange(len(networks)))
    ax.set_xticklabels(networks, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(np.arange(len(rows)))
    ax.set_yticklabels(rows, fontsize=7)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="#2ca02c", label=f"recovered ({scores.get('tp', 0)})"),
                       Patch(color="#ff7f0e", label=f"missed ({scores.get('fn', 0)})"),
                       Patch(color="#d62728", label=f"false alarm ({scores.get('fp', 0)})")],
              fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title or (f"Planted links recovered: precision {scores.get('precision', np.nan):.2f}, "
                           f"recall {scores.get('recall', np.nan):.2f}"), fontsize=9)
    fig.tight_layout()
    return fig


def region_results_figure(table, *, title: str = "", top: int = 30) -> Figure:
    """Held-out r per region with its CI over subjects, the noise ceiling and the baselines.

    Parameters
    ----------
    table : DataFrame
        ``regions.tsv``: ``region``, ``r_cv``, optional ``r_cv_ci_low``/``r_cv_ci_high``,
        ``noise_ceiling``, ``q_cv`` and ``r_cv_<baseline>`` columns.
    top : int
        Regions shown (the highest r first).
    """
    t = table.sort_values("r_cv", ascending=False).head(top).reset_index(drop=True)
    y = np.arange(len(t))[::-1]
    fig = Figure(figsize=(8.5, 0.3 * len(t) + 1.6))
    ax = fig.add_subplot()
    if {"r_cv_ci_low", "r_cv_ci_high"} <= set(t.columns):
        err = np.vstack([t["r_cv"] - t["r_cv_ci_low"], t["r_cv_ci_high"] - t["r_cv"]])
        ax.barh(y, t["r_cv"], xerr=np.nan_to_num(err), color="#9DB4D6", ecolor="#1F3B63", capsize=2,
                label="model r (95% CI over subjects)")
    else:
        ax.barh(y, t["r_cv"], color="#9DB4D6", label="model r")
    if "noise_ceiling" in t:
        ax.scatter(t["noise_ceiling"], y, marker="D", s=22, color="k", zorder=3, label="noise ceiling (split-half)")
    markers = iter(["o", "s", "^", "D", "v"])
    for col in [c for c in t.columns if c.startswith("r_cv_") and c not in ("r_cv_ci_low", "r_cv_ci_high")]:
        color = "C3" if "phase" in col else ("C2" if "untrained" in col else "C1")
        ax.scatter(t[col], y, marker=next(markers, "x"), s=22, facecolors="none", edgecolors=color, zorder=3,
                   label=f"baseline: {col[5:]}")
    labels = [f"{r}{' *' if 'q_cv' in t and q < 0.05 else ''}" for r, q in
              zip(t["region"], t["q_cv"] if "q_cv" in t else np.ones(len(t)))]
    ax.set_yticks(y, labels, fontsize=7)
    ax.axvline(0, color="0.5", lw=0.8)
    ax.set_xlabel("held-out correlation r (mean over folds and subjects; * q < 0.05)")
    ax.set_title(f"{title}: regions by held-out r" if title else "regions by held-out r", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig
