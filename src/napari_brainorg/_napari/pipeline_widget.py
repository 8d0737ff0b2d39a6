"""Pipeline widget: choose the inputs, run the pipeline in a thread, see the result.

The widget builds the same :class:`~napari_brainorg.pipeline.PipelineConfig` as
``brainorg run CONFIG.yaml`` (:meth:`PipelineWidget.config_dict` is that YAML's
content), runs it in a worker thread (:mod:`.workers`), shows its progress, and
turns the result folder into layers through :mod:`.layers`. A bad value or a
failed run becomes a napari notification; the viewer stays usable.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from . import layers as _layers
from ._docking import join_plugin_tabs

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from .workers import PipelineJob

FMRI_SOURCES = ("simulated subjects", "NIfTI files", "BIDS folder", "region time series")
ENCODINGS = {"both": ["sparse", "ridge"], "sparse": ["sparse"], "ridge": ["ridge"]}
#: the "quick" preset: the napari sample's size (16 atoms, 2 SIMULATED subjects on a 6 mm grid)
QUICK_PRESET = {"n_atoms": 16, "n_subjects": 2, "resolution_mm": 6.0, "n_permutations": 300,
                "n_folds": 3, "max_iter": 30}
NETWORK_ATLASES = ("smith10", "yeo7", "yeo17")


def _with_browse(edit: QLineEdit, chooser) -> QWidget:
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit, 1)
    button = QPushButton("…")
    button.setFixedWidth(28)
    button.clicked.connect(chooser)
    row.addWidget(button)
    return box


def _split_paths(text: str) -> list[str]:
    return [p.strip() for p in text.replace("\n", ";").split(";") if p.strip()]


class PipelineWidget(QWidget):
    """Dock widget that runs the whole pipeline (story → atoms → encoding → networks).

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Signals
    -------
    finished(object)
        The :class:`~napari_brainorg.io.results.ResultFolder`, once its layers are shown.
    failed(str)
        The message of a configuration error, a failed run or a cancelled run.
    """

    finished = Signal(object)
    failed = Signal(str)

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        join_plugin_tabs(self)  # from the Plugins menu too: a tab beside the plugin's other panels
        from ..datasets import list_stories

        self.viewer = napari_viewer
        self.job: PipelineJob | None = None
        self._stages: dict[str, tuple[int, int]] = {}
        self.overall = None
        self._quick = False

        # story
        self.story = QComboBox()
        self.story.setEditable(True)
        self.story.addItems(list_stories())
        self.story.setCurrentText("pieman")
        self.story.setToolTip("A bundled Narratives story, or a story file: Gentle align.json, "
                              "Narratives align.csv, word/onset/offset CSV/TSV, Praat TextGrid")
        self.onset = QDoubleSpinBox(decimals=2, minimum=-1e4, maximum=1e4, singleStep=0.5)
        self.onset.setToolTip("Seconds added to every word time: where the story starts in the scan")
        self.tr = QDoubleSpinBox(decimals=3, minimum=0.05, maximum=20.0, singleStep=0.1, value=1.5)
        self.n_volumes = QSpinBox(minimum=1, maximum=100000, value=300)
        # model
        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.addItems(["minilm", "smollm2"])
        self.model.setToolTip("A bundled model (minilm, smollm2), a Hugging Face folder, a GGUF file or a hub id")
        self.site = QComboBox()
        self.site.addItems(["ffn_hidden", "ffn_out", "residual"])
        # fMRI
        self.fmri_source = QComboBox()
        self.fmri_source.addItems(FMRI_SOURCES)
        self.fmri_pages = QStackedWidget()
        self.n_subjects = QSpinBox(minimum=1, maximum=100, value=3)
        self.sim_resolution = QDoubleSpinBox(decimals=1, minimum=2.0, maximum=12.0, singleStep=1.0, value=4.0)
        self.sim_atlas = QComboBox()
        self.sim_atlas.addItems(list(NETWORK_ATLASES))
        sim_page = QWidget()
        sim_form = QFormLayout(sim_page)
        sim_form.addRow("subjects", self.n_subjects)
        sim_form.addRow("grid (mm)", self.sim_resolution)
        sim_form.addRow("planted in", self.sim_atlas)
        self.fmri_files = QLineEdit()
        self.fmri_files.setPlaceholderText("sub-01_bold.nii.gz; sub-02_bold.nii.gz")
        self.mask = QLineEdit("mni")
        self.mask.setToolTip("'mni' (the bundled MNI152 2 mm brain mask) or a NIfTI mask")
        files_page = QWidget()
        files_form = QFormLayout(files_page)
        files_form.addRow("4D NIfTI", _with_browse(self.fmri_files, self._choose_fmri_files))
        files_form.addRow("mask", _with_browse(self.mask, self._choose_mask))
        self.bids_root = QLineEdit()
        self.bids_task = QLineEdit()
        self.bids_task.setPlaceholderText("the story's name")
        self.bids_subjects = QLineEdit()
        self.bids_subjects.setPlaceholderText("all (or: 001, 002)")
        bids_page = QWidget()
        bids_form = QFormLayout(bids_page)
        bids_form.addRow("root", _with_browse(self.bids_root, self._choose_bids_root))
        bids_form.addRow("task", self.bids_task)
        bids_form.addRow("subjects", self.bids_subjects)
        self.region_files = QLineEdit()
        self.region_files.setPlaceholderText("sub-01_regions.tsv; sub-02_regions.tsv")
        self.region_files.setToolTip("One table per subject (CSV/TSV with one column per region, one row "
                                     "per volume, or NPY): the result is a region result")
        regions_page = QWidget()
        regions_form = QFormLayout(regions_page)
        regions_form.addRow("tables", _with_browse(self.region_files, self._choose_region_files))
        for page in (sim_page, files_page, bids_page, regions_page):
            self.fmri_pages.addWidget(page)
        self.fmri_source.currentIndexChanged.connect(self.fmri_pages.setCurrentIndex)
        # atoms, encoding, networks
        self.n_atoms = QSpinBox(minimum=1, maximum=4096, value=64)
        self.lam = QDoubleSpinBox(decimals=3, minimum=0.0, maximum=1.0, singleStep=0.05, value=0.15)
        self.lam.setToolTip("sparsity of the AN codes on the correlation scale (λ = α·√n_volumes); "
                            "an AN uses an atom only where its partial correlation exceeds about α")
        self.encoding = QComboBox()
        self.encoding.addItems(list(ENCODINGS))
        self.atlases = QListWidget()
        for name in NETWORK_ATLASES:
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if name in ("smith10", "yeo7") else Qt.Unchecked)
            self.atlases.addItem(item)
        self.atlases.setMaximumHeight(70)
        self.custom_atlas = QLineEdit()
        self.custom_atlas.setPlaceholderText("optional: your NIfTI (labels or 4D maps)")
        self.out = QLineEdit(str(Path.home() / "brainorg-results" / "run"))
        self.open_explorer = QCheckBox("open the atom explorer when done")
        self.open_explorer.setChecked(True)
        # run
        self.quick_button = QPushButton("Quick preset")
        self.quick_button.setToolTip("The napari sample's size: pieman, MiniLM, 16 atoms, 2 SIMULATED "
                                     "subjects on a 6 mm grid, 3 folds (about a minute on a laptop)")
        self.quick_button.clicked.connect(self.apply_quick_preset)
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        story_box = QGroupBox("story")
        f = QFormLayout(story_box)
        f.addRow("story", _with_browse(self.story, self._choose_story))
        f.addRow("onset (s)", self.onset)
        f.addRow("TR (s)", self.tr)
        f.addRow("volumes", self.n_volumes)
        model_box = QGroupBox("language model")
        f = QFormLayout(model_box)
        f.addRow("model", _with_browse(self.model, self._choose_model))
        f.addRow("site", self.site)
        fmri_box = QGroupBox("fMRI")
        v = QVBoxLayout(fmri_box)
        v.addWidget(self.fmri_source)
        v.addWidget(self.fmri_pages)
        analysis_box = QGroupBox("atoms, encoding, networks")
        f = QFormLayout(analysis_box)
        f.addRow("atoms k", self.n_atoms)
        f.addRow("sparsity α", self.lam)
        f.addRow("encoding", self.encoding)
        f.addRow("atlases", self.atlases)
        f.addRow("", _with_browse(self.custom_atlas, self._choose_atlas))
        f.addRow("output", _with_browse(self.out, self._choose_out))
        buttons = QHBoxLayout()
        buttons.addWidget(self.quick_button)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        # the form scrolls; Run, Cancel and the progress stay in sight on a 768 px screen
        form = QWidget()
        form_layout = QVBoxLayout(form)
        form_layout.setContentsMargins(0, 0, 0, 0)
        for box in (story_box, model_box, fmri_box, analysis_box):
            form_layout.addWidget(box)
        form_layout.addWidget(self.open_explorer)
        form_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(form)
        scroll.setMinimumHeight(120)
        self.form_scroll = scroll
        layout = QVBoxLayout(self)
        layout.addWidget(scroll, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

    # -- file choosers -----------------------------------------------------------------------
    def _choose_story(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Story file", "", "Stories (*.json *.csv *.tsv *.txt *.TextGrid)")
        if path:
            self.story.setCurrentText(path)

    def _choose_model(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Hugging Face model folder")
        if path:
            self.model.setCurrentText(path)

    def _choose_fmri_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "4D NIfTI runs", "", "NIfTI (*.nii *.nii.gz)")
        if paths:
            self.fmri_files.setText("; ".join(paths))

    def _choose_region_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Region time series, one per subject", "",
                                                "Tables (*.csv *.tsv *.npy)")
        if paths:
            self.region_files.setText("; ".join(paths))

    def _choose_mask(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Brain mask", "", "NIfTI (*.nii *.nii.gz)")
        if path:
            self.mask.setText(path)

    def _choose_bids_root(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "BIDS dataset")
        if path:
            self.bids_root.setText(path)

    def _choose_atlas(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Network template", "", "NIfTI (*.nii *.nii.gz)")
        if path:
            self.custom_atlas.setText(path)

    def _choose_out(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Output folder")
        if path:
            self.out.setText(path)

    def apply_quick_preset(self) -> None:
        """Set the form to the quick preset (:data:`QUICK_PRESET`)."""
        self.story.setCurrentText("pieman")
        self.model.setCurrentText("minilm")
        self.fmri_source.setCurrentIndex(FMRI_SOURCES.index("simulated subjects"))
        self.n_subjects.setValue(QUICK_PRESET["n_subjects"])
        self.sim_resolution.setValue(QUICK_PRESET["resolution_mm"])
        self.n_atoms.setValue(QUICK_PRESET["n_atoms"])
        self._quick = True
        self.status.setText("quick preset: 16 atoms, 2 SIMULATED subjects, 6 mm grid")

    # -- config ------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        """The configuration the widget's values describe (what ``brainorg run`` reads)."""
        atlases = [self.atlases.item(i).text() for i in range(self.atlases.count())
                   if self.atlases.item(i).checkState() == Qt.Checked]
        if self.custom_atlas.text().strip():
            atlases.append(self.custom_atlas.text().strip())
        source = self.fmri_source.currentText()
        if source == "simulated subjects":
            fmri: dict[str, Any] = {"simulate": {"n_subjects": self.n_subjects.value(),
                                                 "resolution_mm": self.sim_resolution.value(),
                                                 "atlas": self.sim_atlas.currentText()}}
        elif source == "NIfTI files":
            fmri = {"images": _split_paths(self.fmri_files.text()), "mask": self.mask.text().strip() or "mni"}
        elif source == "region time series":
            fmri = {"regions": _split_paths(self.region_files.text())}
        else:
            subjects = [s.strip() for s in self.bids_subjects.text().replace(";", ",").split(",") if s.strip()]
            fmri = {"bids": {"root": self.bids_root.text().strip(),
                             "task": self.bids_task.text().strip() or self.story.currentText().strip(),
                             "subjects": subjects or None},
                    "mask": self.mask.text().strip() or "mni"}
        atoms: dict[str, Any] = {"n_atoms": self.n_atoms.value(), "alpha": self.lam.value()}
        extra: dict[str, Any] = {}
        if self._quick and self.n_atoms.value() == QUICK_PRESET["n_atoms"]:
            atoms["max_iter"] = QUICK_PRESET["max_iter"]
            extra = {"networks": {"n_permutations": QUICK_PRESET["n_permutations"]},
                     "encoding": {"n_folds": QUICK_PRESET["n_folds"]}}
        return {
            "story": {"path": self.story.currentText().strip(), "onset": self.onset.value(),
                      "tr": self.tr.value(), "n_volumes": self.n_volumes.value()},
            "features": {"models": [self.model.currentText().strip()], "site": self.site.currentText()},
            "atoms": atoms,
            "fmri": fmri,
            "encoding": {"models": ENCODINGS[self.encoding.currentText()], **extra.get("encoding", {})},
            "networks": {"atlases": atlases, **extra.get("networks", {})},
            "out": self.out.text().strip(),
        }

    def build_config(self, overrides: dict[str, Any] | None = None):
        """Validate the widget's values (plus ``overrides``, section by section) into a config."""
        from ..pipeline import make_config

        data = self.config_dict()
        for section, values in (overrides or {}).items():
            if isinstance(values, dict) and isinstance(data.get(section), dict):
                data[section] = {**data[section], **values}
            else:
                data[section] = values
        return make_config(data, source="the pipeline widget")

    # -- running -----------------------------------------------------------------------------
    def run(self, overrides: dict[str, Any] | None = None) -> PipelineJob | None:
        """Start the pipeline; returns the job, or ``None`` when the inputs are invalid."""
        from napari.utils.notifications import show_error

        from .workers import start_pipeline

        if self.job is not None and self.job.running:
            return self.job
        try:
            config = self.build_config(overrides if isinstance(overrides, dict) else None)
        except (ValueError, OSError) as exc:
            show_error(f"Pipeline inputs: {exc}")
            self.status.setText(str(exc))
            self.failed.emit(str(exc))
            return None
        from .workers import OverallProgress

        self._stages = {}
        self.overall = OverallProgress(n_models=len(config.features.models))
        self.progress.setRange(0, 0)  # busy until the first report
        self.status.setText(f"running → {config.out}")
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.job = start_pipeline(config, parent=self)
        self.job.progressed.connect(self._on_progress)
        self.job.finished_ok.connect(self._on_finished)
        self.job.failed.connect(self._on_failed)
        return self.job

    def cancel(self) -> None:
        """Stop the running pipeline at its next checkpoint."""
        if self.job is not None:
            self.job.cancel()
            self.status.setText("cancelling…")
            self.cancel_button.setEnabled(False)

    def _on_progress(self, stage: str, done: int, total: int) -> None:
        self._stages[stage] = (done, total)
        if self.overall is None:
            from .workers import OverallProgress

            self.overall = OverallProgress()
        self.overall.update(stage, done, total)
        self.progress.setRange(0, 1000)
        self.progress.setValue(int(round(1000 * self.overall.fraction)))
        self.progress.setFormat(f"{100 * self.overall.fraction:.0f} %")
        detail = f"{stage} {done}/{total}" if total else stage
        self.overall.stage = detail
        self.status.setText(self.overall.text())

    def _reset_buttons(self) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)

    def _on_finished(self, result) -> None:
        from napari.utils.notifications import show_error, show_info

        self._reset_buttons()
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.progress.setFormat("100 %")
        note = " (SIMULATED fMRI)" if result.simulated else ""
        self.status.setText(f"done: {result.path}{note}; loading its layers…")

        def shown(_added):
            if result.is_region_result:  # no maps: its regions, r and atom coefficients
                from .regions_panel import dock_regions_panel

                dock_regions_panel(self.viewer, result)
            elif self.open_explorer.isChecked():
                self._ensure_explorer()
            self.status.setText(f"done: {result.path}{note}")
            show_info(f"napari-brainorg: results in {result.path}{note}")
            self.finished.emit(result)

        def not_shown(exc):
            show_error(f"The pipeline finished but its result could not be shown: {exc}")
            self.failed.emit(str(exc))

        from ._loading import show_result_async

        show_result_async(self.viewer, result, owner=self, on_shown=shown, on_error=not_shown)

    def _on_failed(self, exc) -> None:
        from napari.utils.notifications import show_error, show_info

        from ..errors import CancelledError

        self._reset_buttons()
        self.progress.setValue(0)
        if isinstance(exc, CancelledError):
            self.status.setText("cancelled")
            show_info("napari-brainorg: the pipeline was cancelled.")
        else:
            self.status.setText(f"failed: {exc}")
            show_error(f"Pipeline failed: {type(exc).__name__}: {exc}")
        self.failed.emit(str(exc))

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        # closing the panel (or napari) stops a run at its next checkpoint
        if self.job is not None and self.job.running:
            self.job.cancel()
        super().closeEvent(event)

    def _ensure_explorer(self) -> None:
        from .explorer import AtomExplorer

        window = getattr(self.viewer, "window", None)
        if window is None:
            return
        try:
            docked = window.dock_widgets
        except AttributeError:  # a viewer without a Qt window
            return
        for dock_name, widget in docked.items():
            if isinstance(widget, AtomExplorer):
                _layers.raise_dock(widget)  # bring its tab forward
                return
        _layers.dock_tabbed(self.viewer, AtomExplorer(self.viewer), "Atom explorer", raise_=True)
