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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for the module: on two shared cores (and beside a GUI or worker
    thread) more threads mostly wait for each other. torch is imported only when asked for."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
