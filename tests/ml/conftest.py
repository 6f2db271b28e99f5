"""tests/ml: tests marked ``gpu`` are skipped, with the reason, where torch sees no CUDA device."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
    skip = pytest.mark.skip(reason=f"needs CUDA: {why} (torch {torch.__version__})")
    for item in gpu_items:
        item.add_marker(skip)
