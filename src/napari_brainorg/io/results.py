"""The result folder: written by the pipeline, read by the viewer and the tests.

Layout (see ``docs/architecture.md``)::

    OUT/summary.json, provenance.json, config.yaml
    OUT/story/words.tsv
    OUT/story/nuisance.tsv        low-level nuisance regressors per volume (confounds)
    OUT/story/stories.tsv, story/<story>/   several stories: each story's words and confounds
    OUT/features/<model>/...      (an_responses.npy, an_index.tsv, provenance.json)
    OUT/atoms/<model>/atoms.npy, codes.npz, atoms.tsv, layer_hist.tsv
    OUT/encoding/<model>/<entities>_desc-<model>_mask.nii.gz, ..._desc-<model>R2Cv_statmap.nii.gz,
        ..._desc-<model>AtomMapsZ_statmap.nii.gz ... (BIDS-derivative names, :mod:`._naming`),
        each with a JSON sidecar
    OUT/networks/<model>/association_activated.tsv, association_deactivated.tsv
    OUT/networks/atlas_<name>.nii.gz, atlas_<name>.tsv   (label image on the data grid, names, colours)
    OUT/figures/*.png

Tables are tab-separated with a JSON sidecar describing each column (:mod:`._columns`);
maps carry their space (sform/qform codes), units and a description in the header.

Every file is written atomically (a temporary name in the same folder, then
``os.replace``), so an interrupted run never leaves a half-written file that a later
run would trust. A folder holding files that napari-brainorg did not write is never
written into.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, FolderInUseError, IncompleteResultError
# map names and headers, table columns: what other tools read (re-exported here)
from ._columns import describe_columns
from ._naming import (  # noqa: F401
    GROUP_MAPS,
    STATMAPS,
    MapSpace,
    find_map,
    find_statmap,
    group_map_name,
    map_sidecar_name,
    set_map_header,
    set_nifti_meaning,
    statmap_model_label,
    statmap_name,
)

_log = logging.getLogger(__name__)

SUMMARY = "summary.json"
MARKER = ".napari-brainorg"
LOCK_FILE = ".napari-brainorg.lock"
HOLDER_FILE = ".napari-brainorg.run.json"
#: the run's warnings (category, message, source) as a JSON list
WARNINGS = "warnings.json"
#: the self-contained HTML report (``brainorg report``)
REPORT = "report.html"
#: BIDS-derivatives description of the folder
DATASET_DESCRIPTION = "dataset_description.json"


#: the tables of a result folder are tab-separated (BIDS); these older folders' tables were CSV
TABLE_SUFFIX, OLD_TABLE_SUFFIX = ".tsv", ".csv"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it onto ``target`` on success.

    ``suffix`` keeps the extension that some writers need (``.nii.gz``, ``.npy``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes the file private; results are meant to be read by others (umask applies)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as exc:
        if exc.filename is None:  # e.g. a full disk: say which file
            why = exc.strerror or f"{exc} (is the disk full?)"
            raise OSError(exc.errno, why, str(target)) from exc
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_output_folder(path: str | os.PathLike) -> Path:
    """Return ``path`` if napari-brainorg may write there, else raise.

    Allowed: a folder that does not exist yet, an empty folder, or a folder that
    napari-brainorg wrote before (it holds the ``.napari-brainorg`` marker).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"Output folder {str(path)!r} exists and is a file; expected a folder.")
    if path.is_dir() and any(path.iterdir()) and not (path / MARKER).exists():
        raise ConfigError(
            f"Output folder {str(path)!r} already holds files that napari-brainorg did not "
            "write; choose an empty or new folder so that nothing of yours is overwritten."
        )
    return path


