"""Brain maps as a neuroscientist reads them: thresholded maps on the MNI template with a
colour bar, L/R and cuts through the peak, a peak table in MNI mm, each shown atom's time
course, and the analysis mask.

The maps are drawn with nilearn (``plot_stat_map``, ``plot_roi``) over the template the run
used (the bundled FSL MNI152 2 mm brain unless the summary names another), and the peak
tables are nilearn's ``get_clusters_table``, each peak named by the networks of the run's
atlases that hold it. Only the held-out r map and the atoms with declared network links
are drawn (at most :data:`MAX_ATOMS`), so a report builds in seconds per model. Region
data (``encoding/<model>/regions.tsv``) has no maps: its regions are listed instead.
"""

from __future__ import annotations

import math

import numpy as np

from .._progress import check_cancel
from ..io.results import ResultFolder
from ._html import _esc, _img_file, _img_png, _table_html, figure_png, fixed, num
from .atoms import atom_description, declared_links, linked_atoms

#: the most atoms whose maps and time courses a model's section shows
MAX_ATOMS = 6
#: clusters smaller than this are left out of the peak tables (mm³; two 6 mm voxels)
MIN_CLUSTER_MM3 = 400.0
#: rows of a peak table
MAX_PEAKS = 8


def _template(result: ResultFolder):
    import nibabel as nib

    return nib.load(str(result.template_path()))


def _voxel_mm3(img) -> float:
    return float(abs(np.linalg.det(img.affine[:3, :3])))


def peak_table(img, threshold: float, two_sided: bool, atlases: list | None = None, stat: str = "z"):
    """The clusters and peaks of a 3D map above ``threshold``, in MNI mm (nilearn's
    ``get_clusters_table``), each peak with the networks of the run's atlases that hold it.

    Parameters
    ----------
    img : Nifti1Image, 3D
    threshold : float
    two_sided : bool
        Negative clusters too (below ``-threshold``).
    atlases : list, optional
        :func:`atlas_lookups` of the run: names the networks at each peak.
    stat : str
        Name of the peak value's column (``"z"``, ``"r"``).

    Returns
    -------
    DataFrame
        ``cluster, x, y, z (MNI mm), peak <stat>, size (mm³), networks at the peak``; at
        most :data:`MAX_PEAKS` rows, the clusters with the largest peaks first.
    """
    import pandas as pd
    from nilearn.reporting import get_clusters_table

    min_voxels = max(1, int(math.ceil(MIN_CLUSTER_MM3 / _voxel_mm3(img))))
    table = get_clusters_table(img, stat_threshold=threshold, cluster_threshold=min_voxels,
                               two_sided=two_sided)
    out = pd.DataFrame({
        "cluster": table["Cluster ID"].astype(str),
        "x": table["X"].astype(float).round().astype(int),
        "y": table["Y"].astype(float).round().astype(int),
        "z": table["Z"].astype(float).round().astype(int),
        f"peak {stat}": table["Peak Stat"].astype(float),
        "size (mm³)": pd.to_numeric(table["Cluster Size (mm3)"], errors="coerce"),
    })
    if len(out):
        out = _strongest_clusters(out, stat)
        if atlases:
            out["networks at the peak"] = [_networks_at(atlases, xyz) for xyz in out[["x", "y", "z"]].to_numpy(float)]
    return out


def _strongest_clusters(table, stat: str, n_sub: int = 2):
    """The clusters by the |value| of their peak, each with at most ``n_sub`` sub-peaks, cut to
    :data:`MAX_PEAKS` rows (nilearn lists positive clusters before negative ones)."""
    import pandas as pd

    cluster = table["cluster"].str.rstrip("abcdefghijklmnopqrstuvwxyz")
    groups = []
    for _, rows in table.groupby(cluster, sort=False):
        groups.append(rows.head(1 + n_sub))
    groups.sort(key=lambda g: -abs(float(g[f"peak {stat}"].iloc[0])))
    return pd.concat(groups).head(MAX_PEAKS).reset_index(drop=True)


