"""One readout per network: a source spread over atoms reads as one driver and its parts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_brainorg.networks.readout import link_roles, network_readout

N, K, TR = 240, 10, 1.5


def _study(rng, n_subjects=6):
    atoms = rng.standard_normal((N, K))
    atoms /= np.linalg.norm(atoms, axis=0)
    z = (atoms - atoms.mean(0)) / atoms.std(0)
    source = z[:, 5] + 0.6 * z[:, 2] - 0.5 * z[:, 8]  # one source, three atoms, one weight negative
    networks = np.zeros((3, 30), bool)
    for j in range(3):
        networks[j, 10 * j:10 * (j + 1)] = True
    fmri = []
    for _ in range(n_subjects):
        Y = rng.standard_normal((N, 30)) * 2.0
        Y[:, networks[0]] += source[:, None]          # activated by the source
        Y[:, networks[1]] -= 0.8 * z[:, [3]]          # deactivated by atom 3 alone
        fmri.append(100 + Y)
    return atoms, fmri, networks


def test_a_source_spread_over_atoms_reads_as_one_activating_driver(rng):
    atoms, fmri, networks = _study(rng)
    names, atlases = ["visual", "auditory", "motor"], ["toy"] * 3
    readout = network_readout(atoms, fmri, networks, {0: [8, 2, 5], 1: [3], 2: []}, tr=TR,
                              network_names=names, atlas_names=atlases, highpass_cutoff=None)
    assert list(readout["network"]) == ["visual", "auditory"]   # a network with nothing declared has no row
    visual, auditory = readout.iloc[0], readout.iloc[1]
    assert visual["direction"] == "activated" and visual["main_atom"] == 5 and visual["n_atoms"] == 3
    weights = dict(zip(map(int, visual["atoms"].split(";")), map(float, visual["weights"].split(";"))))
    assert weights[5] > 0 and weights[2] > 0 and weights[8] < 0
    assert abs(sum(map(float, visual["shares"].split(";"))) - 1) < 1e-6
    # the three atoms together fit the network better than the main atom alone, on held-out blocks
    assert visual["r_heldout"] > visual["r_main_atom"] + 0.05
    assert visual["r_heldout_ci_low"] <= visual["r_heldout"] <= visual["r_heldout_ci_high"]
    assert auditory["direction"] == "deactivated" and auditory["main_atom"] == 3

    table = pd.DataFrame({"atlas": "toy", "network": ["visual", "visual", "visual", "auditory", "motor"],
                          "atom": [5, 2, 8, 3, 1], "direction": ["activated", "activated", "deactivated",
                                                                 "deactivated", "activated"],
                          "associated": [True, True, True, True, False]})
    roles, shown = link_roles(table, readout)
    assert roles == ["main driver", "part", "counterweight", "main driver", ""]
    # the negatively weighted part of the activating driver is presented with its network's direction
    assert shown == ["activated", "activated", "activated", "deactivated", ""]


def test_noise_alone_gives_a_driver_without_held_out_fit(rng):
    atoms, fmri, networks = _study(rng)
    readout = network_readout(atoms, fmri, networks, {2: [0, 1]}, tr=TR, network_names=["a", "b", "c"],
                              atlas_names=["toy"] * 3, highpass_cutoff=128.0)
    assert abs(readout.iloc[0]["r_heldout"]) < 0.1


def test_a_link_recurs_where_the_matched_atom_keeps_its_sign_and_strength():
    from napari_brainorg.networks.readout import link_recurrence

    table = pd.DataFrame({"atlas": "toy", "network": ["visual", "visual", "motor"], "atom": [5, 8, 1],
                          "direction": ["activated", "deactivated", "activated"],
                          "statistic": [6.0, -4.0, 0.5], "associated": [True, True, False]})

    def restart(s5, s8):
        return pd.DataFrame({"atlas": "toy", "network": ["visual", "visual", "motor"], "atom": [5, 8, 1],
                             "direction": ["activated", "deactivated", "activated"], "statistic": [s5, s8, 0.1]})

    # three re-learned dictionaries: atom 5 strong in all, atom 8 weak in one and flipped in another
    out = link_recurrence(table, [restart(5.0, -4.5), restart(7.0, -1.0), restart(4.2, 3.0)], threshold=4.0)
    assert out[0] == 1.0 and abs(out[1] - 1 / 3) < 1e-12 and np.isnan(out[2])
    assert np.isnan(link_recurrence(table, [], 4.0)).all()
