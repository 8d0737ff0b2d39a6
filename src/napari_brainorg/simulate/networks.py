"""The networks a simulation plants in, states its truth in and fluctuates.

Atlases are brought onto the simulation's grid (bundled ones kept per grid) and made
disjoint within an atlas, as the association test uses them; :func:`_expected_links`
says which networks of every scored atlas each planted source covers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import AtlasError, ConfigError, did_you_mean
from .plan import SimulationPlan


def _network_key(name: str, default_atlas: str) -> tuple[str, str]:
    atlas, sep, network = str(name).partition(":")
    return (atlas.strip(), network.strip()) if sep else (default_atlas, str(name))


def _planted_links(plan: SimulationPlan) -> list[tuple[int, str, str, int]]:
    """The plan's links as (source, atlas, network, sign), activations first, names as written."""
    planted = [(a, *_network_key(n, plan.atlas), +1) for a, ns in plan.links.items() for n in ns]
    planted += [(a, *_network_key(n, plan.atlas), -1) for a, ns in plan.negative_links.items() for n in ns]
    return planted


@dataclass
class _PlantedNetworks:
    """The networks of a simulation on its grid.

    Attributes
    ----------
    atlases : dict of str to (FBNAtlas, ndarray of bool of shape (n_networks, n_voxels))
        Every atlas planted in, scored or fluctuating, with its disjoint network masks.
    truth_atlases : list of str
        The atlases the truth is stated in.
    planted : list of (int, str, str, int)
        The planted links (source, atlas, network, sign), network names as the atlas
        spells them.
    link_masks : ndarray of bool, shape (n_links, n_voxels)
    signal_voxels : ndarray of bool, shape (n_voxels,)
        Voxels of any planted link.
    link_src : ndarray of int, shape (n_links,)
        The source of each link.
    link_sign : ndarray of float32, shape (n_links,)
        +1 for an activation, -1 for a deactivation.
    """

    atlases: dict
    truth_atlases: list[str]
    planted: list
    link_masks: np.ndarray
    signal_voxels: np.ndarray
    link_src: np.ndarray
    link_sign: np.ndarray


def _planted_networks(plan: SimulationPlan, planted: list, mask_img, n_voxels: int) -> _PlantedNetworks:
    """Load the atlases planted in, scored and fluctuating, and mask each planted link.

    Parameters
    ----------
    plan : SimulationPlan
    planted : list of (int, str, str, int)
        :func:`_planted_links`' answer.
    mask_img : nibabel.Nifti1Image
        The simulation's grid.
    n_voxels : int
        In-mask voxels.

    Returns
    -------
    networks : _PlantedNetworks
    """
    truth_atlases = list(dict.fromkeys(plan.truth_atlases or [p[1] for p in planted] or [plan.atlas]))
    atlases = _load_atlases(plan, mask_img, list(dict.fromkeys(
        [p[1] for p in planted] + truth_atlases + list(plan.fluctuation_atlases))))
    link_masks = np.stack([_network_mask(atlases, atlas, net, plan) for _, atlas, net, _ in planted]) \
        if planted else np.zeros((0, n_voxels), bool)
    planted = [(a, atlas, _canonical(atlases, atlas, net), s) for a, atlas, net, s in planted]
    signal_voxels = link_masks.any(axis=0) if planted else np.zeros(n_voxels, bool)
    return _PlantedNetworks(
        atlases=atlases, truth_atlases=truth_atlases, planted=planted, link_masks=link_masks,
        signal_voxels=signal_voxels, link_src=np.array([p[0] for p in planted], dtype=int),
        link_sign=np.array([p[3] for p in planted], dtype=np.float32),
    )


_ATLAS_CACHE: dict = {}


def _grid_key(mask_img) -> tuple:
    mask = np.asarray(mask_img.dataobj) > 0
    return (mask.shape, np.asarray(mask_img.affine).round(6).tobytes(), np.packbits(mask).tobytes())


