"""One configuration for the command line and the napari widgets.

A :class:`PipelineConfig` is frozen and validated; a misspelt key is an error that
names it and suggests the closest allowed key. Each step of the pipeline depends
only on its own section (plus the steps before it), and that section's hash is the
step's cache key.

Example (YAML)::

    story:
      path: pieman            # a bundled story or a Gentle align.json / align.csv / TSV / TextGrid
      onset: 0.0              # seconds added to every word time (or events: sub-01_events.tsv)
      tr: 1.5
      n_volumes: 300
    features:
      models: [minilm]
    atoms:
      n_atoms: 64
    fmri:
      images: [sub-001_bold.nii.gz, sub-002_bold.nii.gz]
      mask: mni
    networks:
      atlases: [smith10, yeo7]
    out: results/pieman

Several stories heard by the same subjects (each story's runs given by its name)::

    stories:
      - {path: pieman, tr: 1.5, n_volumes: 300}
      - {name: lucy, path: lucy_align.csv, onset: 3.0, tr: 1.5, n_volumes: 370}
    fmri:
      images:
        pieman: [sub-001_task-pieman_bold.nii.gz, sub-002_task-pieman_bold.nii.gz]
        lucy: [sub-001_task-lucy_bold.nii.gz, sub-002_task-lucy_bold.nii.gz]
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError, did_you_mean
from ..features.nuisance import DEFAULT_PAUSE_LABELS as _PAUSE_LABELS


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value, info):
        # YAML reads `yes`/`true` as a bool, and pydantic would take it as 1: refuse it
        if isinstance(value, bool):
            annotation = str(cls.model_fields[info.field_name].annotation)
            if "bool" not in annotation and ("int" in annotation or "float" in annotation):
                raise ValueError(f"expected a number, not a boolean ({value!r})")
        return value

    def cache_key(self, *upstream: str) -> str:
        """A short hash of this section and the keys of the steps it depends on."""
        blob = json.dumps([self.model_dump(mode="json"), list(upstream)], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class StoryConfig(_Section):
    """The story: timed words and the scan they were heard in."""

    name: str | None = Field(None, description=(
        "The story's name in the result folder and in fmri.images/regions mappings (default: the bundled "
        "story's name or the file's name without extension)."))
    path: str = Field("pieman", description="Bundled story name or a story file (align.json, align.csv, word/onset/offset TSV/CSV, TextGrid).")
    onset: float = Field(0.0, description="Seconds added to every word time: where the story's audio starts in the scan.")
    events: str | None = Field(None, description="BIDS events.tsv to read the onset from (overrides 'onset').")
    tr: float = Field(1.5, gt=0, description="Repetition time of the scan, seconds.")
    n_volumes: int = Field(300, gt=0, description="Number of fMRI volumes.")
    pause_labels: list[str] = Field(default_factory=lambda: list(_PAUSE_LABELS), description=(
        "Forced-aligner labels read as silence, not words (case-blind): removed before the models run, "
        "counted in a warning; [] keeps every entry."))
    min_pause: float = Field(0.3, ge=0, description="Shortest gap between words counted as a pause (s), for the pause regressor.")

    @property
    def label(self) -> str:
        """The story's name: ``name``, else the bundled name or the file's stem."""
        if self.name:
            return self.name
        return Path(str(self.path)).name.split(".")[0] or str(self.path)

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, v):
        if v is not None and (not v.strip() or any(c in v for c in "/\\:") or v in (".", "..")):
            raise ValueError(f"a story name must be a plain folder name (no '/', backslash or ':'); {v!r} was provided.")
        return v


class FeaturesConfig(_Section):
    """Artificial-neuron responses (METHOD section 1)."""

    models: list[str] = Field(default_factory=lambda: ["minilm"], min_length=1,
                              description="Bundled names (minilm, smollm2), model folders, GGUF files or hub ids.")
    site: Literal["ffn_hidden", "ffn_out", "residual"] = Field("ffn_hidden", description=(
        "Where an AN is read in each layer: ffn_hidden, the feed-forward block's hidden units after the "
        "activation (the paper's neurons); ffn_out, its output; residual, the residual stream."))
    alignment: Literal["glover", "spm", "lanczos", "fir"] = Field("glover", description=(
        "How word activations become one value per volume: convolution with the Glover or SPM "
        "canonical HRF sampled at the volumes (nilearn's compute_regressor), Lanczos resampling of the "
        "word events to the volume times without HRF, or FIR (the mean of the words heard in the volumes "
        "before each volume)."))
    context: int | None = Field(None, gt=0, description="Tokens of context per window; default the model's own policy.")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field("auto", description=(
        "Precision of the models: 'auto' = bfloat16 on CUDA (half of float32's memory, float32's range; "
        "an 8 B model takes 16 GB), float32 on CPU."))
    device_map: Literal["auto", "balanced", "balanced_low_0", "sequential"] | dict[str, str | int] | None = Field(
        None, description=(
            "Spread a model too large for one device over the GPUs, then the CPU's memory, then the disk "
            "(accelerate); null: the whole model on 'device'."))
    max_memory: dict[int | str, str | int] | None = Field(None, description=(
        "With device_map: the most each device may hold, e.g. {0: 70GiB, cpu: 100GiB}."))
    offload_folder: str | None = Field(None, description=(
        "With device_map: folder for the weights that fit nowhere else when the placement reaches the disk "
        "(safetensors weights are read from their own files and need none)."))
    center_words: bool = Field(False, description=(
        "Remove each AN's mean word activation before the word -> volume operator. Default False: the "
        "paper's raw responses (Sun et al.), in which every AN also carries the word rate; True centres them "
        "(on Alice it lowered held-out r from 0.143 to 0.120). The report's methods name the choice."))
    word_activations_max_gb: float = Field(2.0, ge=0, description=(
        "Keep every AN's activation per word (float32, words x ANs: the full demo's 5,543 words take 0.95 GiB for "
        "SmolLM2, 0.19 GiB for MiniLM) in "
        "features/<model>/word_activations.npy when a model's stories together take at most this many GiB, so "
        "the top-words step reads them instead of running the model a second time; above it (or 0) they are "
        "not kept and the top-words step runs the model again, with a warning."))
    baselines: list[Literal["phase_randomised", "untrained", "nuisance"]] = Field(default_factory=list, description=(
        "Pseudo-models run through the same encoding and association tests as the models: 'phase_randomised' "
        "(the baseline model's atoms with their Fourier phases randomised: same power spectra and mutual "
        "correlations, no story content), 'untrained' (the baseline model's architecture with random weights "
        "from its configuration, seed 'seed'), 'nuisance' (the low-level regressors of story/nuisance.tsv "
        "as atoms)."))
    baseline_model: str | None = Field(None, description="Whose untrained twin and phase-randomised atoms (default: the first model).")

    @model_validator(mode="after")
    def _baseline_model_is_a_model(self):
        if self.baseline_model is not None and self.baseline_model not in self.models:
            raise ValueError(f"'baseline_model' must be one of features.models {self.models}; "
                             f"{self.baseline_model!r} was provided.")
        return self


class AtomsConfig(_Section):
    """Sparse dictionary learning over ANs (METHOD section 2)."""

    n_atoms: int = Field(64, gt=0, description="k, the number of atoms (paper: 64).")
    alpha: float = Field(0.15, ge=0, description=(
        "Sparsity of the AN codes on the correlation scale: lambda_AN = alpha x the rms norm of the "
        "AN columns (= alpha x sqrt(n_volumes) for z-scored ANs), so an AN uses an atom only where "
        "its partial correlation with it exceeds about alpha (0.15 is ~2.6 SD of chance for white series at 300 volumes, only ~1.45 SD for smooth HRF-convolved ones: a sparsity level, not a test)."))
    max_iter: int = Field(100, gt=0, description="Alternations of code and atom updates at most.")
    tol: float = Field(1e-4, gt=0, description="Stop when the objective's relative decrease per iteration falls below this.")
    seed: int = Field(0, description="Seed of the dictionary's initialisation and atom replacements.")
    backend: Literal["numpy", "torch", "auto"] = Field("auto", description=(
        "Array library of the dictionary learning: numpy (coordinate descent on the CPU), torch "
        "(FISTA, on the GPU when present); auto: torch on a GPU, else numpy."))
    ans_per_layer: int | None = Field(None, gt=0, description=(
        "Draw this many ANs from every layer before learning (equal layers within a model; models with more "
        "layers still get more ANs: for a size control across models use ans_total)."))
    ans_total: int | None = Field(None, gt=0, description=(
        "Model-size control: draw this many ANs in all from every model (spread evenly over its layers when "
        "ans_by_layer), so models are compared on equal numbers of ANs."))
    ans_by_layer: bool = Field(True, description="With ans_total: spread the draw evenly over the layers.")
    size_draws: int = Field(1, ge=1, description=(
        "With ans_total or ans_per_layer: draws of ANs (seeded); the first is analysed, every draw learns a "
        "dictionary and the spread over draws is reported (variance explained, codes per AN, atoms matched "
        "to the first draw's at |r| >= 0.9)."))
    init: Literal["random", "svd"] = Field("random", description=(
        "Start of the dictionary: 'random' (n_atoms ANs drawn with 'seed': seeds change the start) or "
        "'svd' (the leading singular vectors: deterministic, 'seed' has no effect on it)."))
    orient: Literal["members", "none"] = Field("members", description=(
        "Sign rule: 'members' flips an atom (time course and codes together) when most of its member ANs "
        "have negative codes, so a positive atom means its ANs respond above their mean; 'none' keeps "
        "the learner's arbitrary signs."))
    stories: list[str] | None = Field(None, description=(
        "Stories whose volumes the dictionary is learned on (several stories); default every story. The atoms' "
        "time courses on the other stories are the least-squares projection of their ANs on the learned codes, "
        "so those stories are held out of the dictionary."))
    n_restarts: int = Field(1, ge=0, description=(
        "Extra starts (seeds seed+1, ...) learned only to report atom reproducibility: the fraction of "
        "atoms matched at |r| >= 0.9 from another start; 0: not measured."))


    @model_validator(mode="after")
    def _one_size_rule(self):
        if self.ans_per_layer is not None and self.ans_total is not None:
            raise ValueError(f"give at most one of 'ans_per_layer' ({self.ans_per_layer}) and 'ans_total' "
                             f"({self.ans_total}).")
        return self


class SimulateConfig(_Section):
    """Clearly labelled simulated subjects with a planted ground truth (see napari_brainorg.simulate)."""

    model: str | None = Field(None, description="Whose ANs make the planted sources (default: the first model).")
    sources: Literal["an_mix", "random_an_mix", "relearned", "atoms"] = Field("an_mix", description=(
        "What is planted: 'an_mix' the signed mean of n_members member ANs of an atom; 'random_an_mix' a sparse "
        "mix of n_members random ANs with random signs (members of no atom in particular: the atoms can only "
        "approximate it as a combination, some parts with negative weights); 'relearned' atoms of a "
        "dictionary learned again from another start on relearn_fraction of the ANs; 'atoms' the analysis' own "
        "atoms (easy: it only shows that the code runs)."))
    n_members: int = Field(30, gt=0, description="ANs in each source: averaged for 'an_mix', summed with random weights for 'random_an_mix' (e.g. 4).")
    relearn_fraction: float = Field(0.8, gt=0, le=1, description="Share of the ANs the 'relearned' dictionary sees.")
    links: dict[int, list[str]] | None = Field(None, description=(
        "source index -> networks it activates ('network' of atlas, or 'atlas:network'); None plants a default "
        "set of n_links sources that activate and deactivate networks of smith10 and yeo7."))
    negative_links: dict[int, list[str]] | None = Field(None, description="source index -> networks it deactivates.")
    n_links: int = Field(6, ge=0, description="Sources planted by default (when 'links' is None).")
    atlas: str = Field("smith10", description="Atlas whose networks receive the planted links (bundled name or NIfTI path).")
    n_subjects: int = Field(3, gt=0, description="Number of SIMULATED subjects.")
    r2_min: float = Field(0.02, gt=0, lt=1, description="Smallest true R2 of a signal voxel.")
    r2_max: float = Field(0.2, gt=0, lt=1, description="Largest true R2 of a signal voxel.")
    ar1_grey: float = Field(0.6, ge=0, lt=1, description="AR(1) of the noise in grey matter.")
    ar1_other: float = Field(0.2, ge=0, lt=1, description="AR(1) of the noise elsewhere.")
    hrf_delay_s: float = Field(1.5, ge=0, description="HRF delays lie in [-hrf_delay_s, hrf_delay_s].")
    hrf_dispersion_s: float = Field(1.5, ge=0, description="Extra HRF dispersion (Gaussian SD, s) in [0, this].")
    fluctuation_atlases: list[str] = Field(default_factory=lambda: ["smith10", "yeo7"], description=(
        "Atlases whose networks carry independent spontaneous fluctuations in every subject."))
    fluctuation_share: float = Field(0.3, ge=0, lt=1, description="Share of non-signal variance in network cores.")
    resolution_mm: float = Field(4.0, gt=0, description="Voxel size of the simulated grid in mm (the MNI template resampled).")
    seed: int = Field(0, description="Seed of the simulation (sources, noise, HRFs, fluctuations).")

    @model_validator(mode="after")
    def _r2_order(self):
        if self.r2_min > self.r2_max:
            raise ValueError(f"r2_min ({self.r2_min}) must not exceed r2_max ({self.r2_max}).")
        return self


class BidsConfig(_Section):
    """A BIDS data set: one run of the story's task per subject, selected by entity."""

    root: str = Field(..., description="The raw data set's top folder (its derivatives/ holds the preprocessed runs).")
    task: str | dict[str, str] = Field(..., description=(
        "The BIDS task of the story; with several stories a mapping story name -> task (a story not "
        "named is its own task)."))
    subjects: list[str] | None = Field(None, description="Subject labels ('001' or 'sub-001'); default every subject with the task.")
    sessions: list[str] | None = Field(None, description=(
        "Session labels ('1' or 'ses-1') whose runs are used; needed when a subject heard the story in several "
        "sessions (one run per subject is analysed)."))
    runs: list[str] | None = Field(None, description="Run labels (1 or 'run-1'), as for sessions.")
    entities: dict[str, str] = Field(default_factory=dict, description=(
        "Other entities a run must have, e.g. {acq: mb4} or {desc: preproc}."))
    derivative: str | None = Field("afni-nosmooth", description="Folder under derivatives/ with the runs; null: the raw runs.")
    space: str | None = Field("MNI152NLin2009cAsym", description="space- entity of the derivative runs.")

    @field_validator("sessions", "runs", mode="before")
    @classmethod
    def _labels_as_text(cls, value):
        # YAML reads `runs: [1, 2]` as numbers; BIDS labels are text
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            value = [value]
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value

    def selection(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~napari_brainorg.io.fmri.find_bids_runs` besides root and task."""
        return {"subjects": self.subjects, "sessions": self.sessions, "runs": self.runs,
                "entities": dict(self.entities), "derivative": self.derivative, "space": self.space}


class FMRIConfig(_Section):
    """fMRI of one or more subjects who heard the story: exactly one source."""

    images: list[str] | dict[str, list[str]] = Field(default_factory=list, description=(
        "4D NIfTI runs, one per subject; with several stories a mapping story name -> runs, one per subject "
        "in the same order."))
    regions: list[str] | dict[str, list[str]] = Field(default_factory=list, description=(
        "Region time series (CSV/TSV/NPY), one per subject; with several stories a mapping story name -> "
        "tables, one per subject in the same order."))
    bids: BidsConfig | None = None
    simulate: SimulateConfig | None = None
    subjects: list[str] | None = Field(None, description=(
        "Subject labels of the images or region tables, in their order (default: read from the file names)."))
    mask: str = Field("mni", description="'mni' (bundled MNI152 2 mm brain mask) or a NIfTI mask path.")

    @field_validator("images", "regions", mode="after")
    @classmethod
    def _expand_patterns(cls, value, info):
        # `regions: [sub-*_regions.tsv]` stands for the files it matches, sorted (as nilearn reads images)
        def expand(paths: list[str], where: str) -> list[str]:
            import glob
            import os

            out = []
            for p in paths:
                if glob.has_magic(p) and not Path(p).exists():
                    matches = sorted(glob.glob(os.path.expanduser(p)))
                    if not matches:
                        raise ValueError(f"{where}the pattern {p!r} matches no file; expected at least one "
                                         "run per pattern (or a list of files).")
                    out.extend(matches)
                else:
                    out.append(p)
            return out

        if isinstance(value, dict):
            return {name: expand(runs, f"story {name!r}: ") for name, runs in value.items()}
        return expand(value, "")

    @model_validator(mode="after")
    def _one_source(self):
        given = [n for n, v in (("images", self.images), ("regions", self.regions),
                                ("bids", self.bids), ("simulate", self.simulate)) if v]
        if len(given) != 1:
            raise ValueError(
                "fmri needs exactly one of 'images', 'regions', 'bids' or 'simulate'; "
                f"{'none' if not given else given} was given."
            )
        return self


class EncodingConfig(_Section):
    """Atoms as regressors of voxel-wise encoding models (METHOD section 3)."""

    models: list[Literal["sparse", "ridge"]] = Field(default_factory=lambda: ["sparse", "ridge"], min_length=1, description=(
        "Encoding models: sparse, the paper's in-sample lasso of each voxel on the atoms; ridge, the "
        "nested cross-validated ridge (held-out scores)."))
    sparse_alpha: float = Field(0.1, ge=0, description=(
        "Sparsity of the paper's per-voxel fit on the correlation scale: lambda_f = alpha x sqrt(n_volumes) "
        "for z-scored voxels and unit-norm atoms; an atom enters a voxel's fit only where their "
        "correlation exceeds about alpha."))
    alphas: list[float] = Field(default_factory=lambda: [float(10 ** e) for e in range(-1, 7)], description=(
        "Ridge penalties the inner cross-validation chooses from, per voxel and fold (standardised regressors)."))
    n_folds: int = Field(5, ge=2, description="Contiguous outer folds of the cross-validated ridge (held-out scores).")
    gap: int = Field(5, ge=0, description="Volumes left out between training and test blocks.")
    delays: list[int] = Field(default_factory=lambda: [0], description=(
        "FIR delays in volumes applied to the regressors of the ridge (0: the HRF-convolved atoms as they are)."))
    highpass_cutoff: float | None = Field(128.0, description="Cosine high-pass cut-off (s), applied to fMRI and atoms; None: off.")
    n_permutations: int = Field(0, ge=0, description="Circular-shift permutations for voxel significance (0: off).")
    baseline: bool = Field(False, description="Also fit the layer-wise population baseline with the same folds.")
    noise_model: Literal["ar1", "ols"] = Field("ar1", description=(
        "Noise model of the per-subject atom maps: 'ar1' (GLS with each voxel's AR(1) coefficient estimated "
        "from the fMRI minus drifts and confounds, without the atoms) or 'ols' (white noise)."))
    group_effects: Literal["auto", "random", "fixed"] = Field("auto", description=(
        "Group atom maps: 'random' (one-sample t over subjects), 'fixed' (Stouffer), 'auto' (random from "
        "min_subjects_random subjects, fixed below)."))
    min_subjects_random: int = Field(6, ge=2, description="Smallest number of subjects for random effects with group_effects 'auto'.")
    confounds: bool = Field(True, description=(
        "Fit the story's nuisance regressors (story/nuisance.tsv: word rate, length, frequency, pauses) with "
        "the atoms when the story step provides them."))
    save_timecourses: bool = Field(True, description=(
        "Save each subject's preprocessed fMRI and the model's prediction of every voxel (float32, "
        "8 x subjects x voxels x volumes bytes) for the viewer's measured-vs-predicted plot; false: off."))
    timecourses_max_gb: float = Field(2.0, gt=0, description=(
        "save_timecourses is skipped, with a warning, when those arrays would exceed this many GiB "
        "(they are held in memory until written: 20 subjects x 200,000 voxels x 1,000 volumes would be 30 GiB)."))
    leave_one_story_out: bool = Field(True, description=(
        "With several stories, also score the ridge leave-one-story-out: train on the other stories, test on "
        "the held-out one (r2_loso, r_loso per story), beside the contiguous folds (r2_cv)."))
    map_stories: list[str] | None = Field(None, description=(
        "Stories whose fMRI gives the atom maps and the network association tests (default: every story); "
        "with atoms.stories, naming the stories the dictionary did not see reports them on held-out stories."))
    sparse_null_shifts: int = Field(20, ge=0, description=(
        "Circular shifts of the atoms (the same for every subject) that refit the paper's sparse model to give "
        "its in-sample R2 a chance level (per voxel and per map); 0: off."))
    nuisance_comparison: bool = Field(True, description=(
        "With confounds on, also fit the nuisance regressors alone and together with the atoms (same folds and "
        "alpha grid): what the atoms add beyond word rate, length, frequency and pauses (r_cv_atoms_and_nuisance - "
        "r_cv_nuisance_only, per voxel or region and over subjects)."))
    chance_shifts: int = Field(10, ge=0, description=(
        "Circular shifts of each feature set (the same for every subject), with the nested CV and its alpha "
        "choice run again in each, that give the median held-out r its chance level; comparisons between "
        "feature sets (a model against a baseline, the atoms' gain over the nuisance regressors) subtract each "
        "set's own chance level; 0: off."))
    chance_voxels: int = Field(1000, ge=1, description=(
        "Voxels whose median held-out r summarises a subject in those comparisons: every voxel, or this many "
        "drawn once (seed), the same for every subject and feature set."))


class NetworksConfig(_Section):
    """Atom maps vs functional brain networks (METHOD section 4)."""

    atlases: list[str] = Field(default_factory=lambda: ["smith10", "yeo7"], min_length=1, description=(
        "Functional brain network atlases the atoms are tested against: a bundled one (smith10, "
        "smith10_thr3, yeo7, yeo7_liberal, yeo17, yeo17_liberal, schaefer400_yeo7) or a NIfTI path."))
    test: Literal["stimulus", "spatial"] = Field("stimulus", description=(
        "'stimulus' (default): does the atom's time course drive the network? Its unique coefficient on the "
        "network's contrast time series (mean inside minus outside) against draws that transform the atoms' "
        "time courses, the same draw for every subject, every subject refitted. 'spatial': does the thresholded "
        "group map sit on the network more than rigidly moved copies of itself? (a map-overlap question that "
        "smooth random regressors also pass; kept for comparison with the paper)."))
    null: Literal["phase", "shift"] = Field("phase", description=(
        "Stimulus null draws: 'phase' (phase randomisation, the same random phases for every atom and subject: "
        "any number of distinct draws) or 'shift' (circular shifts: at most n_volumes - 2 n_volumes/10 + 1)."))
    contribution: Literal["unique", "marginal"] = Field("unique", description=(
        "'unique': the atom's effect beyond the other atoms and the nuisance regressors (partial coefficient); "
        "'marginal': beyond the nuisance alone."))
    moved: Literal["auto", "all", "conditional", "unique"] = Field("auto", description=(
        "What a stimulus-null draw moves: 'all' atoms together (exact under autocorrelated noise when no atom "
        "drives the network; used with fixed effects); 'conditional': the tested atom's unique part, every "
        "subject refitted with the other atoms unchanged, statistic = the subjects' mean effect over its "
        "between-subject standard error (a conditional randomisation test; used with random effects); "
        "'unique': the tested atom's unique part against the full model's residual with a t over subjects "
        "(ter Braak; liberal on strongly driven networks, kept for comparison); 'auto' picks by the group model."))
    network_score: Literal["mean", "contrast"] = Field("mean", description=(
        "Continuous network score of the unthresholded map tested by the stimulus test: its mean inside the "
        "network ('mean'; networks made disjoint, each voxel to its highest network) or inside minus outside "
        "('contrast': a strong driver of one network then lowers every other network's score)."))
    map_stat: Literal["z", "coef"] = Field("z", description=(
        "Map thresholded for display and for the descriptive overlap columns (and the 'spatial' test): the group "
        "z map (z) or the mean coefficient map (coef)."))
    threshold: float = Field(2.3, gt=0, description=(
        "Display threshold of the atom maps: |z| for map_stat 'z' (2.3, the level at which the bundled Smith "
        "2009 networks are defined), a robust z (median/MAD) for 'coef'."))
    score: Literal["overlap_rate", "dice", "correlation"] = Field("overlap_rate", description=(
        "Descriptive score shown in tables and figures (the score tested with test 'spatial')."))
    n_permutations: int | None = Field(None, ge=0, description=(
        "Null draws; default 10000 for the stimulus test (p down to 1e-4, enough for FDR over hundreds of "
        "tests), 500 for the spatial test. 0: no test."))
    n_refine: int = Field(90_000, ge=0, description=(
        "With the stimulus test's 'phase' null: further draws, at most, for the cells that no first draw "
        "reached (p at the floor 1 / (1 + n_permutations)); those cells' p counts their every draw (floor 1e-5 by "
        "default), the others keep theirs. A valid two-stage Monte Carlo p; it lets strong links pass FDR over "
        "thousands of tests (2 models x 64 atoms x 34 networks x 2 directions). 0: off."))
    sequential_h: int = Field(20, ge=0, description=(
        "With the stimulus test: a cell (atom x network x direction) stops drawing once this many null draws "
        "reached its observed statistic, with p = h / (its draws) (Besag & Clifford's sequential Monte Carlo p, "
        "valid), so cells far from significance stop after a few hundred draws; a cell at the floor gets the "
        "further draws only where the FDR does not already declare it at the floor. 0: the fixed-budget test "
        "(every cell makes every draw, every floor cell every further draw)."))
    alpha: float = Field(0.05, gt=0, lt=1, description="FDR level of the association tests (Benjamini-Hochberg q).")
    min_score: float = Field(0.1, ge=0, description="With test 'spatial', an association also needs at least this score.")
    fdr_across_models: bool = Field(True, description=(
        "With test 'stimulus': Benjamini-Hochberg over atoms x networks x both directions x every model of the run "
        "(per atlas), so the run's claims about all its models hold at 'alpha'; false: each model corrected alone "
        "(its q is kept as q_model either way). Baselines are corrected alone."))
    min_effect: float = Field(0.05, ge=0, description=(
        "With test 'stimulus', an association also needs |effect| >= this: the atom moves the network's mean "
        "voxel by at least this many SD per SD of the atom (0.05: 0.25 % of its variance)."))
    min_relative_effect: float = Field(0.25, ge=0, le=1, description=(
        "With test 'stimulus', an association also needs |effect| >= this fraction of the atom's largest |effect| "
        "over the networks of every atlas: a network reached only by spill from the atom's main network (overlapping "
        "templates, smooth maps) is not called a link. Removing declarations keeps the FDR control."))
    min_network_relative_effect: float = Field(0.5, ge=0, le=1, description=(
        "With test 'stimulus', an association also needs |effect| >= this fraction of the largest |effect| among "
        "the atoms declared for the same network: its main drivers are named, not atoms that take up a small "
        "remainder of a driver they do not match (a time course spread over several atoms, an HRF unlike the "
        "atoms' canonical one). 0: off. Removing declarations keeps the FDR control."))
    min_network_relative_marginal: float = Field(0.5, ge=0, le=1, description=(
        "With test 'stimulus', an association also needs the atom's correlation with the network's mean time "
        "series to have the sign of the link and to reach this fraction of the largest |r| of any atom with that "
        "network: a link names atoms that follow the network, not atoms whose unique part only adjusts the "
        "others' fit (the parts of a time course spread over several atoms, suppressors). 0: off. Removing "
        "declarations keeps the FDR control."))


class PipelineConfig(_Section):
    """Everything one run needs; the same object for the CLI and the napari widgets."""

    story: StoryConfig = Field(default_factory=StoryConfig, description=(
        "The story (one story); with 'stories' it is the first of them."))
    stories: list[StoryConfig] | None = Field(None, min_length=1, description=(
        "Several stories heard by the same subjects, each with its own timing, onset, TR and volumes; their "
        "runs are analysed one after another (drifts and confounds per run)."))
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    atoms: AtomsConfig = Field(default_factory=AtomsConfig)
    fmri: FMRIConfig = Field(default_factory=lambda: FMRIConfig(simulate=SimulateConfig()))
    encoding: EncodingConfig = Field(default_factory=EncodingConfig)
    networks: NetworksConfig = Field(default_factory=NetworksConfig)
    out: str = Field(..., description="Output folder (new, empty, or a previous napari-brainorg result).")
    seed: int = Field(0, description="Seed of every random draw of the run (folds' shifts, nulls, splits).")

    @field_validator("out")
    @classmethod
    def _out_nonempty(cls, v: str) -> str:
        if not str(v).strip():
            raise ValueError("'out' must name a folder.")
        return v

    @model_validator(mode="after")
    def _stories_agree(self):
        if self.stories is None:
            return self
        if "story" not in self.model_fields_set:
            # `story` holds the first story, so that single-story code reads config.story
            object.__setattr__(self, "story", self.stories[0])
        elif self.story != self.stories[0]:
            raise ValueError("give either 'story' (one story) or 'stories' (a list), not both.")
        names = [s.label for s in self.stories]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"stories: names must be unique; {dup} occur more than once (set 'name' to tell them "
                             "apart).")
        for key, chosen in (("atoms.stories", self.atoms.stories), ("encoding.map_stories", self.encoding.map_stories)):
            for name in chosen or []:
                if name not in names:
                    raise ValueError(f"{key}: {name!r} is not a story; the stories are {names}."
                                     + did_you_mean(name, names))
        if self.atoms.stories is not None and not self.atoms.stories:
            raise ValueError("atoms.stories must name at least one story (or be null for every story).")
        mapped = self.encoding.map_stories or names
        if self.networks.test == "stimulus" and self.networks.null == "shift" and len(mapped) > 1:
            raise ValueError(f"networks.null: 'shift' moves one series, but the association tests read {len(mapped)} "
                             f"stories ({mapped}); use 'phase' (each story's phases drawn on their own) or set "
                             "encoding.map_stories to one story.")
        return self

    @model_validator(mode="after")
    def _runs_per_story(self):
        names = [s.label for s in self.story_list]
        fc = self.fmri
        for key in ("images", "regions"):
            runs = getattr(fc, key)
            if isinstance(runs, dict):
                missing = [n for n in names if n not in runs]
                extra = [n for n in runs if n not in names]
                if missing or extra:
                    raise ValueError(
                        f"fmri.{key} must map every story to its runs: the stories are {names}"
                        + (f"; missing {missing}" if missing else "") + (f"; not a story {extra}" if extra else "")
                        + "." + (did_you_mean(extra[0], names) if extra else ""))
                counts = {n: len(runs[n]) for n in names}
                if len(set(counts.values())) > 1:
                    raise ValueError(f"fmri.{key}: every story needs one run per subject, in the same order; "
                                     f"the stories have {counts} runs.")
                if not all(counts.values()):
                    raise ValueError(f"fmri.{key}: every story needs one run per subject; {counts} were given.")
            elif runs and len(names) > 1:
                raise ValueError(f"fmri.{key}: with several stories, give a mapping story name -> runs (one per "
                                 f"subject) for the stories {names}; a list of {len(runs)} runs was provided.")
        if fc.bids is not None and isinstance(fc.bids.task, dict):
            extra = [n for n in fc.bids.task if n not in names]
            if extra:
                raise ValueError(f"fmri.bids.task names {extra}, which are not stories; the stories are {names}."
                                 + did_you_mean(extra[0], names))
        elif fc.bids is not None and len(names) > 1:
            raise ValueError(f"fmri.bids.task: with several stories, give a mapping story name -> BIDS task "
                             f"(a story not named is its own task); {fc.bids.task!r} was provided.")
        return self

    @property
    def story_list(self) -> list[StoryConfig]:
        """Every story of the run, in order (one for a single-story config)."""
        return list(self.stories) if self.stories else [self.story]

    @property
    def multi_story(self) -> bool:
        return bool(self.stories) and len(self.stories) > 1


_SECTIONS = {
    "story": StoryConfig, "stories": StoryConfig, "features": FeaturesConfig, "atoms": AtomsConfig, "fmri": FMRIConfig,
    "encoding": EncodingConfig, "networks": NetworksConfig, "simulate": SimulateConfig, "bids": BidsConfig,
}


def _model_for_loc(loc: tuple) -> type[BaseModel]:
    model: type[BaseModel] = PipelineConfig
    for part in loc[:-1]:
        if isinstance(part, str) and part in _SECTIONS:
            model = _SECTIONS[part]
    return model


def _explain(exc: ValidationError, source: str) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        where = ".".join(str(p) for p in loc) or "(top level)"
        if err.get("type") == "extra_forbidden":
            key = str(loc[-1])
            allowed = list(_model_for_loc(loc).model_fields)
            lines.append(f"unknown key {where!r}; allowed here: {allowed}.{did_you_mean(key, allowed)}")
        else:
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            # a check across sections names its keys and values itself
            lines.append(f"{where}: {msg} (got {err.get('input')!r})" if loc else msg)
    return ConfigError(f"Invalid configuration in {source}: " + "; ".join(lines))


def make_config(data: dict[str, Any] | None = None, source: str = "the configuration", **overrides) -> PipelineConfig:
    """Build a validated :class:`PipelineConfig` from a dict, with clear errors."""
    data = dict(data or {})
    data.update(overrides)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, source) from None


def load_config(path: str | Path, **overrides) -> PipelineConfig:
    """Read a YAML (or JSON) configuration file.

    Relative paths inside the file are taken relative to the file's folder.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Configuration file {str(path)!r} does not exist.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{str(path)!r} must hold a mapping of sections; got {type(data).__name__}.")
    data = _resolve_paths(data, path.parent)
    return make_config(data, source=repr(str(path)), **overrides)


def _resolve_paths(data: dict, base: Path) -> dict:
    """Relative paths are taken from the configuration file's folder, never from the
    current directory; a bare name that is not a file there (a bundled story, atlas or
    model, a hub id) stays a name."""
    from ..datasets import BUNDLED_ATLASES, list_stories

    def fix(p, names=()):
        if p is None or not isinstance(p, str):
            return p
        pp = Path(p).expanduser()
        if pp.is_absolute():
            return str(pp)
        if not (base / pp).exists() and p in names:
            return p
        return str((base / pp).resolve())

    def fix_name_or_path(p, names=()):
        # a name (no folder, no file extension) that is not beside the config stays a name
        if isinstance(p, str) and not (base / p).exists() and ("/" not in p and "." not in Path(p).name
                                                                or p in names):
            return p
        return fix(p)

    data = json.loads(json.dumps(data))  # deep copy of plain YAML data
    stories = data.get("stories") if isinstance(data.get("stories"), list) else []
    for story in [data.get("story"), *stories]:
        if isinstance(story, dict):
            if story.get("path") is not None:
                story["path"] = fix_name_or_path(story["path"], list_stories())
            if story.get("events") is not None:
                story["events"] = fix(story["events"])
    fmri = data.get("fmri")
    if isinstance(fmri, dict):
        for key in ("images", "regions"):
            if isinstance(fmri.get(key), list):
                fmri[key] = [fix(p) for p in fmri[key]]
            elif isinstance(fmri.get(key), dict):
                fmri[key] = {name: [fix(p) for p in runs] if isinstance(runs, list) else runs
                             for name, runs in fmri[key].items()}
        if fmri.get("mask") not in (None, "mni"):
            fmri["mask"] = fix(fmri["mask"])
        if isinstance(fmri.get("bids"), dict) and "root" in fmri["bids"]:
            fmri["bids"]["root"] = fix(fmri["bids"]["root"])
    features = data.get("features")
    if isinstance(features, dict) and features.get("offload_folder") is not None:
        features["offload_folder"] = fix(features["offload_folder"])
    networks = data.get("networks")
    if isinstance(networks, dict) and isinstance(networks.get("atlases"), list):
        networks["atlases"] = [fix_name_or_path(a, BUNDLED_ATLASES) for a in networks["atlases"]]
    features = data.get("features")
    if isinstance(features, dict) and isinstance(features.get("models"), list):
        # a model folder or .gguf beside the config; otherwise a bundled name or hub id
        features["models"] = [fix(m) if isinstance(m, str) and (base / m).exists() else m
                              for m in features["models"]]
    if isinstance(data.get("out"), str) and data["out"].strip():
        out = Path(str(data["out"])).expanduser()
        data["out"] = str(out if out.is_absolute() else (base / out).resolve())
    return data


# The demo's study design (README, "What the demo shows"). The subjects are the realistic
# simulation (SimulateConfig's defaults: sources mixed from MiniLM's member ANs, never the
# analysis' atoms; HRF delay and dispersion varying over voxels and subjects; AR(1) noise
# 0.6 in grey matter and 0.2 elsewhere; independent Smith-10 / Yeo-7 fluctuations in every
# subject; true R2 0.02-0.2). A planted link is seen only through the part of its atom that
# the other atoms do not explain, and the random-effects statistic (from 6 subjects) must
# beat that part's chance alignment with what the network does (conditional randomisation
# null). With 64 atoms over one 300-volume story that part is a few per cent of an atom's
# variance and the full design found 3 of 45 planted links over 5 seeds; more subjects
# barely help (20 subjects: 3 of 9), more volumes do: the full demo's subjects hear four
# Narratives stories (DEMO_STORIES, 1,460 volumes; benchmarks/bench_recovery.py --stories).
# The quick demo (16 atoms, pieman alone) has 8 subjects: recall about 0.8 at precision
# >= 0.9. The grid: 5 mm keeps the four-story recovery over 5 seeds (32 of 40 planted links,
# precision 0.92; 4 mm: 33 of 45, 0.95) with half of 4 mm's voxels; 6 mm does not (29 of 45).
DEMO_SUBJECTS = 6
DEMO_RESOLUTION_MM = 5.0
#: The full demo's stories and their volumes (the Narratives scans' lengths at TR 1.5 s).
DEMO_STORIES = {"pieman": 300, "lucy": 370, "bronx": 390, "notthefallintact": 400}
QUICK_SUBJECTS = 8
QUICK_RESOLUTION_MM = 6.0


def demo_stories(names=None) -> list[dict]:
    """``stories`` entries of bundled Narratives stories at TR 1.5 s, each with its scan's
    volumes (:data:`DEMO_STORIES`; 300 for another story); default: the full demo's."""
    return [{"path": name, "tr": 1.5, "n_volumes": DEMO_STORIES.get(name, 300), "onset": 0.0}
            for name in (DEMO_STORIES if names is None else names)]


def demo_config(out: str | Path, *, models: list[str] | None = None, quick: bool = False,
                resolution_mm: float | None = None) -> PipelineConfig:
    """The embedded default: Narratives stories, the bundled MiniLM and SmolLM2, simulated subjects.

    The full demo's subjects hear four stories (:data:`DEMO_STORIES`, 1,460 volumes); the
    quick one hears pieman alone.

    The simulated subjects' BOLD is driven by sources mixed from MiniLM's artificial
    neurons (the first model), under the realistic simulation (``SimulateConfig``'s
    defaults); the analysis learns its own atoms and must find the planted links.
    SmolLM2 is analysed the same way, which shows how a second model's atoms map onto
    the same planted networks.

    The full demo also runs the baselines (phase-randomised MiniLM atoms, untrained
    MiniLM, nuisance regressors) through the same tests. ``quick=True`` is a smaller run
    (fewer atoms and permutations, coarser grid, no baselines) for the napari sample data
    and the tests. ``resolution_mm`` overrides the simulated subjects' voxel size
    (:data:`DEMO_RESOLUTION_MM`, :data:`QUICK_RESOLUTION_MM`).
    """
    data: dict[str, Any] = {
        "story": {"path": "pieman", "onset": 0.0, "tr": 1.5, "n_volumes": 300},
        # centred word activations: the demo's planted design and its recovery figures (README) were
        # measured with them; the report's methods say so (features.center_words, default False)
        "features": {"models": models or (["minilm"] if quick else ["minilm", "smollm2"]), "center_words": True},
        "fmri": {"simulate": {"n_subjects": DEMO_SUBJECTS, "resolution_mm": DEMO_RESOLUTION_MM,
                              "atlas": "smith10"}},
        "networks": {"atlases": ["smith10", "yeo7"]},
        "out": str(out),
    }
    if quick:
        data["atoms"] = {"n_atoms": 16, "max_iter": 30}
        data["fmri"]["simulate"].update({"n_subjects": QUICK_SUBJECTS, "resolution_mm": QUICK_RESOLUTION_MM})
        data["encoding"] = {"n_folds": 3, "sparse_null_shifts": 10}
    else:
        # several stories: each atom's unique part needs more than one story's volumes (above)
        del data["story"]
        data["stories"] = demo_stories()
        # every claim of the demo beside the same test on story-free and untrained baselines
        data["features"]["baselines"] = ["phase_randomised", "untrained", "nuisance"]
        # five models (two language models, three baselines) x the subjects x 1,460 volumes: 10
        # shifts for the in-sample R2's chance level (each refits every voxel's lasso) keep the
        # full demo near half an hour on two cores
        data["encoding"] = {"sparse_null_shifts": 10}
    if resolution_mm is not None:
        data["fmri"]["simulate"]["resolution_mm"] = float(resolution_mm)
    return make_config(data, source="the demo configuration")


def config_to_yaml(config: PipelineConfig) -> str:
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
