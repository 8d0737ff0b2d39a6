"""The HTML report of a result folder: one self-contained file a user can send.

The report is a *view* of a finished result folder, like nilearn's ``make_glm_report``
of a fitted model: it reads the folder through :class:`~napari_brainorg.io.results.ResultFolder`
and never refits anything, so it can be rebuilt from any finished folder
(``brainorg report DIR``) and the pipeline writes it last, as ``report.html``.

Everything is inside the one file (figures as base64 PNG, layer histograms as inline
SVG, styles and the small atom selector script inline): it opens offline, and nothing
is fetched from the network. No machine path is written into it: paths are relative to
the result folder, inputs outside it named by their file.

Sections: first, the answer (:mod:`.answer`: per model the held-out r with its 95% CI
over subjects, its chance level, the noise ceiling, the verdict against each baseline,
the plain-words warnings and the declared network links); the question and the data; a
methods paragraph generated from the run's configuration, with citations
(:mod:`.methods`); validation (recovery of planted links for simulated data); per model
its maps on the MNI template with peak tables in MNI mm, the time courses of the atoms
with declared links and the analysis mask (:mod:`.maps`), the run's figures, the atom
table and a browsable atom viewer (:mod:`.atoms`); the model comparison; the warnings
raised during the run (:mod:`.record`); provenance (versions, inputs, configuration).
"""

from .build import build_report, write_report
from .methods import REFERENCES, methods_paragraph
from .record import record_warnings

__all__ = ["build_report", "write_report", "methods_paragraph", "record_warnings", "REFERENCES"]
