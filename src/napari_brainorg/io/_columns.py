"""What each column of the result folder's tables holds: the JSON sidecar of every ``.tsv``.

BIDS describes a tabular file's columns in a JSON file beside it, one object per column
with ``LongName``, ``Description`` and, where the values have them, ``Units`` (and
``Levels`` for categories). :func:`describe_columns` makes that object for a table from
the registry below: a column named the same means the same thing in every table, unless
its table (by file name) says otherwise (``p`` of a consistency test is not the ``p`` of a
network association). Columns whose names are made from data (one per atom, layer,
model or baseline) match a pattern.
"""

from __future__ import annotations

import re

#: name -> (LongName, Description, Units or None)
COLUMNS: dict[str, tuple[str, str, str | None]] = {
    # story/
    "word": ("Word", "the word as spoken (punctuation kept as in the transcript)", None),
    "onset": ("Onset", "time the word starts, from the start of the scan", "s"),
    "offset": ("Offset", "time the word ends, from the start of the scan", "s"),
    "measured": ("Measured", "True: the word's time comes from the forced alignment; False: filled in "
                             "between its measured neighbours", None),
    "scan_time": ("Scan time", "the word's onset on the scan's clock (story onset added)", "s"),
    "volume": ("Volume", "index of the fMRI volume (0-based; several stories: on the stacked axis)", None),
    "story": ("Story", "the story (task) the row belongs to", None),
    "source": ("Source", "the story file or bundled story name", None),
    "tr": ("Repetition time", "repetition time of the story's fMRI run", "s"),
    "n_volumes": ("Number of volumes", "volumes of the story's fMRI run", None),
    "first_volume": ("First volume", "index of the story's first volume on the stacked axis", None),
    "n_words": ("Number of words", "words of the story placed in the scan", None),
    "word_rate": ("Word rate", "words per second, convolved with the HRF and sampled at each volume "
                               "(nuisance regressor)", None),
    "word_length": ("Word length", "mean word length in letters, HRF-convolved (nuisance regressor)", None),
    "word_frequency": ("Word frequency", "mean log word frequency, HRF-convolved (nuisance regressor)", None),
    "pause": ("Pause", "fraction of the volume without speech, HRF-convolved (nuisance regressor)", None),
    # features/
    "layer": ("Layer", "the language model's layer (0 = first block)", None),
    "unit": ("Unit", "index of the artificial neuron (AN) within its layer and site", None),
    "site": ("Site", "where the AN is read: ffn_hidden (feed-forward hidden units), ffn_out or residual", None),
    "reason": ("Reason", "why the AN was left out (e.g. no variance over the story)", None),
    # atoms/
    "atom": ("Atom", "index of the atom in the sparse dictionary (0-based; the volume of the 4D atom maps)",
             None),
    "n_ans": ("Number of ANs", "ANs with a non-zero code on the atom (its members)", None),
    "fraction_ans": ("Fraction of ANs", "members / all ANs kept", None),
    "n_positive": ("Positive members", "members with a positive code", None),
    "n_negative": ("Negative members", "members with a negative code", None),
    "n_layers_spanned": ("Layers spanned", "layers with at least one member", None),
    "peak_layer": ("Peak layer", "the layer with most members", None),
    "main_layers": ("Main layers", "the layers holding most of the members, ';'-separated", None),
    "mean_abs_code": ("Mean absolute code", "mean |code| over members (0 if none)", None),
    "r_word_rate": ("Correlation with word rate", "Pearson r of the atom's time course with the word-rate "
                                                  "nuisance regressor", None),
    "reproducibility": ("Reproducibility", "best |r| of the atom with an atom of a dictionary learned from "
                                           "another start (median over starts)", None),
    "networks_activated": ("Networks activated", "networks declared associated with the atom's positive part "
                                                 "(atlas:network, ';'-separated)", None),
    "networks_deactivated": ("Networks deactivated", "networks declared associated with the atom's negative "
                                                     "part (atlas:network, ';'-separated)", None),
    "best_score": ("Best score", "the atom's strongest association statistic over networks", None),
    "direction": ("Direction", "activated (positive part / positive coefficient) or deactivated (negative)",
                  None),
    "rank": ("Rank", "1 = the word with the strongest response", None),
    "word_index": ("Word index", "row of the word in story/words.tsv", None),
    "response": ("Response", "the atom's response to the word before the HRF, z-scored over words", "z"),
    "context": ("Context", "the word in its sentence, [bracketed]", None),
    # networks/
    "index": ("Index", "the network's value in the atlas label image", None),
    "network": ("Network", "the network's name in its atlas", None),
    "r": ("Red", "display colour, red (0-1)", None),
    "g": ("Green", "display colour, green (0-1)", None),
    "b": ("Blue", "display colour, blue (0-1)", None),
    "a": ("Alpha", "display colour, opacity (0-1)", None),
    "atlas": ("Atlas", "the functional brain network atlas (regions: the region time series themselves)", None),
    "part": ("Part", "which part of the atom's z map is compared with the network: positive (z above the "
                     "threshold) or negative", None),
    "statistic": ("Statistic", "the group statistic of the atom's coefficient on the network's time series "
                               "(test.json says which)", None),
    "effect": ("Effect", "the atom's coefficient on the network's time series (unique, with the other atoms; "
                         "mean over subjects)", None),
    "marginal": ("Marginal correlation", "Pearson r of the atom with the subjects' mean time series of the "
                                         "network", None),
    "p": ("p", "one-sided p of the association against the stimulus null", None),
    "n_draws": ("Null draws", "null draws counted for p: a cell stops drawing once networks.sequential_h "
                              "draws reached its statistic (p = h / draws), else the full budget", None),
    "q": ("q", "Benjamini-Hochberg q over the family in fdr_family", None),
    "q_model": ("q (model alone)", "Benjamini-Hochberg q with the model corrected alone", None),
    "associated": ("Associated", "True: q below the level and the effect rules hold (a declared link)", None),
    "effect_ok": ("Effect rules hold", "the effect-size rules and the resemblance rule hold", None),
    "test": ("Test", "the test that gave p", None),
    "overlap_rate": ("Overlap rate", "|part of the atom map inside the network| / |network| (display)", None),
    "dice": ("Dice", "Dice coefficient of the atom's map part and the network (display)", None),
    "correlation": ("Spatial correlation", "spatial Pearson r of the atom's z map with the network (display)",
                    None),
    "n_part_voxels": ("Part voxels", "voxels in the atom's map part", None),
    "n_network_voxels": ("Network voxels", "voxels of the network on the data grid", None),
    "fdr_family": ("FDR family", "the tests corrected together to give q", None),
    "role": ("Role", "the link's place in its network's readout: main driver, part or counterweight", None),
    "network_direction": ("Network direction", "the direction the link is presented with (its network's)",
                          None),
    "recurrence": ("Recurrence", "fraction of dictionaries learned from other starts in which the link recurs",
                   None),
    "main_atom": ("Main atom", "the atom with the largest share of the network's driver", None),
    "n_atoms": ("Number of atoms", "atoms counted in the row", None),
    "atoms": ("Atoms", "the atoms of the row, ';'-separated", None),
    "weights": ("Weights", "each atom's weight in the driver, ';'-separated, in the order of atoms", None),
    "shares": ("Shares", "each atom's share of the driver's fit, ';'-separated", None),
    "r_heldout": ("Held-out r", "Pearson r of the driver with the network's time series on held-out blocks, "
                                "mean over subjects", None),
    "r_main_atom": ("Main atom's r", "the same for the main atom alone", None),
    "n_subjects": ("Number of subjects", "subjects in the computation", None),
    # encoding/ (regions, baseline)
    "region": ("Region", "the region (column of the region time series)", None),
    "r2_sparse": ("In-sample R2 (sparse)", "in-sample R2 of the paper's sparse fit on all atoms, mean over "
                                           "subjects", None),
    "r2_sparse_null_median": ("Null median R2", "median in-sample R2 of the sparse fit on shifted atoms", None),
    "r2_sparse_null_p95": ("Null 95th percentile R2", "95th percentile of the same (chance level)", None),
    "r2_sparse_p": ("p of in-sample R2", "p of r2_sparse against the shifted-atoms null", None),
    "r2_sparse_q": ("q of in-sample R2", "Benjamini-Hochberg q of r2_sparse_p over regions", None),
    "r2_cv": ("Held-out R2", "held-out R2 of the cross-validated ridge on all atoms, mean over subjects", None),
    "r_cv": ("Held-out r", "held-out Pearson r of the cross-validated ridge on all atoms, mean over subjects",
             None),
    "q_cv": ("q of held-out R2", "FDR q of the held-out R2 (subjects' permutation p combined)", None),
    "noise_ceiling": ("Noise ceiling", "split-half noise ceiling of one subject's r (Spearman-Brown)", None),
    "isc_loo": ("Inter-subject correlation", "r of each subject with the mean of the others, mean over "
                                             "subjects", None),
    "r2_loso": ("Leave-one-story-out R2", "R2 of the ridge trained on the other stories, mean over held-out "
                                          "stories", None),
    "r_loso": ("Leave-one-story-out r", "r of the ridge trained on the other stories, mean over held-out "
                                        "stories", None),
    "r_cv_nuisance_only": ("Held-out r, nuisance alone", "held-out r of the ridge on the nuisance regressors "
                                                         "alone", None),
    "delta_r_beyond_nuisance": ("r beyond nuisance", "held-out r of atoms with nuisance minus nuisance alone, "
                                                     "mean over subjects", None),
    "delta_r2_beyond_nuisance": ("R2 beyond nuisance", "held-out R2 of atoms with nuisance minus nuisance "
                                                       "alone, mean over subjects", None),
    "baseline_layer_r2_best": ("Best layer's R2", "held-out R2 of the best single layer's ANs", None),
    "baseline_layer_best": ("Best layer", "the layer whose ANs give the best held-out R2", None),
    "model": ("Model", "the language model (or its baseline) of the row", None),
    "r2_median": ("Median R2", "median over voxels of the model's R2 map", None),
    "r2_p95": ("95th percentile R2", "95th percentile over voxels of the model's R2 map", None),
    # comparison/
    "baseline": ("Baseline", "the baseline compared with the model", None),
    "baseline_kind": ("Baseline kind", "phase-randomised atoms, untrained twin or nuisance regressors", None),
    "metric": ("Metric", "the quantity compared", None),
    "chance_corrected": ("Chance corrected", "True: each value is first minus its own chance level", None),
    "model_value": ("Model's value", "the metric for the model, mean over subjects", None),
    "baseline_value": ("Baseline's value", "the metric for the baseline, mean over subjects", None),
    "difference": ("Difference", "model minus baseline, mean over subjects", None),
    "ci_low": ("CI low", "lower bound of the 95% confidence interval (t over subjects)", None),
    "ci_high": ("CI high", "upper bound of the 95% confidence interval (t over subjects)", None),
    "model_associations": ("Model's links", "network links the model declared", None),
    "baseline_associations": ("Baseline's links", "network links the baseline declared", None),
    "n_constant": ("Constant atoms", "atoms with a constant time course", None),
    "mean_abs_correlation": ("Mean |r|", "mean |r| over all pairs of atoms' time courses", None),
    "diversity": ("Diversity", "1 - mean |r| (1: uncorrelated atoms)", None),
    "effective_number": ("Effective number", "effective rank of the atoms' time courses (Roy & Vetterli 2007)",
                         None),
    "effective_fraction": ("Effective fraction", "effective number / number of atoms", None),
    "n_atoms_tested": ("Atoms tested", "atoms tested against the networks", None),
    "n_atoms_associated": ("Atoms associated", "atoms with at least one declared link", None),
    "n_networks": ("Number of networks", "networks of the atlases", None),
    "n_networks_covered": ("Networks covered", "networks with at least one associated atom", None),
    "networks_covered": ("Networks covered", "those networks, ';'-separated", None),
    "mean_consistency": ("Mean consistency", "mean over networks with two or more atoms of their temporal "
                                             "consistency", None),
    "n_networks_with_consistency": ("Networks with consistency", "networks with two or more associated atoms",
                                    None),
    "mean_consistency_null": ("Mean null consistency", "the same for random sets of atoms of the same size",
                              None),
    "consistency": ("Consistency", "mean pairwise r of the time courses of the atoms associated with the "
                                   "network", None),
    "consistency_sd": ("Consistency SD", "SD of those pairwise r", None),
    "null_mean": ("Null mean", "mean consistency of random sets of atoms of the same size", None),
    "null_sd": ("Null SD", "SD of the same", None),
    "z": ("z", "(consistency - null_mean) / null_sd", None),
}

