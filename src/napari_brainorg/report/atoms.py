"""The atom viewer: every atom's glass-brain projection, layer histogram, networks and words.

A selector browses the atoms one at a time (a small inline script); the projections are
drawn here from the group map with numpy (no template, fast for every atom), while the
MNI-template maps of :mod:`.maps` show the atoms with declared links in full.
"""

from __future__ import annotations

import io

import numpy as np

from .._progress import check_cancel
from ..io.results import ResultFolder
from ._html import _esc, _png_data_uri, _table_html, num


def _svg_bars(counts, width: int = 260, height: int = 70, color: str = "#4c72b0") -> str:
    """A small inline SVG bar chart of ``counts`` (one bar per layer)."""
    counts = np.asarray(counts, float)
    n = max(len(counts), 1)
    top = counts.max() if counts.size and counts.max() > 0 else 1.0
    bw = width / n
    bars = []
    for i, c in enumerate(counts):
        h = (height - 14) * c / top
        bars.append(f'<rect x="{i * bw + 1:.1f}" y="{height - 12 - h:.1f}" width="{max(bw - 2, 1):.1f}" '
                    f'height="{h:.1f}" fill="{color}"><title>layer {i}: {int(c)} ANs</title></rect>')
    labels = "".join(f'<text x="{i * bw + bw / 2:.1f}" y="{height - 1}" font-size="9" '
                     f'text-anchor="middle">{i}</text>' for i in range(n) if n <= 40 or i % 4 == 0)
    return (f'<svg class="hist" role="img" aria-label="layer histogram" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">{"".join(bars)}{labels}</svg>')


