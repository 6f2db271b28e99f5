"""Tiles in parallel processes answer exactly what the sequential run answers."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.ml import crf_engine
from deeplab_studio.ml.crf import CRFCancelled, CRFParams, refine_labels


def test_tiles_in_two_processes_equal_the_sequential_run(data_dir):
    root = data_dir / "voc_real"
    image = np.asarray(Image.open(root / "images" / "2011_000006.jpg").convert("RGB"))
    labels = np.asarray(Image.open(root / "masks" / "2011_000006.png")).copy()
    labels[labels == 255] = 0
    labels = np.roll(labels, 5, axis=1)  # a proposal a few pixels off: work on every tile
    params = CRFParams(tile_size=200)
    protect = np.zeros(labels.shape, bool)
    protect[:40] = True
    tiles = crf_engine.plan_tiles(labels, protect, labels == 255, None, params)
    assert len(tiles) >= 4
    one = crf_engine.refine_free_pixels(image, labels, protect, None, params)
    two = crf_engine.refine_free_pixels(image, labels, protect, None, params, workers=2)
    assert (refine_labels(image, labels, protect=protect, params=params, workers=2) == one).all()
    assert (one == two).all() and (one != labels).any()
    stop = threading.Event()
    stop.set()
    with pytest.raises(CRFCancelled):
        crf_engine.refine_free_pixels(image, labels, protect, None, params, workers=2, cancel=stop)