class RunLock:
    """One run per result folder.

    The lock is a ``filelock.FileLock`` on ``OUT/.napari-brainorg.lock`` (released by the
    operating system when the process dies, so a killed run never blocks the next);
    ``OUT/.napari-brainorg.run.json`` names the holder.

    Parameters
    ----------
    folder : path-like
    timeout : float
        Seconds to wait for another run to give the folder back: 0 (default) fails at
        once, -1 waits as long as it takes (a part of a run split by subjects waits
        while another part runs the shared steps).

    Raises
    ------
    FolderInUseError
        Another process holds the folder.
    """

    def __init__(self, folder: str | os.PathLike, timeout: float = 0):
        from filelock import FileLock

        self.folder = Path(folder)
        self.timeout = timeout
        self._lock = FileLock(str(self.folder / LOCK_FILE), timeout=timeout)

    def __enter__(self) -> RunLock:
        from filelock import Timeout

        if self.timeout != 0 and is_locked(self.folder):
            holder = read_holder(self.folder)
            _log.info("waiting for %s (held by PID %s on %s)", self.folder, holder.get("pid"), holder.get("host"))
        try:
            self._lock.acquire()
        except Timeout:
            holder = read_holder(self.folder)
            who = (f"PID {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
                   if holder else "another process")
            raise FolderInUseError(
                f"Output folder {str(self.folder)!r} is in use by another napari-brainorg run "
                f"({who}); wait for it to finish or choose another 'out'."
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp = self.folder / f".{HOLDER_FILE}.{os.getpid()}.part"
        tmp.write_text(json.dumps(info) + "\n")
        os.replace(tmp, self.folder / HOLDER_FILE)
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        """Give the folder back (before the end of the ``with`` block; calling it again does nothing)."""
        if not self._lock.is_locked:
            return
        try:
            (self.folder / HOLDER_FILE).unlink(missing_ok=True)
        finally:
            self._lock.release()


def read_holder(folder: str | os.PathLike) -> dict:
    """The PID, host and start time of the run that holds ``folder`` ({} when unknown)."""
    try:
        return json.loads((Path(folder) / HOLDER_FILE).read_text())
    except (OSError, ValueError):
        return {}


def is_locked(folder: str | os.PathLike) -> bool:
    """True while a run holds ``folder``'s lock (probes without waiting)."""
    from filelock import FileLock, Timeout

    lock_path = Path(folder) / LOCK_FILE
    if not lock_path.exists():
        return False
    probe = FileLock(str(lock_path), timeout=0)
    try:
        probe.acquire()
    except Timeout:
        return True
    except OSError:  # a read-only folder: no run can hold it
        return False
    probe.release()
    return False


def check_complete(path: str | os.PathLike) -> Path:
    """Return ``path`` if it holds a finished result, else raise a one-line error.

    A run removes ``summary.json`` when it starts and writes it last, so a result folder
    without it was interrupted (or is being written): its files may mix two runs.

    Raises
    ------
    FileNotFoundError
        The folder does not exist.
    NotADirectoryError
        ``path`` is a file.
    IncompleteResultError
        A napari-brainorg folder without ``summary.json`` (a run in progress or interrupted).
    ValueError
        A folder that napari-brainorg did not write.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Result folder {str(path)!r} does not exist.")
    if not path.is_dir():
        raise NotADirectoryError(f"Result folder {str(path)!r} is a file; expected a folder written by "
                                 "`brainorg demo` or `brainorg run`.")
    if (path / SUMMARY).is_file():
        return path
    if (path / MARKER).exists():
        if is_locked(path):
            holder = read_holder(path)
            raise IncompleteResultError(
                f"Result folder {str(path)!r} is incomplete: a run is writing it now (PID "
                f"{holder.get('pid', '?')}, started {holder.get('started', '?')}); open it when it has finished."
            )
        raise IncompleteResultError(
            f"Result folder {str(path)!r} is incomplete: its last run did not finish (no {SUMMARY}), so "
            "its files may mix two runs; run the same command again to complete it."
        )
    raise ValueError(
        f"{str(path)!r} is not a napari-brainorg result folder: it has no {SUMMARY}. "
        "Run `brainorg demo --out DIR` or `brainorg run CONFIG.yaml` to make one."
    )


class ResultWriter:
    """Writes the files of a result folder, each one atomically.

    Parameters
    ----------
    path : path-like
        The output folder: new, empty, or written by napari-brainorg before.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = check_output_folder(path)
        self.path.mkdir(parents=True, exist_ok=True)
        #: where the run's maps lie (their names' entities and header codes); set once known
        self.space: MapSpace | None = None
        marker = self.path / MARKER
        if not marker.exists():
            marker.write_text("This folder was written by napari-brainorg.\n")

    def _target(self, rel: str | os.PathLike) -> Path:
        target = (self.path / rel).resolve()
        if self.path.resolve() not in target.parents:
            raise ConfigError(f"{str(rel)!r} is outside the output folder {str(self.path)!r}.")
        return target

    def write_json(self, rel: str, obj: Any) -> Path:
        target = self._target(rel)
        with atomic_path(target, ".json") as tmp:
            tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")
        return target

    def write_text(self, rel: str, text: str) -> Path:
        target = self._target(rel)
        with atomic_path(target, ".txt") as tmp:
            tmp.write_text(text)
        return target

    def write_npy(self, rel: str, array: np.ndarray) -> Path:
        target = self._target(rel)
        with atomic_path(target, ".npy") as tmp:
            np.save(tmp, np.asarray(array))
        return target

    def write_npz_sparse(self, rel: str, matrix) -> Path:
        import scipy.sparse as sp

        target = self._target(rel)
        with atomic_path(target, ".npz") as tmp:
            sp.save_npz(tmp, sp.csr_matrix(matrix))
        return target

    def write_nifti(self, rel: str, img, *, description: str | None = None, intent: str | None = None,
                    time_series: bool = False) -> Path:
        """Write a NIfTI image whose header says where it lies and in what units.

        sform and qform codes are :attr:`space`'s (4 on an MNI template's grid), else the
        image's own (2, aligned, where it has none); units mm, and s for a 4D
        ``time_series``; ``description`` and ``intent`` go into the header.
        """
        import nibabel as nib

        target = self._target(rel)
        name = Path(rel).name[: -len(".nii.gz")]
        if intent is None and name in GROUP_MAPS and isinstance(img, nib.Nifti1Image) \
                and not img.header["intent_code"]:
            # a map under its earlier name (``atom_maps_z.nii.gz``) keeps the meaning it had
            intent, description = GROUP_MAPS[name][2], description or GROUP_MAPS[name][3]
        if isinstance(img, nib.Nifti1Image):
            set_map_header(img, code=self.space.xform_code if self.space is not None else None,
                           description=description, intent=intent, time_series=time_series)
        suffix = ".nii.gz" if str(rel).endswith(".gz") else ".nii"
        with atomic_path(target, suffix) as tmp:
            nib.save(img, tmp)
        return target

    def write_map(self, model: str, name: str, img, sidecar: dict | None = None) -> str:
        """Write one of ``encoding/<model>/``'s maps under its BIDS-derivative name, with its sidecar.

        Parameters
        ----------
        model : str
            The model's short name.
        name : str
            A key of :data:`GROUP_MAPS` (``"r2_cv"``, ``"atom_maps_z"``, ``"mask"``...).
        img : nibabel.Nifti1Image
        sidecar : dict, optional
            More fields of the JSON sidecar (the model, the method...).

        Returns
        -------
        str
            The map's path inside the folder.
        """
        space = self.space or MapSpace()
        _, suffix, intent, meaning, units = GROUP_MAPS[name]
        rel = group_map_name(model, name, space)
        self.write_nifti(rel, img, description=f"{model} {meaning}", intent=intent)
        meta = {"Description": meaning, "Units": units, "MapName": name}
        if suffix == "mask":
            meta["Type"] = "Brain"  # BIDS' mask type: the brain voxels analysed
        if suffix == "statmap" and len(img.shape) == 4:
            meta["Volumes"] = ("one per atom (atom 0 first)" if name.startswith("atom_maps")
                               else "one per held-out story (stories.tsv order)" if name.endswith("stories")
                               else "one per layer (baseline.tsv order)")
        if space.resolution():
            meta["Resolution"] = space.resolution()
        self.write_json(map_sidecar_name(rel), {**meta, **(sidecar or {})})
        return rel

    def write_table(self, rel: str, df) -> Path:
        """Write a DataFrame as a tab-separated ``.tsv`` with its BIDS JSON sidecar.

        The sidecar (``NAME.json`` beside ``NAME.tsv``) describes each column (``LongName``,
        ``Description``, ``Units``) from :mod:`._columns`.
        """
        if not str(rel).endswith(TABLE_SUFFIX):
            raise ValueError(f"{str(rel)!r}: the tables of a result folder are tab-separated; expected a "
                             f"name ending in {TABLE_SUFFIX!r}.")
        target = self._target(rel)
        with atomic_path(target, TABLE_SUFFIX) as tmp:
            df.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
        self.write_json(str(Path(rel).with_suffix(".json")), describe_columns(Path(rel).name, df.columns))
        return target

    def write_figure(self, rel: str, fig, dpi: int = 110) -> Path:
        target = self._target(rel)
        with atomic_path(target, ".png") as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
        import matplotlib.pyplot as plt

        plt.close(fig)
        return target


class PredictedCourses:
    """Every subject's predicted course of every voxel, formed on indexing.

    ``predicted[s, v, t] = design[t] @ weights[s, v] + intercept[s, v]``: the arrays hold
    the design once and a few numbers per voxel, where the courses themselves would
    hold n_volumes per voxel and subject. Indexed like an array of shape (n_subjects,
    n_voxels, n_volumes); ``np.asarray`` forms all of it.

    Parameters
    ----------
    design : ndarray of shape (n_volumes, n_features)
    weights : ndarray of shape (n_subjects, n_voxels, n_features)
    intercept : ndarray of shape (n_subjects, n_voxels)
    """

    def __init__(self, design: np.ndarray, weights: np.ndarray, intercept: np.ndarray):
        self.design, self.weights, self.intercept = design, weights, intercept
        self.shape = (weights.shape[0], weights.shape[1], design.shape[0])
        self.dtype = np.dtype(np.float32)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        w = np.asarray(self.weights[key[0], key[1]], np.float64)
        b = np.asarray(self.intercept[key[0], key[1]], np.float64)
        courses = w @ self.design.astype(np.float64).T + b[..., None]
        return courses[..., key[2]].astype(np.float32)

    def __array__(self, dtype=None, copy=None):
        full = self[:, :, :]
        return full if dtype is None else full.astype(dtype)


class HeldOutCourses:
    """Every subject's held-out (cross-validated) prediction of every voxel, formed on indexing.

    Each outer fold's volumes are predicted by the ridge fitted on that fold's training
    volumes (the design standardised on them, the voxel centred on them) with the alpha
    the inner cross-validation chose for that fold and voxel: what the held-out scores
    were computed from. Indexed like an array of shape (n_subjects, n_voxels, n_volumes);
    meant for a few voxels at a time (a click).

    Parameters
    ----------
    measured : array of shape (n_subjects, n_voxels, n_volumes)
        The fMRI the ridge was fitted to.
    design : ndarray of shape (n_volumes, p)
        The ridge's design (delayed, filtered).
    alpha_folds : array of shape (n_subjects, n_voxels, n_folds)
    folds : list of (train, test)
    """

    def __init__(self, measured, design: np.ndarray, alpha_folds, folds):
        self.measured, self.design, self.alpha_folds, self.folds = measured, design, alpha_folds, folds
        self.shape = tuple(measured.shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def _one(self, s: int, v: int) -> np.ndarray:
        X = np.asarray(self.design, np.float64)
        y = np.asarray(self.measured[s, v], np.float64)
        out = np.zeros(self.shape[2])
        for f, (train, test) in enumerate(self.folds):
            Xtr = X[train]
            m = Xtr.mean(0)
            sd = np.sqrt(((Xtr - m) ** 2).mean(0))
            sd = sd + (sd <= 0)
            Xs = (Xtr - m) / sd
            y_mean = y[train].mean()
            alpha = float(self.alpha_folds[s, v, f])
            w = np.linalg.solve(Xs.T @ Xs + alpha * np.eye(X.shape[1]), Xs.T @ (y[train] - y_mean))
            out[test] = ((X[test] - m) / sd) @ w + y_mean
        return out

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        subjects = np.arange(self.shape[0])[key[0]]
        voxels = np.arange(self.shape[1])[key[1]]
        courses = np.array([[self._one(int(s), int(v)) for v in np.atleast_1d(voxels)]
                            for s in np.atleast_1d(subjects)])
        if np.ndim(voxels) == 0:
            courses = courses[:, 0]
        if np.ndim(subjects) == 0:
            courses = courses[0]
        return courses[..., key[2]].astype(np.float32)

    def __array__(self, dtype=None, copy=None):
        full = self[:, :, :]
        return full if dtype is None else full.astype(dtype)


class ResultFolder:
    """Read access to a result folder written by the pipeline.

    Parameters
    ----------
    path : path-like
        A folder holding ``summary.json``.

    Raises
    ------
    FileNotFoundError
        The folder does not exist.
    IncompleteResultError
        A run into the folder started and did not finish (or is running now): its
        files may mix two runs (subclass of ``ValueError``).
    ValueError
        The folder is not a napari-brainorg result (no ``summary.json``).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = check_complete(path)
        summary = self.path / SUMMARY
        try:
            self.summary: dict = json.loads(summary.read_text())
        except ValueError:
            raise IncompleteResultError(
                f"{str(summary)!r} is not valid JSON; the result folder is damaged: run the same "
                "command again to rewrite it."
            ) from None

    def __repr__(self) -> str:
        return f"ResultFolder({str(self.path)!r}, models={self.models})"

    def verify(self) -> None:
        """Check every file a step stamped against the checksum recorded when it was written.

        Raises
        ------
        CorruptFileError
            A file that is missing, truncated or changed since the run wrote it
            (a subclass of ``ValueError``); the message names it.
        """
        from ..errors import CorruptFileError
        from ._identity import file_identity

        for stamp in sorted((self.path / ".cache").rglob("*.json")):
            try:
                recorded = json.loads(stamp.read_text()).get("outputs") or {}
            except (OSError, ValueError):
                raise CorruptFileError(f"{str(stamp)!r} is damaged; run the same command again to rebuild "
                                       "the result.") from None
            for rel, ident in recorded.items():
                path = self.path / rel
                if not path.is_file():
                    raise CorruptFileError(f"{str(path)!r} is missing from the result folder; run the same "
                                           "command again to rebuild it.")
                if file_identity(path) != ident:
                    raise CorruptFileError(
                        f"{str(path)!r} is damaged or changed since the run wrote it (checksum differs); "
                        "run the same command again to rebuild it.")

    # -- summary ------------------------------------------------------------------
    @property
    def models(self) -> list[str]:
        return list(self.summary.get("models", []))

    @property
    def tr(self) -> float:
        return float(self.summary["tr"])

    @property
    def n_volumes(self) -> int:
        return int(self.summary["n_volumes"])

    @property
    def simulated(self) -> bool:
        return bool(self.summary.get("simulated", False))

    def _check_model(self, model: str | None) -> str:
        if model is None:
            if not self.models:
                raise ValueError(f"{str(self.path)!r} holds no model results.")
            return self.models[0]
        if model not in self.models:
            from ..errors import check_choice

            check_choice("model", model, self.models)
        return model

    def file(self, rel: str) -> Path:
        return self.path / rel

    # -- images -------------------------------------------------------------------
    def template_path(self) -> Path:
        template = self.summary.get("template")
        if template and Path(template).exists():
            return Path(template)
        from ..datasets import mni_template_path

        return mni_template_path()

    def _nifti(self, rel: str):
        import nibabel as nib

        p = self.path / rel
        return nib.load(p) if p.exists() else None

    @property
    def space(self) -> MapSpace:
        """Where the maps lie (``task``, ``space``, ``res`` of their names; header code)."""
        return MapSpace.from_dict(self.summary.get("space"))

    def map_path(self, model: str | None = None, name: str = "r2_cv") -> Path | None:
        """The file of one of ``encoding/<model>/``'s maps, or None when the run wrote none.

        Parameters
        ----------
        model : str, optional
            A model of the run or one of its baselines (``summary["baselines"]``, whose
            folders sit beside the models'). Default: the first model.
        name : str
            What the map holds, a key of :data:`GROUP_MAPS`: ``"mask"``, ``"r2_cv"``,
            ``"r_cv"``, ``"atom_maps"``, ``"atom_maps_z"``, ``"noise_ceiling"``, ``"q_cv"``...
            Found under its BIDS-derivative name
            (``task-pieman_space-MNI152NLin6Asym_res-2mm_desc-minilmR2Cv_statmap.nii.gz``)
            or the older ``r2_cv.nii.gz``.
        """
        from ..errors import check_choice

        check_choice("name", name, tuple(GROUP_MAPS))
        baselines = self.summary.get("baselines") or {}
        return find_map(self.path, model if model in baselines else self._check_model(model), name)

    def map_img(self, model: str | None = None, name: str = "r2_cv"):
        """:meth:`map_path` as a nibabel image, or None."""
        import nibabel as nib

        path = self.map_path(model, name)
        return nib.load(path) if path is not None else None

    def map_sidecar(self, model: str | None = None, name: str = "r2_cv") -> dict | None:
        """The JSON sidecar of :meth:`map_path` (what the map holds, units, method), or None."""
        path = self.map_path(model, name)
        if path is None:
            return None
        side = Path(map_sidecar_name(str(path)))
        return json.loads(side.read_text()) if side.exists() else None

    def mask_img(self, model: str | None = None):
        return self.map_img(model, "mask")

    def r2_map(self, model: str | None = None, kind: str = "cv"):
        from ..errors import check_choice

        check_choice("kind", kind, ("cv", "sparse"))
        return self.map_img(model, f"r2_{kind}")

    def atom_maps(self, model: str | None = None, stat: str = "coef"):
        from ..errors import check_choice

        check_choice("stat", stat, ("coef", "z"))
        return self.map_img(model, "atom_maps" if stat == "coef" else "atom_maps_z")

    # -- arrays and tables --------------------------------------------------------
    def atom_timecourses(self, model: str | None = None) -> np.ndarray:
        return np.load(self.path / f"atoms/{self._check_model(model)}/atoms.npy")

    def voxel_timecourses(self, model: str | None = None) -> dict | None:
        """Measured and predicted time courses of every voxel (or region), read lazily.

        Returns
        -------
        dict or None
            ``measured``: a read-only memory map of shape (n_subjects, n_voxels,
            n_volumes), float32, voxels in the order of the model's ``mask.nii.gz``;
            ``predicted``: the same shape, formed on indexing from the model's design and
            each subject's weights (:class:`PredictedCourses`: a click reads one voxel's
            weights); ``subjects``; ``predicted_label`` (which model's prediction, in or
            out of sample); ``heldout`` and ``heldout_label``: the held-out
            (cross-validated) prediction of the same shape and its description when the
            result has ``voxel_predicted_heldout.npy``, else ``None`` and ``""``; ``None``
            when the run saved no time courses (``encoding.save_timecourses: false``).
        """
        folder = self.path / f"encoding/{self._check_model(model)}"
        info_file = folder / "voxel_timecourses.json"
        if not info_file.exists():
            return None
        info = json.loads(info_file.read_text())
        if "measured_file" in info:
            files = [folder / info["measured_file"], folder / "voxel_design.npy", folder / "voxel_weights.npy",
                     folder / "voxel_intercept.npy"]
            if not all(f.exists() for f in files):
                return None
            measured = np.load(files[0], mmap_mode="r")
            predicted = PredictedCourses(np.load(files[1]), np.load(files[2], mmap_mode="r"),
                                         np.load(files[3], mmap_mode="r"))
        else:  # a result written with both arrays in full
            files = [folder / n for n in ("voxel_measured.npy", "voxel_predicted.npy")]
            if not all(f.exists() for f in files):
                return None
            measured, predicted = (np.load(f, mmap_mode="r") for f in files)
        heldout, heldout_label = None, ""
        if isinstance(info.get("heldout"), dict) and (folder / "voxel_alpha_folds.npy").exists():
            with np.load(folder / "voxel_folds.npz") as arr:
                folds = [(arr[f"train_{i}"], arr[f"test_{i}"]) for i in range(len(arr.files) // 2)]
            heldout = HeldOutCourses(measured, np.load(folder / "voxel_heldout_design.npy"),
                                     np.load(folder / "voxel_alpha_folds.npy", mmap_mode="r"), folds)
            heldout_label = str(info["heldout"].get("label", "held-out prediction"))
        elif (folder / "voxel_predicted_heldout.npy").exists():
            heldout = np.load(folder / "voxel_predicted_heldout.npy", mmap_mode="r")
            heldout_label = str(info.get("predicted_heldout", "held-out prediction"))
        return {"measured": measured, "predicted": predicted,
                "subjects": list(info.get("subjects", [])), "predicted_label": str(info.get("predicted", "")),
                "model": info.get("model"),
                "heldout": heldout, "heldout_label": heldout_label}

    def codes(self, model: str | None = None):
        import scipy.sparse as sp

        return sp.load_npz(self.path / f"atoms/{self._check_model(model)}/codes.npz")

    def table_path(self, rel: str) -> Path | None:
        """A table of the folder: ``rel`` (``.tsv``), or the same name as ``.csv`` (older
        folders), or None."""
        p = self.path / rel
        if p.exists():
            return p
        old = p.with_suffix(OLD_TABLE_SUFFIX) if p.suffix == TABLE_SUFFIX else None
        return old if old is not None and old.exists() else None

    def _table(self, rel: str, text_columns: tuple[str, ...] = ()):
        import pandas as pd

        p = self.table_path(rel)
        if p is None:
            return None
        # text columns stay text (an empty cell is "", not a float NaN; "3" stays "3")
        table = pd.read_csv(p, sep="\t" if p.suffix == ".tsv" else ",",
                            dtype={c: str for c in text_columns})
        for c in text_columns:
            if c in table.columns:
                table[c] = table[c].fillna("")
        return table

    @property
    def is_region_result(self) -> bool:
        """True when the fMRI was given as region time series (tables per region, no maps)."""
        fmri = self.summary.get("fmri")
        if isinstance(fmri, dict) and fmri.get("kind") == "regions":
            return True
        return any(self.table_path(f"encoding/{m}/regions.tsv") is not None for m in self.models)

    def region_table(self, model: str | None = None):
        """``encoding/<model>/regions.tsv``: one row per region (``region``, ``r_cv`` with
        ``r_cv_ci_low``/``r_cv_ci_high`` over subjects, R², q, ``noise_ceiling``, and one
        ``r_cv_<baseline>`` column per baseline); ``None`` when absent (a voxel result)."""
        return self._table(f"encoding/{self._check_model(model)}/regions.tsv", text_columns=("region",))

    def region_atom_table(self, model: str | None = None, stat: str = "coef"):
        """``encoding/<model>/atom_maps.tsv`` (``stat='coef'``) or ``atom_maps_z.tsv``
        (``'z'``): regions x atoms (index ``region``, columns ``atom_<i>``); ``None`` when absent."""
        from ..errors import check_choice

        check_choice("stat", stat, ("coef", "z"))
        name = "atom_maps.tsv" if stat == "coef" else "atom_maps_z.tsv"
        df = self._table(f"encoding/{self._check_model(model)}/{name}", text_columns=("region",))
        if df is not None and "region" in df.columns:
            df = df.set_index("region")
        return df

    def an_index(self, model: str | None = None):
        return self._table(f"features/{self._check_model(model)}/an_index.tsv")

    def atoms_table(self, model: str | None = None):
        return self._table(f"atoms/{self._check_model(model)}/atoms.tsv",
                           text_columns=("main_layers", "networks_activated", "networks_deactivated"))

    def layer_histogram(self, model: str | None = None):
        df = self._table(f"atoms/{self._check_model(model)}/layer_hist.tsv")
        if df is not None and "atom" in df.columns:
            df = df.set_index("atom")
        return df

    def associations(self, model: str | None = None, part: str = "activated"):
        from ..errors import check_choice

        check_choice("part", part, ("activated", "deactivated"))
        return self._table(f"networks/{self._check_model(model)}/association_{part}.tsv")

    def readout_table(self, model: str | None = None):
        """``networks/<model>/readout.tsv``: one driver per network with a declared atom
        (main atom, the atoms with weights and shares, held-out r with its CI); None when absent."""
        return self._table(f"networks/{self._check_model(model)}/readout.tsv",
                           text_columns=("atoms", "weights", "shares"))

    def baseline_table(self, model: str | None = None):
        """``encoding/<model>/baseline.tsv``: the layer-wise baseline's R2 beside the atoms'; None when absent."""
        return self._table(f"encoding/{self._check_model(model)}/baseline.tsv")

    def words_table(self):
        return self._table("story/words.tsv")

    def top_words(self, model: str | None = None):
        """``atoms/<model>/top_words.tsv``: per atom and direction ('activate', 'suppress') the
        words with the strongest word-level response, with context; ``None`` when absent."""
        return self._table(f"atoms/{self._check_model(model)}/top_words.tsv", text_columns=("word", "context"))

    def word_responses(self, model: str | None = None) -> np.ndarray | None:
        """``atoms/<model>/word_responses.npy``: (n_words, k) each atom's response to each word
        of :meth:`words_table`, before the HRF; ``None`` when absent."""
        p = self.path / f"atoms/{self._check_model(model)}/word_responses.npy"
        return np.load(p) if p.exists() else None

    def stories(self) -> list[dict]:
        """The stories of the run, in the order their volumes follow one another:
        ``story, n_volumes, tr, first_volume`` each (one entry for a single-story run).
        With several stories, every per-volume array (atoms, time courses, words'
        ``volume``) runs over the stories one after another; ``first_volume`` marks
        each boundary."""
        listed = self.summary.get("stories")
        if listed:
            return [{"story": s["story"], "n_volumes": int(s["n_volumes"]), "tr": float(s["tr"]),
                     "first_volume": int(s["first_volume"])} for s in listed]
        name = Path(str(self.config().get("story", {}).get("path", "story"))).name.split(".")[0]
        return [{"story": name, "n_volumes": self.n_volumes, "tr": self.tr, "first_volume": 0}]

    def story_boundaries(self) -> list[int]:
        """The volumes where a new story starts (empty for a single story)."""
        return [s["first_volume"] for s in self.stories()[1:]]

    def nuisance_table(self):
        """Nuisance regressors (volume, word_rate, word_length, word_frequency, pause)."""
        return self._table("story/nuisance.tsv")

    def words_per_volume(self) -> list[str]:
        """The words heard during each volume (``""`` where none)."""
        words = self.words_table()
        out = [""] * self.n_volumes
        if words is None:
            return out
        vols = words["volume"].to_numpy()
        for vol, word in zip(vols, words["word"].astype(str)):
            if 0 <= vol < self.n_volumes:
                out[vol] = f"{out[vol]} {word}".strip()
        return out

    # -- atlases ------------------------------------------------------------------
    def atlas_names(self) -> list[str]:
        return list(self.summary.get("atlases", []))

    def atlas_label_image(self, atlas: str):
        return self._nifti(f"networks/atlas_{atlas}.nii.gz")

    def _atlas_table(self, atlas: str):
        df = self._table(f"networks/atlas_{atlas}.tsv")
        if df is None:
            raise ValueError(f"{str(self.path)!r} has no table for atlas {atlas!r}.")
        return df

    def atlas_network_names(self, atlas: str) -> list[str]:
        return self._atlas_table(atlas)["network"].astype(str).tolist()

    def atlas_label_values(self, atlas: str) -> np.ndarray:
        """The integer value of each network in :meth:`atlas_label_image` (same order as the names)."""
        return self._atlas_table(atlas)["index"].to_numpy(dtype=int)

    def atlas_colors(self, atlas: str) -> np.ndarray:
        df = self._atlas_table(atlas)
        return df[["r", "g", "b", "a"]].to_numpy(dtype=float)

    def figures(self) -> list[Path]:
        return sorted((self.path / "figures").glob("*.png"))

    def figure(self, name: str) -> Path | None:
        """``figures/<name>.png`` when the run drew it, else ``None``."""
        p = self.path / "figures" / f"{name}.png"
        return p if p.exists() else None

    # -- run records --------------------------------------------------------------
    def _json(self, rel: str):
        p = self.path / rel
        return json.loads(p.read_text()) if p.exists() else None

    def provenance(self) -> dict:
        """``provenance.json``: configuration, package versions, cache keys, seed (``{}`` if absent)."""
        return self._json("provenance.json") or {}

    def config(self) -> dict:
        """The run's configuration as a dict (from ``provenance.json``)."""
        return dict(self.provenance().get("config", {}))

    def config_text(self) -> str:
        p = self.path / "config.yaml"
        return p.read_text() if p.exists() else ""

    def recovery(self) -> dict | None:
        """``recovery.json`` of a simulated run (planted links found), else ``None``."""
        return self._json("recovery.json")

    def run_warnings(self) -> list[dict]:
        """The warnings the latest run raised: dicts with category, message, source."""
        return list(self._json(WARNINGS) or [])

    def dataset_description(self) -> dict | None:
        return self._json(DATASET_DESCRIPTION)

    def subjects(self) -> list[str]:
        """Labels of the subjects whose maps are in ``maps/`` (``["01", "02"]``)."""
        return sorted(p.name[4:] for p in (self.path / "maps").glob("sub-*") if p.is_dir())

    def statmap(self, model: str | None = None, stat: str = "z", atom: int | None = None,
                subject: str | None = None):
        """A BIDS-derivatives map (see :func:`statmap_name`) as a nibabel image, or ``None``."""
        import nibabel as nib

        path = find_statmap(self.path, self._check_model(model), stat, atom, subject)
        return nib.load(path) if path is not None else None

    def report_path(self) -> Path:
        return self.path / REPORT

    # -- per-model extras -----------------------------------------------------------
    def comparison_tables(self) -> dict:
        """The model-comparison tables (``comparison/*.tsv``, or an older folder's ``*.csv``) by name."""
        out = {}
        for p in sorted((self.path / "comparison").glob("*.*sv")):
            if p.suffix in (TABLE_SUFFIX, OLD_TABLE_SUFFIX) and p.stem not in out:
                out[p.stem] = self._table(f"comparison/{p.stem}{TABLE_SUFFIX}")
        return out
