"""The simulation's plan: what to plant and how realistic the data should be.

:class:`SimulationPlan` is checked when it is made (every range names the parameter,
the value given and what is allowed), so the simulator can trust it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass
class SimulationPlan:
    """What to plant and how realistic the data should be.

    Parameters
    ----------
    links : dict of int to list of str
        Source index -> networks its time course activates: names of ``atlas``'s
        networks, or ``"atlas:network"`` for another bundled atlas. Empty: a null
        simulation (noise and fluctuations only), for false-positive checks.
    negative_links : dict of int to list of str
        Source index -> networks it deactivates (negative weights).
    atlas : str
        Default atlas of unqualified network names: a bundled name (``smith10``,
        ``yeo7``...) or a NIfTI path, as :func:`napari_brainorg.io.atlases.load_fbn`
        takes it.
    atlas_threshold : float, optional
        Threshold passed to ``FBNAtlas.masks`` for ``atlas`` (default: its own).
    truth_atlases : list of str, optional
        Atlases the truth is stated in (those the analysis scores); default the
        atlases planted in.
    min_share : float
        A source counts as planted in a network of a truth atlas when its signal
        covers at least this share of the network's voxels.
    n_subjects : int
    r2_range : (float, float)
        Range of the true R² of signal voxels, ``0 < lo <= hi < 1``.
    ar1_grey, ar1_other : float
        AR(1) coefficient of the noise in grey matter and elsewhere, in [0, 1).
    smoothness_fwhm_mm : float
        Spatial smoothness (FWHM, mm) of the noise; 0 for none.
    pattern_fwhm_mm : float
        Smoothness of the weight, R² and HRF maps.
    subject_variability : float
        Share of variance, in [0, 1], of the subject-specific part of the weight,
        R² and HRF maps (0: every subject has the same maps; 1: unrelated maps).
    hrf_delay_s : float
        HRF delays lie in ``[-hrf_delay_s, hrf_delay_s]`` (uniform).
    hrf_dispersion_s : float
        Extra HRF dispersion (Gaussian SD, s) lies in ``[0, hrf_dispersion_s]``.
    fluctuation_atlases : list of str
        Atlases whose networks carry spontaneous fluctuations; empty for none.
    fluctuation_share : float
        Share, in [0, 1), of a network-core voxel's non-signal variance that is
        spontaneous network fluctuation (the rest is AR noise).
    noise_sd : float
        Standard deviation of noise + fluctuations in image units.
    baseline : float
        Mean intensity of a voxel.
    drift_sd : float
        Slow drift amplitude in units of ``noise_sd``.
    resolution_mm : float, optional
        Resample the mask (and so the atlases) to this isotropic voxel size first
        (e.g. 4 mm for a quick demo); None keeps the mask's grid.
    seed : int
        The same seed (and inputs) gives the same data, bit for bit.
    """

    links: dict[int, list[str]]
    negative_links: dict[int, list[str]] = field(default_factory=dict)
    atlas: str = "smith10"
    atlas_threshold: float | None = None
    truth_atlases: list[str] | None = None
    min_share: float = 0.3
    n_subjects: int = 3
    r2_range: tuple[float, float] = (0.02, 0.2)
    ar1_grey: float = 0.6
    ar1_other: float = 0.2
    smoothness_fwhm_mm: float = 6.0
    pattern_fwhm_mm: float = 12.0
    subject_variability: float = 0.3
    hrf_delay_s: float = 1.5
    hrf_dispersion_s: float = 1.5
    fluctuation_atlases: list[str] = field(default_factory=lambda: ["smith10", "yeo7"])
    fluctuation_share: float = 0.3
    noise_sd: float = 10.0
    baseline: float = 1000.0
    drift_sd: float = 1.0
    resolution_mm: float | None = None
    seed: int = 0

    def __post_init__(self):
        self.links = _clean_links(self.links, "links")
        self.negative_links = _clean_links(self.negative_links, "negative_links")
        lo, hi = (float(x) for x in self.r2_range)
        if not 0.0 < lo <= hi < 1.0:
            raise ConfigError(
                f"'r2_range' must satisfy 0 < lo <= hi < 1; {tuple(self.r2_range)!r} was provided."
            )
        self.r2_range = (lo, hi)
        self.fluctuation_atlases = list(self.fluctuation_atlases or [])
        if self.truth_atlases is not None:
            self.truth_atlases = list(self.truth_atlases)
        _check_range("n_subjects", self.n_subjects, 1, None)
        _check_range("min_share", self.min_share, 0.0, 1.0, closed_lo=False)
        _check_range("ar1_grey", self.ar1_grey, 0.0, 1.0, closed_hi=False)
        _check_range("ar1_other", self.ar1_other, 0.0, 1.0, closed_hi=False)
        _check_range("smoothness_fwhm_mm", self.smoothness_fwhm_mm, 0.0, None)
        _check_range("pattern_fwhm_mm", self.pattern_fwhm_mm, 0.0, None)
        _check_range("subject_variability", self.subject_variability, 0.0, 1.0)
        _check_range("hrf_delay_s", self.hrf_delay_s, 0.0, None)
        _check_range("hrf_dispersion_s", self.hrf_dispersion_s, 0.0, None)
        _check_range("fluctuation_share", self.fluctuation_share, 0.0, 1.0, closed_hi=False)
        _check_range("noise_sd", self.noise_sd, 0.0, None, closed_lo=False)
        _check_range("drift_sd", self.drift_sd, 0.0, None)
        if self.resolution_mm is not None:
            _check_range("resolution_mm", self.resolution_mm, 0.0, None, closed_lo=False)


def _check_range(name, value, lo, hi, closed_lo=True, closed_hi=True):
    ok = value >= lo if closed_lo else value > lo
    if hi is not None:
        ok = ok and (value <= hi if closed_hi else value < hi)
    if not ok:
        lo_b = "[" if closed_lo else "("
        hi_b = ("]" if closed_hi else ")") if hi is not None else ")"
        raise ConfigError(
            f"{name!r} must lie in {lo_b}{lo}, {'inf' if hi is None else hi}{hi_b}; {value!r} was provided."
        )


def _clean_links(links, name: str) -> dict[int, list[str]]:
    if links is None:
        return {}
    if not isinstance(links, dict):
        raise ConfigError(f"{name!r} must be a dict atom -> [network, ...]; {type(links).__name__} was provided.")
    out = {}
    for atom, networks in links.items():
        try:
            a = int(atom)
        except (TypeError, ValueError):
            raise ConfigError(f"{name!r} keys must be atom indices (int); {atom!r} was provided.") from None
        if isinstance(networks, str):
            networks = [networks]
        out[a] = [str(n) for n in networks]
    return out