def atlas_lookups(result: ResultFolder) -> list[tuple[str, np.ndarray, np.ndarray, dict]]:
    """The run's atlases as ``(name, labels, affine, {label: network})``, read once per report."""
    out = []
    for atlas in result.atlas_names():
        img = result.atlas_label_image(atlas)
        if img is None or len(img.shape) != 3:
            continue
        try:
            lookup = dict(zip(result.atlas_label_values(atlas).tolist(), result.atlas_network_names(atlas)))
        except ValueError:
            continue
        out.append((atlas, np.asarray(img.dataobj), img.affine, lookup))
    return out


def _networks_at(atlases: list, xyz: np.ndarray) -> str:
    """The networks at MNI coordinate ``xyz`` (``atlas: network``, ``;``-joined; see :func:`atlas_lookups`)."""
    names = []
    for atlas, labels, affine, lookup in atlases:
        ijk = np.rint(np.linalg.inv(affine) @ np.append(xyz, 1.0))[:3].astype(int)
        if np.any(ijk < 0) or np.any(ijk >= np.asarray(labels.shape)):
            continue
        value = int(labels[tuple(ijk)])
        if value in lookup:
            names.append(f"{atlas}: {lookup[value]}")
    return "; ".join(names)


def _stat_map_png(img, template, threshold: float, cut: tuple, *, signed: bool, vmax: float | None = None) -> bytes:
    """PNG of a thresholded map on the template: sagittal, coronal and axial cuts through
    ``cut`` (MNI mm), L/R and cut coordinates marked, a colour bar."""
    from matplotlib.figure import Figure
    from nilearn import plotting

    fig = Figure(figsize=(7.0, 2.5))
    kwargs = dict(cmap="RdBu_r", symmetric_cbar=True) if signed else dict(cmap="hot", symmetric_cbar=False, vmin=0.0)
    plotting.plot_stat_map(img, bg_img=template, threshold=threshold, display_mode="ortho", cut_coords=cut,
                           figure=fig, colorbar=True, annotate=True, draw_cross=False, black_bg=False,
                           dim=-0.3, vmax=vmax, **kwargs)
    return figure_png(fig, dpi=90)


def _peak_cut(img, table) -> tuple[float, float, float]:
    """The MNI coordinate of the map's highest peak (the table's first row; else the largest |value|)."""
    if len(table):
        return tuple(float(v) for v in table.iloc[0][["x", "y", "z"]])
    data = np.nan_to_num(np.asarray(img.dataobj, dtype=float))
    ijk = np.unravel_index(np.abs(data).argmax(), data.shape)
    return tuple(float(v) for v in (img.affine @ np.append(ijk, 1.0))[:3])


def _map_block(img, template, threshold: float, *, signed: bool, stat: str, title: str, caption: str,
               atlases: list, extra: str = "", figures: str = "", cancel=None) -> str:
    """One shown map: the figure (and ``figures`` below it), beside its caption, its peak table
    and ``extra`` (HTML). ``cancel`` is checked between the table and the figure."""
    table = peak_table(img, threshold, two_sided=signed, atlases=atlases, stat=stat)
    check_cancel(cancel)
    cut = _peak_cut(img, table)
    data = np.nan_to_num(np.asarray(img.dataobj, dtype=float))
    vmax = float(np.abs(data).max()) or 1.0
    png = _stat_map_png(img, template, threshold, cut, signed=signed, vmax=vmax)
    where = f"cuts through the peak at x = {num(cut[0])}, y = {num(cut[1])}, z = {num(cut[2])} mm (MNI)"
    digits = {"peak z": 2, "peak r": 3}
    peaks = (_table_html(table, cls="peaks", formats={c: (lambda v, d=d: fixed(v, d)) for c, d in digits.items()})
             if len(table) else
             f"<p class='muted'>No cluster of at least {num(MIN_CLUSTER_MM3)} mm³ above the threshold.</p>")
    return (f"<div class='mapblock'><h4>{title}</h4><div class='mapcols'><div>{_img_png(png, title, 'statmap')}"
            f"{figures}</div><div><p class='caption'>{caption}; {where}. Peak table: clusters of at least "
            f"{num(MIN_CLUSTER_MM3)} mm³; x, y, z: MNI coordinates in mm.</p>{peaks}{extra}</div></div></div>")


