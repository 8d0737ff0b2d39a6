"""Config -> ordered steps -> a result folder; the one entry point of GUI and CLI."""

from .config import PipelineConfig, demo_config, load_config, make_config
from .run import model_slug, run_pipeline, run_subjects

__all__ = ["PipelineConfig", "demo_config", "load_config", "make_config", "model_slug", "run_pipeline",
           "run_subjects"]