def _load_atlases(plan: SimulationPlan, mask_img, names: list[str]) -> dict:
    """Each atlas on the mask's voxels (bundled atlases kept per grid: resampling a 4D
    template to a coarse grid takes seconds, and benchmarks simulate many times)."""
    from ..datasets import BUNDLED_ATLASES
    from ..errors import ResamplingWarning
    from ..io.atlases import load_fbn
    from ..networks.association import disjoint_networks

    out = {}
    grid = _grid_key(mask_img)
    with warnings.catch_warnings():
        # Bringing a template onto a coarser simulation grid is intended here; it is
        # recorded in truth.json ("atlas_notes") rather than warned about.
        warnings.simplefilter("ignore", ResamplingWarning)
        for name in names:
            key = (name, grid) if isinstance(name, str) and name in BUNDLED_ATLASES else None
            fbn = _ATLAS_CACHE.get(key) if key else None
            if fbn is None:
                fbn = load_fbn(name, mask_img)
                if key:
                    if len(_ATLAS_CACHE) > 32:
                        _ATLAS_CACHE.clear()
                    _ATLAS_CACHE[key] = fbn
            threshold = plan.atlas_threshold if name == plan.atlas else None
            # disjoint within an atlas, as the analysis tests them (each voxel to the network
            # with the highest map value), so that planted and tested networks are the same
            out[name] = (fbn, disjoint_networks(fbn.maps, np.asarray(fbn.masks(threshold=threshold), dtype=bool)))
    return out


def _canonical(atlases: dict, atlas: str, network: str) -> str:
    names = [str(n) for n in atlases[atlas][0].network_names]
    if network in names:
        return network
    lowered = {n.lower(): n for n in names}
    if network.lower() in lowered:
        return lowered[network.lower()]
    raise AtlasError(f"Network {network!r} is not in atlas {atlas!r}; its networks are {names}."
                     + did_you_mean(network, names))


def _network_mask(atlases: dict, atlas: str, network: str, plan) -> np.ndarray:
    fbn, masks = atlases[atlas]
    name = _canonical(atlases, atlas, network)
    m = masks[[str(n) for n in fbn.network_names].index(name)]
    if not m.any():
        raise AtlasError(f"Network {name!r} of atlas {atlas!r} has no voxel inside the mask; "
                         "expected at least one to plant a signal.")
    return m


def _fluctuation_maps(atlases: dict, plan: SimulationPlan) -> tuple[list[str], np.ndarray]:
    """Non-negative spatial maps, max 1, of every network of the fluctuation atlases."""
    names, maps = [], []
    for atlas in plan.fluctuation_atlases:
        fbn, masks = atlases[atlas]
        values = np.clip(np.asarray(fbn.maps, np.float32), 0.0, None)
        if fbn.kind != "labels":
            # a map atlas: the network's values inside its own mask, scaled to max 1
            values = np.where(masks, values, 0.0)
        top = values.max(axis=1, keepdims=True)
        values = values / np.where(top > 0, top, 1.0)
        for n, m in zip(fbn.network_names, values):
            if m.any():
                names.append(f"{atlas}:{n}")
                maps.append(m)
    n_vox = next(iter(atlases.values()))[1].shape[1] if atlases else 0
    return names, (np.stack(maps) if maps else np.zeros((0, n_vox), np.float32))


def _expected_links(planted, link_masks, atlases, truth_atlases, plan):
    """Which (source, atlas, network, sign) a perfect analysis should declare.

    A source is planted in a network of a scored atlas when its signal covers at least
    ``plan.min_share`` of that network's voxels (with the link's sign); the planted
    network itself always counts.
    """
    shares, expected = [], {}
    for i, (src, atlas, net, sign) in enumerate(planted):
        expected[(src, atlas, net, sign)] = 1.0
    for i, (src, p_atlas, p_net, sign) in enumerate(planted):
        for atlas in truth_atlases:
            fbn, masks = atlases[atlas]
            size = masks.sum(axis=1)
            cover = (masks & link_masks[i]).sum(axis=1) / np.where(size > 0, size, 1)
            for net, c in zip(fbn.network_names, cover):
                if c > 0:
                    shares.append({"source": int(src), "planted_in": f"{p_atlas}:{p_net}", "sign": int(sign),
                                   "atlas": atlas, "network": str(net), "share": round(float(c), 4)})
                if c >= plan.min_share:
                    key = (int(src), atlas, str(net), int(sign))
                    expected[key] = max(expected.get(key, 0.0), float(c))
    rows = [{"source": k[0], "atlas": k[1], "network": k[2], "sign": k[3], "share": round(v, 4)}
            for k, v in sorted(expected.items())]
    conflicts = {(r["source"], r["atlas"], r["network"]) for r in rows if r["sign"] > 0} & \
                {(r["source"], r["atlas"], r["network"]) for r in rows if r["sign"] < 0}
    if conflicts:
        raise ConfigError(f"The plan makes sources both activate and deactivate the same networks: {sorted(conflicts)}.")
    return rows, shares
