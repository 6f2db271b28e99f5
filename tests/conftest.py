"""Shared test set-up: headless Qt, paths to the bundled sample data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """tests/data: real VOC samples (voc_samples/) and reference state-dict layouts."""
    return DATA
