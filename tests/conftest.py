"""Shared fixtures. Tests run offline: no model or data is fetched from a hub."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture
def rng():
    """A seeded random generator: every test that draws numbers is reproducible."""
    return np.random.default_rng(20241025)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests keep pictures and files worth looking at after the run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def quick_result(tmp_path_factory):
    """The quick demo (bundled story and MiniLM, SIMULATED subjects), run once per session.

    Shared by the pipeline, report and documentation tests: the one quick run of the suite.
    """
    from napari_brainorg.pipeline import demo_config, run_pipeline

    out = tmp_path_factory.mktemp("quick") / "result"
    return run_pipeline(demo_config(out, quick=True))
