"""The HTML report of a result folder: one self-contained file a user can send.

The report is a *view* of a finished result folder, like nilearn's ``make_glm_report``
of a fitted model: it reads the folder through :class:`~napari_brainorg.io.results.ResultFolder`
and never refits anything, so it can be rebuilt from any finished folder
(``brainorg report DIR``) and the pipeline writes it last, as ``report.html``.

Everything is inside the one file (figures as base64 PNG, layer histograms as inline
SVG, styles and the small atom selector script inline): it opens offline, and nothing
is fetched from the network.

Sections: the question and the data; a methods paragraph generated from the run's
configuration, with citations; validation (recovery of planted links for simulated
data); per model the R² map, the atom table (size, main layers, top words when the
run saved them, associated networks), a browsable atom viewer (a glass-brain
projection of each atom's map and its layer histogram); the model comparison; the
warnings raised during the run; provenance (versions, configuration).
"""

from __future__ import annotations

import base64
import html
import io
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import __version__
from .io.results import REPORT, ResultFolder

#: references cited by the methods paragraph, by key
REFERENCES = {
    "sun2024": "Sun, H., Zhao, L., Wu, Z., Gao, X., Hu, Y., Zuo, M., Zhang, W., Han, J., Liu, T., "
               "&amp; Hu, X. (2024). Brain-like functional organization within large language models. "
               "arXiv:2410.19542.",
    "nilearn": "Abraham, A., Pedregosa, F., Eickenberg, M., et al. (2014). Machine learning for "
               "neuroimaging with scikit-learn. <i>Frontiers in Neuroinformatics</i> 8, 14 (nilearn).",
    "sklearn": "Pedregosa, F., Varoquaux, G., Gramfort, A., et al. (2011). Scikit-learn: machine learning "
               "in Python. <i>Journal of Machine Learning Research</i> 12, 2825&ndash;2830.",
    "nibabel": "Brett, M., Markiewicz, C. J., Hanke, M., et al. nibabel (software), "
               "doi:10.5281/zenodo.591597.",
    "smith10": "Smith, S. M., Fox, P. T., Miller, K. L., et al. (2009). Correspondence of the brain's "
               "functional architecture during activation and rest. <i>PNAS</i> 106, 13040&ndash;13045.",
    "yeo": "Yeo, B. T. T., Krienen, F. M., Sepulcre, J., et al. (2011). The organization of the human "
           "cerebral cortex estimated by intrinsic functional connectivity. <i>J Neurophysiol</i> 106, "
           "1125&ndash;1165.",
    "schaefer": "Schaefer, A., Kong, R., Gordon, E. M., et al. (2018). Local-global parcellation of the "
                "human cerebral cortex from intrinsic functional connectivity MRI. <i>Cerebral Cortex</i> "
                "28, 3095&ndash;3114.",
    "narratives": "Nastase, S. A., Liu, Y.-F., Hillman, H., et al. (2021). The &ldquo;Narratives&rdquo; "
                  "fMRI dataset for evaluating models of naturalistic language comprehension. "
                  "<i>Scientific Data</i> 8, 250.",
    "mni": "Fonov, V., Evans, A. C., Botteron, K., et al. (2011). Unbiased average age-appropriate "
           "atlases for pediatric studies. <i>NeuroImage</i> 54, 313&ndash;327 (MNI152 template).",
    "glover": "Glover, G. H. (1999). Deconvolution of impulse response in event-related BOLD fMRI. "
              "<i>NeuroImage</i> 9, 416&ndash;429.",
}

_ATLAS_REFS = {"smith10": "smith10", "smith10_thr3": "smith10", "yeo7": "yeo", "yeo17": "yeo",
               "yeo7_liberal": "yeo", "yeo17_liberal": "yeo", "schaefer400_yeo7": "schaefer"}


# ----------------------------------------------------------------------------- warnings


