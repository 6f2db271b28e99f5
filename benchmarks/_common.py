"""Helpers shared by the benchmark scripts: the tests/data/voc_real scenes and best-of-N timing.

The scripts run as `python benchmarks/<name>.py`, which puts this folder on sys.path, so they
import it as `from _common import ...`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from deeplab_studio.core.labels import IGNORE, voc_colormap

ROOT = Path(__file__).resolve().parents[1]
VOC = ROOT / "tests" / "data" / "voc_real"
NUM_CLASSES = 21


def voc_scenes() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(image id, RGB image, ground truth with 255 = void) for each voc_real image, sorted by file name."""
    for p in sorted((VOC / "images").iterdir()):
        yield p.stem, np.array(Image.open(p).convert("RGB")), np.array(Image.open(VOC / "masks" / f"{p.stem}.png"))


def colours_to_indices(rgb: np.ndarray) -> np.ndarray:
    """VOC-colormap RGB → class indices (255 for the void colour and any unknown colour)."""
    cmap = voc_colormap(NUM_CLASSES).astype(np.int64)
    lut = {int((r << 16) | (g << 8) | b): i for i, (r, g, b) in enumerate(cmap)}
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    uniq, inv = np.unique(packed, return_inverse=True)
    return np.array([lut.get(int(k), IGNORE) for k in uniq], np.uint8)[inv].reshape(packed.shape)


def best_of(fn: Callable[[], Any], repeat: int, *, warmup: bool = False) -> tuple[float, Any]:
    """Fastest wall time of `repeat` calls of `fn` (the machine is shared) and the last result;
    `warmup` first makes one untimed call (first-call allocations, onnxruntime's arena)."""
    if warmup:
        fn()
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out
