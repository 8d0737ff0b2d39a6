"""The report's methods paragraph, written from a run's configuration, and its references.

:func:`methods_paragraph` reads only ``provenance.json`` and ``summary.json`` of a result
folder, so the numbers it states are the ones the run used; each part of the analysis
(stimulus, features, dictionary, fMRI, stories, encoding, networks) has its own writer,
and every writer returns the reference keys it cites (:data:`REFERENCES`).
"""

from __future__ import annotations

from pathlib import Path

from ..io.results import ResultFolder
from ._html import _esc

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
    "mni": "Grabner, G., Janke, A. L., Budge, M. M., Smith, D., Pruessner, J., &amp; Collins, D. L. (2006). "
           "Symmetric atlasing and model based segmentation: an application to the hippocampus in older "
           "adults. <i>MICCAI 2006</i>, LNCS 4191, 58&ndash;66 (the MNI152 nonlinear 6th-generation template, "
           "as distributed with FSL).",
    "besag": "Besag, J., &amp; Clifford, P. (1991). Sequential Monte Carlo p-values. <i>Biometrika</i> 78, "
             "301&ndash;304.",
    "fsl": "Jenkinson, M., Beckmann, C. F., Behrens, T. E. J., Woolrich, M. W., &amp; Smith, S. M. (2012). "
           "FSL. <i>NeuroImage</i> 62, 782&ndash;790.",
    "neuroparc": "Lawrence, R. M., Bridgeford, E. W., Myers, P. E., et al. (2021). Standardizing human brain "
                 "parcellations. <i>Scientific Data</i> 8, 78 (neuroparc: the Yeo and Schaefer atlases on the "
                 "MNI152NLin6 grid).",
    "glover": "Glover, G. H. (1999). Deconvolution of impulse response in event-related BOLD fMRI. "
              "<i>NeuroImage</i> 9, 416&ndash;429.",
}

_ATLAS_REFS = {"smith10": "smith10", "smith10_thr3": "smith10", "yeo7": "yeo", "yeo17": "yeo",
               "yeo7_liberal": "yeo", "yeo17_liberal": "yeo", "schaefer400_yeo7": "schaefer"}




def _fmt_list(items) -> str:
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _story_label(story: dict) -> str:
    """A story's name as the result folder uses it: ``name``, else the bundled name or the file's stem."""
    return story.get("name") or Path(str(story.get("path", "?"))).name.split(".")[0]


def _atlas_label(atlas) -> str:
    """An atlas as the paragraph names it: a bundled name, or a user's file by its name (no machine path)."""
    text = str(atlas)
    return Path(text).name if ("/" in text or "\\" in text) else text


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
    from ..datasets import list_stories

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
    if feats.get("center_words"):
        parts.append("Before that, each artificial neuron's mean activation over the story's words was removed "
                     "(centred word activations, features.center_words; the paper places the raw activations, "
                     "which also carry the word rate).")
    else:
        parts.append("The word activations were placed as they are, as in the paper (not centred; "
                     "features.center_words).")
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
        parts.append(f"fMRI: the BIDS dataset {_esc(Path(str(fmri['bids'].get('root', '?'))).name)}.")
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
            + ("; the ridge was also scored leave-one-story-out (trained on the other stories, held-out R&sup2; "
               "on each story)" if scheme.get("leave_one_story_out") else "")
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
    if any("shown" in m for m in s.get("maps", {}).values()):
        parts.append(
            "The group atom maps shown (atom_maps_z) are calibrated like the network test, since a t over subjects "
            "cannot tell a chance correlation with a signal every subject shares (the story) from an effect: in each "
            "voxel, the lock of the atom's unique part with the subjects' mean standardised time series (drifts, "
            "confounds and the other atoms removed) was set against the null mean and standard deviation of the "
            "same lock for phase-randomised atoms (every frequency's phase uniform, each story on its own; sums over "
            "frequencies, no draw made), as a z whose light tails were corrected by their fourth cumulant; the "
            "subjects' combination above is kept as atom_maps_z_uncalibrated.")
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
    # the bundled Yeo and Schaefer volumes are neuroparc's resampling onto the MNI152NLin6 grid
    grid_cites = (["neuroparc"] if any(_ATLAS_REFS.get(str(a)) in ("yeo", "schaefer") for a in atlases) else [])
    cites = atlas_cites + grid_cites + ["mni", "fsl"]
    atlas_text = (f"{_fmt_list(_esc(_atlas_label(a)) for a in atlases)}"
                  f"{' [' + '], ['.join(atlas_cites + grid_cites) + ']' if atlas_cites else ''} on FSL's MNI152 "
                  f"template (nonlinear 6th generation, 2 mm) [mni], [fsl]")
    if nets.get("test", "spatial") == "stimulus":
        record = next(iter((s.get("networks") or {}).values()), None) or {}
        sequential = record.get("sequential_h") and nets.get("null", "phase") == "phase"
        return [_stimulus_test_sentence(nets, s, atlas_text)], cites + (["besag"] if sequential else [])
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
    h = record.get("sequential_h") if nets.get("null", "phase") == "phase" else 0
    if record.get("n_refine"):
        n_draws = (f"{n_draws} (+{record['n_refine']} for the cells that none of them reached"
                   + (", unless the FDR already declared them at that floor)" if h else ")"))
    # Besag & Clifford's sequential p: the cells far from significance stop early
    sequential = (f", a cell stopping once {h} draws had reached its statistic, with p = {h} / its draws (a "
                  "sequential Monte Carlo p-value [besag]; otherwise p = (1 + draws reaching it) / (1 + draws))"
                  if h else "")
    n_draws = f"up to {n_draws}" if h else n_draws
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
        + ")" + sequential + "; "
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