@contextmanager
def record_warnings():
    """Keep a record of the warnings shown while the block runs (they are still shown).

    Yields a list that fills with ``{"category", "message", "source", "count"}`` dicts,
    one per distinct warning that Python's filters let through (the ones a user sees),
    for ``warnings.json`` and the report; ``count`` is how often it was shown (a step
    that loads an atlas several times warns each time).
    """
    caught: list[dict] = []
    seen: dict[tuple, dict] = {}
    previous = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        entry = {"category": getattr(category, "__name__", str(category)), "message": str(message),
                 "source": f"{os.path.basename(str(filename))}:{lineno}"}
        key = tuple(entry.values())
        if key in seen:
            seen[key]["count"] += 1
        else:
            seen[key] = {**entry, "count": 1}
            caught.append(seen[key])
        previous(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
    try:
        yield caught
    finally:
        if warnings.showwarning is showwarning:
            warnings.showwarning = previous


# ----------------------------------------------------------------------------- pieces


def _esc(text) -> str:
    return html.escape(str(text))


def _png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img_file(path: Path | None, alt: str, cls: str = "fig") -> str:
    if path is None or not Path(path).exists():
        return ""
    return f'<img class="{cls}" alt="{_esc(alt)}" src="{_png_data_uri(Path(path).read_bytes())}">'


def _table_html(df, max_rows: int = 200, float_format: str = "{:.3g}") -> str:
    if df is None or len(df) == 0:
        return "<p class='muted'>(empty)</p>"
    df = df.head(max_rows)
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for v in rec:
            if isinstance(v, (float, np.floating)):
                cells.append(f"<td>{'' if np.isnan(v) else float_format.format(v)}</td>")
            else:
                cells.append(f"<td>{_esc(v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


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


# ----------------------------------------------------------------------------- text


def _fmt_list(items) -> str:
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _story_label(story: dict) -> str:
    """A story's name as the result folder uses it: ``name``, else the bundled name or the file's stem."""
    return story.get("name") or Path(str(story.get("path", "?"))).name.split(".")[0]


def methods_paragraph(result: ResultFolder) -> tuple[str, list[str]]:
    """The methods paragraph of ``result`` (HTML) and the reference keys it cites.

    Written from the run's configuration (``provenance.json``) and summary, so the
    numbers in it are the ones the run used: the stimulus, the features, the
    dictionary, the fMRI, several stories, the encoding models and the network tests,
    in that order.
    """
    cfg = result.config()
    s = result.summary
    parts, cites = [], ["sun2024"]
    for write in (_stimulus_sentences, _feature_sentences, _dictionary_sentences, _fmri_sentences,
                  _stories_sentences, _encoding_sentences, _network_sentences):
        sentences, refs = write(cfg, s)
        parts += sentences
        cites += refs
    return " ".join(parts), list(dict.fromkeys(cites))


def _stimulus_sentences(cfg: dict, s: dict) -> tuple[list[str], list[str]]:
    """The stories presented word by word to the models, and the ANs whose responses were recorded.

    Parameters
    ----------
    cfg : dict
        The run's configuration (``provenance.json``).
    s : dict
        The run's summary.

    Returns
    -------
    sentences : list of str
        HTML sentences, in the paragraph's order.
    cites : list of str
        The reference keys they cite, in order.
    """
    from .datasets import list_stories

    feats = cfg.get("features", {})
    parts, cites = [], []
    site = {"ffn_hidden": "the hidden units of each layer's feed-forward network after its nonlinearity",
            "ffn_out": "the outputs of each layer's feed-forward network",
            "residual": "each layer's output hidden state"}.get(feats.get("site", ""), feats.get("site", "?"))
    every_story = cfg.get("stories") or [cfg.get("story", {})]
    bundled_story = all(str(st.get("path", "?")) in list_stories() for st in every_story)
    if bundled_story:
        cites.append("narratives")
    named = _fmt_list(f"&ldquo;{_esc(_story_label(st))}&rdquo;" for st in every_story)
    parts.append(
        f"Following Sun et al. (2024) [sun2024], the {'story' if len(every_story) == 1 else 'stories'} {named}"
        f"{' (Narratives, Nastase et al. 2021 [narratives])' if bundled_story else ''} "
        f"{'was' if len(every_story) == 1 else 'were'} presented word by "
        f"word to {_fmt_list(_esc(m) for m in s.get('models', []))}, and the response of every artificial neuron "
        f"(AN; {site}) to each word (the mean over its sub-word tokens) was recorded.")
    return parts, cites


def _feature_sentences(cfg: dict, s: dict) -> tuple[list[str], list[str]]:
    """How the word responses were brought onto the volumes (an HRF or another operator).

    Parameters and returns as :func:`_stimulus_sentences`.
    """
    story, feats = cfg.get("story", {}), cfg.get("features", {})
    alignment = feats.get("alignment", "glover")
    every_story = cfg.get("stories") or [story]
    parts, cites = [], []
    trs = sorted({st.get("tr", "?") for st in every_story}, key=str)
    tr_text = f"TR {', '.join(str(t) for t in trs)} s"
    volumes = (f"the {story.get('n_volumes', '?')} volumes ({tr_text})" if len(every_story) == 1 else
               f"each story's volumes ({sum(int(st.get('n_volumes', 0)) for st in every_story)} in all, {tr_text})")
    if alignment in ("glover", "spm"):
        cites.append("glover")
        parts.append(
            f"Word responses were placed at the words' onsets, convolved with the canonical "
            f"{'Glover' if alignment == 'glover' else 'SPM'} haemodynamic response function [glover] and sampled "
            f"at {volumes}, then z-scored.")
    else:
        parts.append(f"Word responses were aligned to {volumes} with the {_esc(alignment)} operator, then z-scored.")
    return parts, cites


def _dictionary_sentences(cfg: dict, s: dict) -> tuple[list[str], list[str]]:
    """The sparse dictionary of temporal atoms learned over the ANs.

    Parameters and returns as :func:`_stimulus_sentences`.
    """
    atoms = cfg.get("atoms", {})
    sentence = (
        f"A sparse dictionary of k = {atoms.get('n_atoms', '?')} temporal atoms was learned over all ANs "
        f"(code sparsity &alpha; = {atoms.get('alpha', '?')} on the correlation scale), each AN a sparse "
        f"combination of atoms.")
    return [sentence], []


def _fmri_sentences(cfg: dict, s: dict) -> tuple[list[str], list[str]]:
    """Where the fMRI came from: simulated subjects (and how), a BIDS dataset, NIfTI runs or regions.

    Parameters and returns as :func:`_stimulus_sentences`.
    """
    fmri = cfg.get("fmri", {})
    parts = []
    if fmri.get("simulate"):
        sim = fmri["simulate"]
        drivers = {"atoms": "chosen atoms of the analysed dictionary",
                   "an_mix": "sources mixed from member ANs of atoms (not the atoms themselves)",
                   "relearned": "atoms of a dictionary learned again on a subset of the ANs"}
        fluct = sim.get("fluctuation_atlases") or []
        parts.append(
            f"<b>The fMRI data are SIMULATED</b>: {sim.get('n_subjects', '?')} subjects whose BOLD in chosen "
            f"networks is activated or deactivated by {_esc(drivers.get(sim.get('sources', 'atoms'), 'planted sources'))} "
            f"(true R&sup2; {sim.get('r2_min', '?')}&ndash;{sim.get('r2_max', '?')}; HRF delay within "
            f"&plusmn;{sim.get('hrf_delay_s', 0)} s), with AR(1) noise (&rho; {sim.get('ar1_grey', '?')} in grey "
            f"matter, {sim.get('ar1_other', '?')} elsewhere), spatially smooth"
            + (f", and independent spontaneous fluctuations of the {_esc(', '.join(fluct))} networks in every "
               f"subject" if fluct else "")
            + f", at {sim.get('resolution_mm', '?')} mm; the planted links are the ground truth of the "
              f"validation below.")
    elif fmri.get("bids"):
        parts.append(f"fMRI: the BIDS dataset {_esc(fmri['bids'].get('root', '?'))}.")
    elif fmri.get("images"):
        parts.append(f"fMRI: {len(fmri['images'])} NIfTI run(s) given by the user.")
    elif fmri.get("regions"):
        parts.append(f"fMRI: region time series of {len(fmri['regions'])} subject(s).")
    return parts, []


def _stories_sentences(cfg: dict, s: dict) -> tuple[list[str], list[str]]:
    """How several stories were analysed together (nothing for one story).

    Parameters and returns as :func:`_stimulus_sentences`.
    """
    parts = []
    stories = cfg.get("stories") or []
    if len(stories) > 1:
        names = [_story_label(st) for st in stories]
        scheme = s.get("encoding_scheme", {})
        parts.append(
            f"The subjects heard {len(stories)} stories ({_fmt_list(_esc(n) for n in names)}), each extracted and "
            f"aligned to its own scan; their volumes were analysed one after another, with drifts and nuisance "
            f"regressors per story; the dictionary was learned on "
            f"{_fmt_list(_esc(n) for n in scheme.get('dictionary_stories', names))}"
            + (" (the other stories' atom time courses projected from their ANs with the codes)"
               if scheme.get("dictionary_stories", names) != names else "")
            + (f"; the ridge was also scored leave-one-story-out (trained on the other stories, held-out R&sup2; "
               f"on each story)" if scheme.get("leave_one_story_out") else "")
            + (f"; the atom maps and association tests used {_fmt_list(_esc(n) for n in scheme['map_stories'])}"
               if scheme.get("map_stories") and scheme["map_stories"] != names else "") + ".")
    return parts, []


def _encoding_sentences(cfg: dict, s: dict) -> tuple[list[str], list[str]]:
    """The voxel-wise encoding models, their voxel significance and the per-subject atom maps.

    Parameters and returns as :func:`_stimulus_sentences`.
    """
    enc = cfg.get("encoding", {})
    parts = []
    models = enc.get("models", [])
    enc_parts = []
    if "sparse" in models:
        enc_parts.append(f"the paper's per-voxel lasso on the fixed atoms (&alpha; = {enc.get('sparse_alpha', '?')}, "
                         f"in-sample R&sup2;)")
    if "ridge" in models:
        enc_parts.append(f"a ridge regression cross-validated over {enc.get('n_folds', '?')} contiguous folds "
                         f"with a gap of {enc.get('gap', '?')} volumes (penalty chosen per voxel by an inner "
                         f"cross-validation; held-out R&sup2;)")
    hp = enc.get("highpass_cutoff")
    parts.append(
        f"Voxel-wise encoding models were fitted with {_fmt_list(enc_parts) or 'the configured models'}"
        f"{f', after a cosine high-pass filter ({hp} s) applied to fMRI and atoms alike' if hp else ''}, "
        f"using scikit-learn [sklearn], nilearn [nilearn] and nibabel [nibabel].")
    if enc.get("n_permutations"):
        parts.append(f"Voxel significance came from {enc['n_permutations']} circular shifts of the atoms, with "
                     f"Benjamini&ndash;Hochberg FDR control.")
    noise = enc.get("noise_model", "ols")
    confounds = enc.get("confounds", False)
    parts.append(
        f"Per subject, the map of every atom was the z of its coefficient in a "
        f"{'generalised least-squares fit with each voxel' + chr(39) + 's AR(1) noise' if noise == 'ar1' else 'least-squares fit'}"
        f" of all atoms together{', with the story' + chr(39) + 's nuisance regressors (word rate, length, frequency, pauses)' if confounds else ''}"
        f"; subjects were combined by "
        f"{ {'random': 'random effects (one-sample t over subjects)', 'fixed': 'fixed effects (Stouffer)', None: 'fixed effects (Stouffer)'}.get(enc.get('group_effects'), 'random effects from ' + str(enc.get('min_subjects_random', 6)) + ' subjects on, fixed effects (Stouffer) below') }.")
    return parts, ["sklearn", "nilearn", "nibabel"]


def _network_sentences(cfg: dict, s: dict) -> tuple[list[str], list[str]]:
    """The test of every atom against every network of the atlases, and what was called associated.

    Parameters and returns as :func:`_stimulus_sentences`.
    """
    nets = cfg.get("networks", {})
    atlases = nets.get("atlases", [])
    atlas_cites = []
    for a in atlases:
        key = _ATLAS_REFS.get(str(a))
        if key and key not in atlas_cites:
            atlas_cites.append(key)
    cites = atlas_cites + ["mni"]
    atlas_text = (f"{_fmt_list(_esc(a) for a in atlases)}"
                  f"{' [' + '], ['.join(atlas_cites) + ']' if atlas_cites else ''} in MNI152 space [mni]")
    if nets.get("test", "spatial") == "stimulus":
        return [_stimulus_test_sentence(nets, s, atlas_text)], cites
    return [_spatial_test_sentence(nets, atlas_text)], cites


def _stimulus_test_sentence(nets: dict, s: dict, atlas_text: str) -> str:
    """The stimulus-locked test: each atom's effect on each network's time series against phase-randomised or shifted atoms.

    Parameters
    ----------
    nets : dict
        The configuration's ``networks`` part.
    s : dict
        The run's summary (what the networks step recorded, under ``networks``).
    atlas_text : str
        The atlases, named and cited (HTML).

    Returns
    -------
    sentence : str
        HTML.
    """
    n_draws = nets.get("n_permutations")
    # what the networks step recorded (test.json, in the summary) over the configuration
    record = next(iter((s.get("networks") or {}).values()), None) or {}
    n_draws = record.get("n_permutations") or (10_000 if n_draws is None else n_draws)
    if record.get("n_refine"):
        n_draws = f"{n_draws} (+{record['n_refine']} for the cells that none of them reached)"
    null = {"phase": "phase-randomised", "shift": "circularly shifted"}.get(nets.get("null", "phase"), "transformed")
    return (
        f"Each atom was tested against each functional brain network of {atlas_text}: its "
        f"{'unique ' if nets.get('contribution', 'unique') == 'unique' else ''}coefficient on the network's "
        f"{'mean' if nets.get('network_score', 'mean') == 'mean' else 'inside-minus-outside'} time series, "
        f"against {n_draws} draws of {null} atoms (the same draw for every subject, every subject refitted"
        + {"conditional": "; only the tested atom's unique part moved, the other atoms kept (a conditional "
                          "randomisation test), the subjects' mean effect over its between-subject standard error",
           "auto": "; with random effects only the tested atom's unique part moved, the other atoms kept (a "
                   "conditional randomisation test), the subjects' mean effect over its between-subject "
                   "standard error; with fixed effects every atom moved together",
           "all": "; every atom moved together",
           "unique": "; the tested atom's unique part moved against the full model's residual"}.get(
               str(record.get("moved") or nets.get("moved", "auto")), "")
        + "); "
        f"an atom and a network were called associated when q &lt; {nets.get('alpha', '?')} "
        f"(Benjamini&ndash;Hochberg over "
        f"{_esc(record['fdr_family']).replace(' x ', ' &times; ') if record.get('fdr_family') else 'atoms &times; networks &times; directions'}"
        f"), the effect was at least "
        f"{nets.get('min_effect', '?')} and at least {nets.get('min_relative_effect', '?')} of the atom's "
        f"largest effect in the atlas"
        + (f", at least {nets['min_network_relative_effect']} of the largest effect among the atoms declared for "
           "the network" if nets.get("min_network_relative_effect") else "")
        + (f", and the atom's time course correlated with the network's mean time series in the link's "
           f"direction, at least {nets['min_network_relative_marginal']} of the best atom's correlation"
           if nets.get("min_network_relative_marginal") else "")
        + f". Maps are shown thresholded at |z| &gt; {nets.get('threshold', '?')}.")


def _spatial_test_sentence(nets: dict, atlas_text: str) -> str:
    """The spatial test: each atom's group map against each network, with spatially moved maps as null.

    Parameters
    ----------
    nets : dict
        The configuration's ``networks`` part.
    atlas_text : str
        The atlases, named and cited (HTML).

    Returns
    -------
    sentence : str
        HTML.
    """
    n_draws = nets.get("n_permutations")
    n_draws = 500 if n_draws is None else n_draws
    return (
        f"Each atom's group map ({_esc(nets.get('map_stat', 'z'))}, thresholded at |z| &gt; "
        f"{nets.get('threshold', '?')}) was compared with the functional brain networks of {atlas_text} by its "
        f"{_esc(str(nets.get('score', 'overlap_rate')).replace('_', ' '))}, with a permutation null of "
        f"{n_draws} spatially moved maps; an atom and a network were called associated when "
        f"q &lt; {nets.get('alpha', '?')} (Benjamini&ndash;Hochberg over atom &times; network tests) and the "
        f"score was at least {nets.get('min_score', '?')}.")


# ----------------------------------------------------------------------------- sections


def _atom_viewer(result: ResultFolder, model: str, section_id: str) -> str:
    """The atom selector: a glass-brain projection and a layer histogram per atom."""
    img = result.atom_maps(model, stat="z")
    stat = "z"
    if img is None:
        img, stat = result.atom_maps(model, stat="coef"), "coef"
    hist = result.layer_histogram(model)
    atoms_tab = result.atoms_table(model)
    top = result.top_words(model)
    if img is None:
        return "<p class='muted'>This run has no voxel maps (region time series): no atom maps to show.</p>"
    mask_img = result.mask_img(model)
    background = None if mask_img is None else np.asarray(mask_img.dataobj) > 0
    data = img.dataobj
    k = img.shape[3] if len(img.shape) == 4 else 1
    threshold = float(result.config().get("networks", {}).get("threshold", 2.3)) if stat == "z" else 0.0
    # the viewer opens on the first atom linked to a network (an unlinked atom's map is mostly noise)
    linked = []
    if atoms_tab is not None:
        for part in ("activated", "deactivated"):
            col = f"networks_{part}"
            if col in atoms_tab.columns:
                linked += [int(a) for a, n in zip(atoms_tab["atom"], atoms_tab[col]) if str(n or "").strip()]
    first = min(linked) if linked else 0
    options, panels = [], []
    for atom in range(k):
        vol = np.nan_to_num(np.asarray(data[..., atom], dtype=np.float32))
        vmax = float(np.percentile(np.abs(vol[vol != 0]), 99.5)) if np.any(vol) else 1.0
        if stat == "coef":
            nz = np.abs(vol[vol != 0])
            threshold_a = float(np.median(nz)) if nz.size else 0.0
        else:
            threshold_a = threshold
        png = _glass_projections(vol, img.affine, background, max(vmax, threshold_a * 1.5), threshold_a)
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
                info.append(f"top words: {_esc(words)}")
        counts = hist.loc[atom].to_numpy() if hist is not None and atom in hist.index else []
        label = f"atom {atom}"
        option = label + (" (linked to a network)" if atom in linked else "")
        options.append(f'<option value="{atom}"{" selected" if atom == first else ""}>{_esc(option)}</option>')
        panels.append(
            f'<div class="atom" data-atom="{atom}"{"" if atom == first else " hidden"}>'
            f'<img class="glass" alt="{_esc(model)} atom {atom} glass brain" src="{_png_data_uri(png)}">'
            f'<div class="atominfo"><b>{label}</b> ({_esc(stat)} map, |{_esc(stat)}| &ge; {threshold_a:.3g} shown; '
            f'sagittal, coronal, axial maximum projections, red positive, blue negative)<br>'
            f'{"<br>".join(info)}<div>layer histogram of the atom&rsquo;s ANs:</div>{_svg_bars(counts)}</div></div>')
    return (f'<div class="viewer" id="{section_id}-viewer"><label>Atom <select class="atomselect" '
            f'data-target="{section_id}-viewer">{"".join(options)}</select></label>'
            f'<button type="button" class="prev">&larr;</button><button type="button" class="next">&rarr;</button>'
            f'{"".join(panels)}</div>')


def _top_words_of(top, atom: int, n: int = 8) -> str:
    rows = top[top["atom"] == atom]
    if "word" not in rows.columns:
        return ""
    if "direction" in rows.columns:  # the words that drive the atom up (not those that suppress it)
        rows = rows[rows["direction"].astype(str) == "activate"]
    if "rank" in rows.columns:
        rows = rows.sort_values("rank")
    # one entry per word (a frequent word may be among the top responses several times)
    return ", ".join(list(dict.fromkeys(rows["word"].astype(str)))[:n])


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


def _model_section(result: ResultFolder, model: str, n: int) -> str:
    sid = f"model-{n}"
    info = result.summary.get("results", {}).get(model, {})
    head = ""
    if info:
        r2k = info.get("r2_kind", "r2")
        med, p95 = info.get("r2_median"), info.get("r2_p95")
        head = (f"<p>{info.get('n_ans', '?')} ANs, {info.get('n_atoms', '?')} atoms; {_esc(r2k)}: median "
                f"{med:.3f}, 95th percentile {p95:.3f}; associations: "
                f"{_esc(info.get('n_associations', {}))}.</p>" if med is not None else "")
    r2_fig = result.figure(f"{model}_r2_cv") or result.figure(f"{model}_r2_sparse")
    figs = [(_img_file(r2_fig, f"{model} R2 map"), "R² map (group)")]
    for name, caption in ((f"{model}_layer_histograms", "layer histograms of the atoms"),
                          (f"{model}_atom_correlation", "atom time-course correlations")):
        figs.append((_img_file(result.figure(name), caption), caption))
    for p in result.figures():
        if p.stem.startswith(f"{model}_") and p.stem.endswith("_association.png"[:-4]):
            figs.append((_img_file(p, p.stem), p.stem.replace(f"{model}_", "").replace("_", " ")))
    fig_html = "".join(f"<figure>{img}<figcaption>{_esc(c)}</figcaption></figure>" for img, c in figs if img)
    assoc = []
    for part in ("activated", "deactivated"):
        t = result.associations(model, part)
        if t is not None and "associated" in t.columns:
            t = t[t["associated"].astype(bool)]
            cols = [c for c in ("atom", "atlas", "network", "overlap_rate", "statistic", "p", "q") if c in t.columns]
            assoc.append(f"<h4>Associated networks ({part})</h4>{_table_html(t[cols])}")
    return (f'<section id="{sid}"><h2>Model {_esc(model)}</h2>{head}<div class="figs">{fig_html}</div>'
            f"<h3>Atoms</h3>{_atom_viewer(result, model, sid)}"
            f"<details><summary>Atom table</summary>{_atom_table(result, model)}</details>"
            f"{''.join(assoc)}</section>")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:1.5em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0;display:block;overflow-x:auto;max-width:100%}td,th{border:1px solid #ddd;padding:2px 6px;
text-align:left}th{background:#f3f3f3}.muted{color:#888}.banner{background:#fff3cd;border:1px solid #e0c36b;
padding:.6em 1em;border-radius:4px}.figs{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0;max-width:520px}
figure img,.fig{max-width:100%}figcaption{font-size:.85em;color:#555}.atom{display:flex;gap:1em;
align-items:flex-start;flex-wrap:wrap;margin-top:.5em}.atom[hidden]{display:none}.glass{image-rendering:pixelated;
border:1px solid #eee;max-width:640px}.atominfo{font-size:.9em;max-width:420px}pre{background:#f6f6f6;padding:.6em;
overflow:auto;font-size:.8em}.warn{background:#fdecea;border-left:4px solid #d9534f;padding:.3em .6em;margin:.3em 0;
font-size:.9em}nav a{margin-right:1em}
"""

_JS = """
document.querySelectorAll('.viewer').forEach(function(v){
  var sel=v.querySelector('.atomselect');
  function show(i){v.querySelectorAll('.atom').forEach(function(p){p.hidden=(p.dataset.atom!==String(i));});
    sel.value=String(i);}
  sel.addEventListener('change',function(){show(sel.value);});
  v.querySelector('.prev').addEventListener('click',function(){show(Math.max(0,sel.selectedIndex-1));});
  v.querySelector('.next').addEventListener('click',function(){
    show(Math.min(sel.options.length-1,sel.selectedIndex+1));});
});
"""


def build_report(result: ResultFolder | str | os.PathLike) -> str:
    """The report of a result folder as one HTML string (nothing is refitted).

    Parameters
    ----------
    result : ResultFolder or path
        A finished result folder (it holds ``summary.json``).

    Returns
    -------
    str
        A complete, self-contained HTML document.
    """
    if not isinstance(result, ResultFolder):
        result = ResultFolder(result)
    s = result.summary
    cfg = result.config()
    models = result.models
    title = f"napari-brainorg report: {Path(result.path).resolve().name}"
    banner = ("<p class='banner'><b>SIMULATED fMRI.</b> The subjects of this run are simulated with a "
              "known ground truth (planted atom &rarr; network links); no real brain data was analysed.</p>"
              if result.simulated else "")
    fmri = s.get("fmri", {})
    data_rows = [
        ("story", cfg.get("story", {}).get("path", "?")) if not cfg.get("stories") or len(cfg["stories"]) < 2 else
        ("stories", ", ".join(f"{st.get('story')} ({st.get('n_volumes')} volumes)" for st in s.get("stories", []))),
        ("volumes", f"{s.get('n_volumes', '?')} at TR {s.get('tr', '?')} s"),
        ("language models", ", ".join(f"{m} ({s.get('model_sources', {}).get(m, m)})" for m in models)),
        ("fMRI", "SIMULATED subjects" if result.simulated else (fmri.get("source") or fmri.get("kind") or "user data")),
        ("subjects", fmri.get("n_subjects", cfg.get("fmri", {}).get("simulate", {}) and
                     cfg["fmri"]["simulate"].get("n_subjects", "?"))),
        ("atlases", ", ".join(result.atlas_names())),
        ("wall time", f"{s.get('wall_time_s', '?')} s"),
    ]
    data_html = "<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in data_rows) + "</table>"
    methods, cites = methods_paragraph(result)
    for i, key in enumerate(cites, 1):
        methods = methods.replace(f"[{key}]", f'<a href="#ref-{key}">[{i}]</a>')
    refs = "".join(f'<li id="ref-{k}">{REFERENCES[k]}</li>' for k in cites)

    rec = result.recovery()
    if rec:
        rec_rows = {k: v for k, v in rec.items() if not isinstance(v, (dict, list))}
        validation = ("<p>The planted atom &rarr; network links (the simulation's ground truth) against the "
                      "associations the analysis declared, blind to the truth:</p>"
                      + "<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>"
                                            for k, v in rec_rows.items()) + "</table>")
        for key in ("planted", "found", "missed", "false_positives"):
            if isinstance(rec.get(key), (list, dict)) and rec[key]:
                validation += f"<p><b>{_esc(key)}</b>: {_esc(rec[key])}</p>"
    else:
        validation = ("<p class='muted'>Real data: there is no ground truth. Held-out R&sup2; of the "
                      "cross-validated model and the permutation nulls are the validation.</p>")

    model_sections = "".join(_model_section(result, m, i) for i, m in enumerate(models))
    comp = result.comparison_tables()
    comp_html = "".join(f"<h3>{_esc(name)}</h3>{_table_html(t)}" for name, t in comp.items())
    comp_fig = _img_file(result.figure("models_comparison"), "models side by side")
    comparison = (f"<section id='comparison'><h2>Model comparison</h2>{comp_fig}{comp_html}</section>"
                  if comp or comp_fig else "")

    warns = result.run_warnings()
    warn_html = ("".join(f"<div class='warn'><b>{_esc(w.get('category', 'Warning'))}</b>: {_esc(w.get('message', ''))}"
                         f"{' <span class=muted>(' + _esc(w['source']) + ')</span>' if w.get('source') else ''}"
                         f"{' <span class=muted>×' + str(int(w['count'])) + '</span>' if w.get('count', 1) > 1 else ''}</div>"
                         for w in warns) if warns else "<p class='muted'>No warnings were raised during the run.</p>")

    prov = result.provenance()
    versions = prov.get("versions", {})
    prov_html = (_table_html(__import__("pandas").DataFrame({"package": list(versions), "version": list(versions.values())}))
                 if versions else "")
    prov_html += (f"<p>Seed: {_esc(prov.get('seed', '?'))}. Report written by napari-brainorg {__version__} from the "
                  f"result folder <code>{_esc(Path(result.path).resolve())}</code> (a view of its files; nothing "
                  f"was refitted).</p><details><summary>Configuration (config.yaml)</summary>"
                  f"<pre>{_esc(result.config_text())}</pre></details>")
    timings = s.get("timings_s")
    if timings:
        prov_html += "<details><summary>Step timings (s)</summary>" + _esc(timings) + "</details>"

    nav = ("<nav><a href='#data'>Data</a><a href='#methods'>Methods</a><a href='#validation'>Validation</a>"
           + "".join(f"<a href='#model-{i}'>{_esc(m)}</a>" for i, m in enumerate(models))
           + ("<a href='#comparison'>Comparison</a>" if comparison else "")
           + "<a href='#warnings'>Warnings</a><a href='#provenance'>Provenance</a></nav>")
    question = ("Do the artificial neurons of these language models organise into sub-groups (atoms) whose "
                "time courses, mapped onto the brain, line up with known functional brain networks, and how "
                "do the models compare?")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title><style>{_CSS}</style></head>
<body><h1>{_esc(title)}</h1>{banner}{nav}
<section id="data"><h2>Question and data</h2><p>{question}</p>{data_html}</section>
<section id="methods"><h2>Methods</h2><p>{methods}</p><h3>References</h3><ol>{refs}</ol></section>
<section id="validation"><h2>Validation</h2>{validation}</section>
{model_sections}
{comparison}
<section id="warnings"><h2>Warnings raised during the run</h2>{warn_html}</section>
<section id="provenance"><h2>Provenance</h2>{prov_html}</section>
<script>{_JS}</script>
</body></html>
"""


def write_report(result: ResultFolder | str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the report of ``result`` (default ``<result>/report.html``) atomically; return its path."""
    from .io.results import atomic_path

    if not isinstance(result, ResultFolder):
        result = ResultFolder(result)
    target = Path(out) if out is not None else result.path / REPORT
    text = build_report(result)
    with atomic_path(target, ".html") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target
