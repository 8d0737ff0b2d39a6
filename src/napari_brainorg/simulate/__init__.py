"""Simulated fMRI with a planted ground truth, clearly labelled as simulated.

Real fMRI of the stories cannot always be had, and no real data says which atom
drives which brain network. A simulation plants that answer and asks the pipeline
to find it again. To be as hard as real data, nothing in it is made by the method
under test:

- **Sources are not the analysis' atoms.** A planted source is built from the
  artificial neurons (ANs): the signed mean of ~30 member ANs of an atom
  (:func:`an_mix_sources`), or an atom of a dictionary learned independently (another
  start, a subset of the ANs). The pipeline learns its own atoms and must match them.
- **HRFs vary.** Each subject's voxel sees the source through the canonical HRF
  delayed by ``d`` (within ``±hrf_delay_s``) and widened by a Gaussian of SD ``w``
  (within ``[0, hrf_dispersion_s]``); ``d`` and ``w`` are smooth over voxels and
  partly shared by subjects.
- **Noise is autocorrelated by tissue.** AR(1) in time with coefficient
  ``ar1_grey`` (0.6) in grey matter and ``ar1_other`` (0.2) elsewhere, from a
  grey-matter proxy of the MNI152 T1 template, with spatially smooth innovations.
- **Spontaneous fluctuations are network-structured.** Every network of the
  fluctuation atlases (Smith 2009 RSN10 and Yeo-7 by default) carries its own
  BOLD-like course, drawn independently for every subject, spread over the network's
  map: the smooth, network-shaped, stimulus-unrelated signal real data has.
- **Signs and atlases.** Sources activate (``links``) or deactivate
  (``negative_links``) networks of any bundled atlas (``"yeo7:Default"``); the truth
  says which networks of every scored atlas each source covers (``expected_links``).
  Networks are made disjoint within an atlas (each voxel to the network with the
  highest map value), as the association test uses them.

The generative model, per subject and in-mask voxel ``v`` at volume ``t``::

    y[t, v] = baseline[v] + c[v] * s[t, v] + sd * (n[t, v] + f[t, v]) + drift[t, v]

with ``s[t, v] = Σ_links ± w_l[v] h_v(z_l)[t]`` (``z_l`` the z-scored source,
``h_v`` the voxel's HRF variant, ``w_l`` positive smooth weights inside the link's
network), ``n`` the AR(1) noise, ``f`` the fluctuations (``n + f`` has unit
variance), and ``c[v]`` chosen so that the voxel's **true R²**,
``var_t(c s) / (var_t(c s) + var_t(sd (n + f)))``, equals a target drawn uniformly
in ``r2_range`` (a smooth map, partly shared by subjects).

Every image carries ``descrip = 'napari-brainorg SIMULATED'`` in its NIfTI header,
``truth.json`` says ``"simulated": true`` and a README.txt beside the files says what
they are.

The package's modules: :mod:`.plan` (the plan), :mod:`.sources` (planted sources),
:mod:`.fields` (smooth random fields), :mod:`.noise` (AR noise, fluctuations, drifts),
:mod:`.planting` (HRF variants and the planted signal), :mod:`.networks` (atlases on the
grid, expected links), :mod:`.images` (the simulated subjects and their labelled
images), :mod:`.simulator` (:func:`simulate_fmri`), :mod:`.truth` (``truth.json``) and
:mod:`.files` (:func:`write_simulation`).
"""

from .fields import FWHM_TO_SIGMA
from .files import README_TEXT, write_simulation
from .images import SIMULATED_DESCRIP, SimulatedFMRI, resample_mask, unmask_to_image
from .noise import GM_PERCENTILES, grey_matter_fraction
from .plan import SimulationPlan
from .planting import HRF_STEP_S, WEIGHT_LOG_SD
from .planting import _hrf_variant  # noqa: F401 (private; the tests check the HRF variants through it)
from .simulator import BASELINE_SPATIAL_SD, simulate_fmri
from .sources import an_mix_sources, distinct_sources, random_an_mix_sources
from .truth import SIMULATOR_REVISION, read_truth

__all__ = [
    "BASELINE_SPATIAL_SD",
    "FWHM_TO_SIGMA",
    "GM_PERCENTILES",
    "HRF_STEP_S",
    "README_TEXT",
    "SIMULATED_DESCRIP",
    "SIMULATOR_REVISION",
    "WEIGHT_LOG_SD",
    "SimulatedFMRI",
    "SimulationPlan",
    "an_mix_sources",
    "random_an_mix_sources",
    "distinct_sources",
    "grey_matter_fraction",
    "read_truth",
    "resample_mask",
    "simulate_fmri",
    "unmask_to_image",
    "write_simulation",
]
