"""Config -> ordered steps -> a result folder; the one entry point of GUI and CLI.

The package's layout is the pipeline: :mod:`.config` (the validated configuration),
:mod:`.validate` (checks before a folder is touched), :mod:`.context` (the step context
and its content-keyed cache), :mod:`.study` (runs, confounds, filters the steps share),
:mod:`.steps` (one module per step), :mod:`.execution` (where tasks run: in process or
Dask, split runs and their merge), :mod:`.run` (the ordered list of steps) and
:mod:`.child` (a run in a child process, for the GUI).
"""

from .child import run_pipeline_in_process
from .config import PipelineConfig, demo_config, load_config, make_config
from .context import model_slug
from .run import run_pipeline, run_simulation, run_subjects

__all__ = ["PipelineConfig", "demo_config", "load_config", "make_config", "model_slug", "run_pipeline",
           "run_pipeline_in_process", "run_simulation", "run_subjects"]