def _r_map_block(result: ResultFolder, model: str, template, atlases: list, cancel=None) -> str:
    """The held-out r map, thresholded at its top 5 % of voxels, with its peak table (``cancel``
    checked between the two)."""
    import nibabel as nib

    path = result.map_path(model, "r_cv")
    if path is None:
        return ""
    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=float)
    inside = data[np.isfinite(data) & (data != 0)]
    if inside.size == 0 or inside.max() <= 0:
        return ""
    threshold = max(float(np.percentile(inside, 95)), 1e-6)
    threshold = math.floor(threshold * 100) / 100 or threshold
    return _map_block(img, template, threshold, signed=False, stat="r", title="Held-out r (group)",
                      caption=(f"Cross-validated held-out r of the ridge on the atoms, the subjects&rsquo; mean; "
                               f"shown where r &ge; {num(threshold)} (the top 5 % of the mask&rsquo;s voxels)"),
                      atlases=atlases, cancel=cancel)


def _timecourse_png(result: ResultFolder, model: str, atom: int) -> bytes | None:
    """PNG of an atom's time course over the scan, the stories' boundaries marked."""
    from ..analyses.figures import atom_timecourse_figure

    path = result.file(f"atoms/{model}/atoms.npy")
    if not path.exists():
        return None
    atoms = np.load(path, mmap_mode="r")
    if atom >= atoms.shape[1]:
        return None
    stories = result.stories()
    starts = [(s["story"], s["first_volume"]) for s in stories] if len(stories) > 1 else None
    fig = atom_timecourse_figure(np.asarray(atoms[:, atom], float), result.tr, atom_id=atom,
                                 story_starts=starts, figsize=(7.0, 1.9))
    return figure_png(fig, dpi=90)


def shown_atoms(result: ResultFolder, model: str) -> list[int]:
    """The atoms a model's section shows in full: those with declared links, strongest first
    (largest |statistic| of their associated links), at most :data:`MAX_ATOMS`."""
    strength: dict[int, float] = {}
    links = declared_links(result, model)
    if links is not None:
        value = "statistic" if "statistic" in links.columns else None
        for _, row in links.iterrows():
            s = abs(float(row[value])) if value else 1.0
            strength[int(row["atom"])] = max(strength.get(int(row["atom"]), 0.0), s)
    for atom in linked_atoms(result.atoms_table(model)):
        strength.setdefault(atom, 0.0)
    return sorted(strength, key=lambda a: (-strength[a], a))[:MAX_ATOMS]


def _atom_blocks(result: ResultFolder, model: str, template, atlases: list, cancel=None) -> list[str]:
    """Each shown atom: its z map on the template with its peak table, its time course, what it is
    (``cancel`` checked before each)."""
    from .atoms import _word_type_means

    img = result.atom_maps(model, stat="z")
    atoms_tab, top, means = result.atoms_table(model), result.top_words(model), _word_type_means(result, model)
    threshold = float(result.config().get("networks", {}).get("threshold", 2.3))
    regions = result.region_atom_table(model, stat="z") if img is None else None
    # the map shown: calibrated against phase-randomised atoms (or, in a folder of an earlier
    # version, the subjects' combination of their coefficients' z)
    calibrated = "shown" in (result.summary.get("maps", {}).get(model) or {})
    what = "lock with the subjects' mean time course" if calibrated else "coefficient"
    how = ", calibrated against phase-randomised copies of the atom" if calibrated else ""
    blocks = []
    for atom in shown_atoms(result, model):
        check_cancel(cancel)
        about = "<br>".join(atom_description(result, model, atom, atoms_tab, top, means))
        tc = _timecourse_png(result, model, atom)
        course = (f"{_img_png(tc, f'atom {atom} time course', 'timecourse')}<p class='caption'>Atom {atom}&rsquo;s "
                  f"time course, one value per volume (the dictionary&rsquo;s unit-norm atoms)"
                  f"{'; dashed lines: the start of each story' if len(result.stories()) > 1 else ''}.</p>"
                  if tc else "")
        about = f"<p class='atomabout'>{about}</p>"
        if img is not None and len(img.shape) == 4 and atom < img.shape[3]:
            from nilearn.image import index_img

            blocks.append(_map_block(
                index_img(img, atom), template, threshold, signed=True, stat="z", title=f"Atom {atom}",
                caption=(f"Group z of atom {atom}&rsquo;s {what} (all atoms and nuisance regressors fitted "
                         f"together){how}, shown where |z| &gt; {num(threshold)}; red: the voxels follow the atom, "
                         f"blue: they move against it"), atlases=atlases, extra=about, figures=course,
                cancel=cancel))
        elif regions is not None and f"atom_{atom}" in regions.columns:
            col = regions[f"atom_{atom}"].astype(float)
            best = col.reindex(col.abs().sort_values(ascending=False).index).head(MAX_PEAKS)
            table = _table_html(best.rename("z").reset_index(), cls="peaks")
            blocks.append(f"<div class='mapblock'><h4>Atom {atom}</h4><div class='mapcols'><div>{course}</div>"
                          f"<div><p class='caption'>The regions that follow atom {atom} most (group z, largest "
                          f"|z| first):</p>{table}{about}</div></div></div>")
        else:
            blocks.append(f"<div class='mapblock'><h4>Atom {atom}</h4>{course}{about}</div>")
    return blocks