def _glass_projections(volume: np.ndarray, affine: np.ndarray, background: np.ndarray | None,
                       vmax: float, threshold: float) -> bytes:
    """PNG of a map's maximum-intensity projections (sagittal, coronal, axial), signed.

    Each pixel shows the voxel of largest absolute value along the projection ray (red
    positive, blue negative), above ``threshold``, over the projection of the brain mask
    ``background`` (grey). Orientation follows the affine: anterior to the right in the
    sagittal view, the subject's right on the right in coronal and axial views.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import colormaps

    # voxel axes -> RAS world axes (the grids are axis-aligned: bundled and simulated data)
    codes = np.argmax(np.abs(affine[:3, :3]), axis=0)  # voxel axis a -> world axis codes[a]
    order = np.argsort(codes)
    vol = np.transpose(volume, order)
    bg = None if background is None else np.transpose(background, order)
    for ax in range(3):  # axis ax of ``vol`` is world axis ax; make it increase (RAS)
        if affine[ax, order[ax]] < 0:
            vol = np.flip(vol, axis=ax)
            bg = None if bg is None else np.flip(bg, axis=ax)
    cmap = colormaps["RdBu_r"]
    panels = []
    for axis in (0, 1, 2):  # sagittal (over x), coronal (over y), axial (over z)
        idx = np.abs(vol).argmax(axis=axis)
        proj = np.take_along_axis(vol, np.expand_dims(idx, axis), axis).squeeze(axis)
        # transpose: rows follow the later world axis (z, or y for axial), top = superior/anterior
        proj2 = proj.T[::-1]
        rgba = np.ones(proj2.shape + (4,), float)
        if bg is not None:
            rgba[(bg > 0).any(axis=axis).T[::-1], :3] = 0.86
        colored = cmap(np.clip(0.5 + 0.5 * proj2 / (vmax or 1.0), 0, 1))
        show = np.abs(proj2) >= threshold
        rgba[show] = colored[show]
        panels.append(rgba)
    h = max(p.shape[0] for p in panels)
    gap = np.ones((h, 3, 4))
    padded = []
    for p in panels:
        pad = np.ones((h, p.shape[1], 4))
        pad[h - p.shape[0]:] = p
        padded.extend([pad, gap])
    canvas = np.concatenate(padded[:-1], axis=1)
    # upsample nearest so a 4-6 mm grid is legible
    scale = max(1, int(round(160 / h)))
    canvas = canvas.repeat(scale, axis=0).repeat(scale, axis=1)
    buf = io.BytesIO()
    import matplotlib.pyplot as plt

    plt.imsave(buf, canvas, format="png")
    return buf.getvalue()



def declared_links(result: ResultFolder, model: str):
    """Every declared atom-network link of a model, both directions (``part`` says which).

    Returns
    -------
    DataFrame or None
        The associated rows of ``networks/<model>/association_{activated,deactivated}.tsv``;
        ``None`` when the run tested no network.
    """
    import pandas as pd

    parts = []
    for part in ("activated", "deactivated"):
        t = result.associations(model, part)
        if t is not None and "associated" in t.columns:
            parts.append(t[t["associated"].astype(bool)].assign(part=part))
    return pd.concat(parts, ignore_index=True) if parts else None


def linked_atoms(atoms_tab) -> list[int]:
    """The atoms with at least one declared network link (``atoms.tsv``'s network columns), sorted."""
    linked: set[int] = set()
    if atoms_tab is not None:
        for part in ("activated", "deactivated"):
            col = f"networks_{part}"
            if col in atoms_tab.columns:
                linked |= {int(a) for a, n in zip(atoms_tab["atom"], atoms_tab[col]) if str(n or "").strip()}
    return sorted(linked)


def atom_description(result: ResultFolder, model: str, atom: int, atoms_tab=None, top=None,
                     means=None) -> list[str]:
    """Lines (HTML) that say what an atom is: its ANs and layers, its networks, its words.

    Parameters
    ----------
    result : ResultFolder
    model : str
    atom : int
    atoms_tab, top, means : tables, optional
        ``atoms.tsv``, ``top_words.tsv`` and :func:`_word_type_means` when already read.

    Returns
    -------
    list of str
    """
    info = []
    if atoms_tab is not None and atom in set(atoms_tab["atom"]):
        row = atoms_tab[atoms_tab["atom"] == atom].iloc[0]
        info.append(f"{int(row.get('n_ans', 0))} ANs; main layers {_esc(row.get('main_layers', ''))}")
        for part in ("activated", "deactivated"):
            nets = str(row.get(f"networks_{part}", "") or "")
            info.append(f"{part}: {_esc(nets) if nets else '<span class=muted>no network</span>'}")
    if top is not None and "atom" in top.columns:
        words = _top_words_of(top, atom)
        if words:
            info.append(f"top words: {_esc(words)} <span class=muted>(the words of its strongest "
                        f"responses)</span>")
    typical = _typical_words(means, atom)
    if typical:
        info.append(f"words that drive it on average: {_esc(typical)} <span class=muted>(mean response per "
                    f"word heard at least 3 times)</span>")
    return info


def _atom_viewer(result: ResultFolder, model: str, section_id: str, cancel=None) -> str:
    """The atom selector: a glass-brain projection, a description and a layer histogram per atom
    (``cancel`` checked before each)."""
    img = result.atom_maps(model, stat="z")
    stat = "z"
    if img is None:
        img, stat = result.atom_maps(model, stat="coef"), "coef"
    if img is None:
        return "<p class='muted'>This run has no voxel maps (region time series): no atom maps to show.</p>"
    hist = result.layer_histogram(model)
    atoms_tab, top, means = result.atoms_table(model), result.top_words(model), _word_type_means(result, model)
    mask_img = result.mask_img(model)
    background = None if mask_img is None else np.asarray(mask_img.dataobj) > 0
    # read once: each slice of a gzipped 4D image's proxy decompresses the file from its start
    data = np.asarray(img.dataobj, dtype=np.float32)
    k = img.shape[3] if len(img.shape) == 4 else 1
    threshold = float(result.config().get("networks", {}).get("threshold", 2.3)) if stat == "z" else 0.0
    # the viewer opens on the first atom linked to a network (an unlinked atom's map is mostly noise)
    linked = linked_atoms(atoms_tab)
    first = linked[0] if linked else 0
    options, panels = [], []
    for atom in range(k):
        check_cancel(cancel)
        vol = np.nan_to_num(data[..., atom] if data.ndim == 4 else data)
        vmax = float(np.percentile(np.abs(vol[vol != 0]), 99.5)) if np.any(vol) else 1.0
        if stat == "coef":
            nz = np.abs(vol[vol != 0])
            threshold_a = float(np.median(nz)) if nz.size else 0.0
        else:
            threshold_a = threshold
        png = _glass_projections(vol, img.affine, background, max(vmax, threshold_a * 1.5), threshold_a)
        info = atom_description(result, model, atom, atoms_tab, top, means)
        counts = hist.loc[atom].to_numpy() if hist is not None and atom in hist.index else []
        label = f"atom {atom}"
        option = label + (" (linked to a network)" if atom in linked else "")
        options.append(f'<option value="{atom}"{" selected" if atom == first else ""}>{_esc(option)}</option>')
        panels.append(
            f'<div class="atom" data-atom="{atom}"{"" if atom == first else " hidden"}>'
            f'<img class="glass" alt="{_esc(model)} atom {atom} glass brain" src="{_png_data_uri(png)}">'
            f'<div class="atominfo"><b>{label}</b> ({_esc(stat)} map, |{_esc(stat)}| &ge; {num(threshold_a)} '
            f'shown; maximum projections: sagittal (anterior to the right), coronal and axial (the '
            f'subject&rsquo;s right on the right); red positive, blue negative, full colour at |{_esc(stat)}| '
            f'= {num(max(vmax, threshold_a * 1.5))}; the brain mask in grey)<br>'
            f'{"<br>".join(info)}<div>layer histogram of the atom&rsquo;s ANs:</div>{_svg_bars(counts)}</div></div>')
    return (f'<div class="viewer" id="{section_id}-viewer"><label>Atom <select class="atomselect" '
            f'data-target="{section_id}-viewer">{"".join(options)}</select></label>'
            f'<button type="button" class="prev">&larr;</button><button type="button" class="next">&rarr;</button>'
            f'{"".join(panels)}</div>')


def _top_words_of(top, atom: int, n: int = 8) -> str:
    """The words with the atom's strongest responses, by rank, each once (``I ×15`` when one
    word fills several of the top places)."""
    rows = top[top["atom"] == atom]
    if "word" not in rows.columns:
        return ""
    if "direction" in rows.columns:  # the words that drive the atom up (not those that suppress it)
        rows = rows[rows["direction"].astype(str) == "activate"]
    if "rank" in rows.columns:
        rows = rows.sort_values("rank")
    # one entry per word (a frequent word may be among the top responses several times)
    counts: dict[str, int] = {}  # lower case: "And" and "and" are one word
    shown: dict[str, str] = {}
    for word in rows["word"].astype(str):
        key = word.lower()
        counts[key] = counts.get(key, 0) + 1
        shown.setdefault(key, word)
    return ", ".join(f"{shown[w]} ×{c}" if c > 1 else shown[w] for w, c in list(counts.items())[:n])


def _word_type_means(result: ResultFolder, model: str, min_count: int = 3):
    """Each atom's mean response per word type (lower case, heard at least ``min_count`` times).

    Returns
    -------
    DataFrame or None
        Index: word types; columns: atoms; ``None`` when the run saved no word responses.
    """
    import pandas as pd

    responses = result.word_responses(model)
    words = result.words_table()
    if responses is None or words is None or len(words) != responses.shape[0] or "word" not in words:
        return None
    types = words["word"].astype(str).str.lower().str.strip(".,;:!?\"'")
    frame = pd.DataFrame(np.asarray(responses, float), index=types.to_numpy())
    grouped = frame.groupby(level=0)
    means = grouped.mean()
    return means[grouped.size() >= min_count]


def _typical_words(means, atom: int, n: int = 8) -> str:
    """The word types that drive ``atom`` most on average (from :func:`_word_type_means`)."""
    if means is None or atom not in means.columns:
        return ""
    best = means[atom].sort_values(ascending=False)
    return ", ".join(best.index[:n][best.iloc[:n] > 0])


def _atom_table(result: ResultFolder, model: str) -> str:
    tab = result.atoms_table(model)
    if tab is None:
        return ""
    tab = tab.copy()
    top = result.top_words(model)
    if top is not None and "atom" in top.columns:
        tab.insert(3 if tab.shape[1] > 3 else tab.shape[1], "top_words", [_top_words_of(top, a, 6) for a in tab["atom"]])
    keep = [c for c in ("atom", "n_ans", "main_layers", "top_words", "networks_activated",
                        "networks_deactivated", "best_score") if c in tab.columns]
    return _table_html(tab[keep])