#: a table's own meaning of a column (by file name)
TABLE_COLUMNS: dict[str, dict[str, tuple[str, str, str | None]]] = {
    "consistency.tsv": {"p": ("p", "one-sided p of the consistency against random sets of atoms", None),
                        "index": ("Row", "row number of the table", None)},
    "baselines.tsv": {"p": ("p", "one-sided sign-flip p over subjects of the difference", None),
                      "test": ("Test", "the test that gave p", None)},
    "regions.tsv": {"r_cv_ci_low": ("r CI low", "lower bound of the 95% CI over subjects of r_cv", None)},
}

#: columns named from data: (table file name or None for any, pattern, LongName, Description with {0} the match)
PATTERNS: list[tuple[str | None, str, str, str]] = [
    (None, r"atom_(\d+)", "Atom {0}", "atom {0}'s value in the region (the table's statistic)"),
    ("layer_hist.tsv", r"(\d+)", "Layer {0}", "members of the atom in layer {0}"),
    ("coverage.tsv", r"(.+)", "{0}", "associated atoms of model {0} in the network"),
    (None, r"(.+)_ci_low", "{0} CI low", "lower bound of the 95% CI over subjects of {0}"),
    (None, r"(.+)_ci_high", "{0} CI high", "upper bound of the 95% CI over subjects of {0}"),
    (None, r"r_cv_(.+)", "Held-out r of {0}", "held-out r of baseline {0} in the region"),
]


def describe_column(table: str, column: str) -> dict | None:
    """The BIDS sidecar entry of ``column`` of the table named ``table`` (a file name), or None."""
    column = str(column)
    entry = TABLE_COLUMNS.get(table, {}).get(column) or COLUMNS.get(column)
    if entry is not None:
        long_name, description, units = entry
    else:
        for where, pattern, long_name, description in PATTERNS:
            m = re.fullmatch(pattern, column)
            if m and where in (None, table):
                long_name, description = long_name.format(m.group(1)), description.format(m.group(1))
                units = None
                break
        else:
            return None
    out = {"LongName": long_name, "Description": description}
    if units:
        out["Units"] = units
    return out


def describe_columns(table: str, columns) -> dict:
    """The JSON sidecar of a table: one entry per described column (in the table's order)."""
    out = {}
    for column in columns:
        entry = describe_column(table, column)
        if entry is not None:
            out[str(column)] = entry
    return out