def _rel(result: ResultFolder, path) -> str:
    """``path`` inside the result folder, as the report names files (no machine path)."""
    return str(path.relative_to(result.path)) if path is not None else ""


def _mask_block(result: ResultFolder, model: str, template) -> str:
    """The analysis mask on the template (axial cuts), with its size."""
    from matplotlib.figure import Figure
    from nilearn import plotting

    img = result.mask_img(model)
    if img is None:
        return ""
    n = int((np.asarray(img.dataobj) > 0).sum())
    sizes = np.abs(np.diag(img.affine)[:3])
    fig = Figure(figsize=(7.6, 1.7))
    # the mask's outline, so the anatomy under it stays visible
    plotting.plot_roi(img, bg_img=template, display_mode="z", cut_coords=7, figure=fig, annotate=True,
                      black_bg=False, dim=-0.3, cmap="autumn", colorbar=False, view_type="contours",
                      linewidths=1.2, draw_cross=False)
    grid = "&times;".join(num(s) for s in sizes)
    return (f"<div class='mapblock'><h4>Analysis mask</h4>{_img_png(figure_png(fig), 'analysis mask', 'statmap')}"
            f"<p class='caption'>The voxels analysed ({_esc(_rel(result, result.map_path(model, 'mask')))}): "
            f"{n} voxels of "
            f"{grid} mm ({num(n * _voxel_mm3(img) / 1000.0)} cm³), its outline in red on the MNI template; axial "
            f"cuts, z in mm.</p>"
            f"</div>")


def _region_block(result: ResultFolder, model: str) -> str:
    """Region data: the regions' held-out r with its CI and ceiling (table and the run's figure)."""
    table = result.region_table(model)
    if table is None:
        return ""
    cols = [c for c in ("region", "r_cv", "r_cv_ci_low", "r_cv_ci_high", "noise_ceiling", "q_cv") if c in table]
    if "r_cv" in table:
        table = table.sort_values("r_cv", ascending=False)
    fig = _img_file(result.figure(f"{model}_regions"), f"{model} held-out r per region")
    return (f"<div class='mapblock'><h4>Regions</h4>{fig}<p class='caption'>Region time series (no voxel maps): "
            f"each region&rsquo;s held-out r, the subjects&rsquo; mean with its 95% CI over subjects, and its "
            f"noise ceiling; the best regions first.</p>{_table_html(table[cols].head(15))}</div>")


def maps_section(result: ResultFolder, model: str, cancel=None) -> str:
    """A model's maps: held-out r, the atoms with declared links (map, peaks, time course), the mask.

    Parameters
    ----------
    result : ResultFolder
    model : str
    cancel : object with ``is_set()``, optional
        Checked before each atom (``CancelledError`` once set).

    Returns
    -------
    str
        HTML (the region table instead of maps for region data).
    """
    if result.is_region_result:
        return _region_block(result, model) + "".join(_atom_blocks(result, model, None, [], cancel))
    template, atlases = _template(result), atlas_lookups(result)
    blocks = [_r_map_block(result, model, template, atlases, cancel)] + _atom_blocks(result, model, template,
                                                                                      atlases, cancel)
    blocks.append(_mask_block(result, model, template))
    return "".join(b for b in blocks if b)
