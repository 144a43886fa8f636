"""Shared test paths: the real photos, clips and models in ../shared/ beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGEFACE_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"
PEOPLE = FIXTURES / "people"
SCENES = FIXTURES / "scenes"
VIDEO = FIXTURES / "video"
MODELS = SHARED / "models"
DATASETS = SHARED / "datasets"
ASSETS = ROOT / "assets"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"test data not found at {SHARED} (set EDGEFACE_SHARED)")
    return SHARED
