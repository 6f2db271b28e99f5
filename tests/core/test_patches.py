"""MaskPatch, StrokeRecorder, diff_to_patch, union_bbox, bbox_of."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deeplab_studio.core.brush import paint_line
from deeplab_studio.core.patches import (MaskPatch, SparsePatch, StrokeRecorder, bbox_of, clip_bbox,
                                         diff_to_patch, union_bbox)


def test_bbox_helpers() -> None:
    m = np.zeros((10, 12), bool)
    assert bbox_of(m) is None
    m[2, 3] = m[7, 9] = True
    assert bbox_of(m) == (3, 2, 10, 8)
    assert union_bbox((0, 0, 2, 2), None, (5, 1, 6, 9)) == (0, 0, 6, 9)
    assert union_bbox(None, (3, 3, 3, 5)) is None
    assert clip_bbox((-4, -4, 3, 20), (10, 12)) == (0, 0, 3, 10)
    assert clip_bbox((12, 0, 15, 3), (10, 12)) is None
    with pytest.raises(ValueError):
        bbox_of(np.zeros((2, 2, 2), bool))


def test_mask_patch_apply_revert_byte_exact() -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (20, 30)).astype(np.uint8)
    orig = arr.copy()
    new = arr.copy()
    new[4:9, 10:17] = rng.integers(0, 256, (5, 7))
    p = diff_to_patch(arr, new)
    assert p is not None and p.nbytes == p.before.nbytes * 2
    x0, y0, x1, y1 = p.bbox
    assert (x1 - x0) * (y1 - y0) <= 35
    p.apply(arr)
    assert arr.tobytes() == new.tobytes()
    p.revert(arr)
    assert arr.tobytes() == orig.tobytes()
    assert diff_to_patch(orig, orig.copy()) is None


def test_mask_patch_validates() -> None:
    with pytest.raises(ValueError):
        MaskPatch((0, 0, 3, 3), np.zeros((3, 3), np.uint8), np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError):
        MaskPatch((0, 0, 0, 3), np.zeros((3, 0), np.uint8), np.zeros((3, 0), np.uint8))
    p = MaskPatch((5, 5, 8, 8), np.zeros((3, 3), np.uint8), np.ones((3, 3), np.uint8))
    with pytest.raises(ValueError):
        p.apply(np.zeros((6, 6), np.uint8))
    with pytest.raises(ValueError):
        diff_to_patch(np.zeros((3, 3)), np.zeros((3, 4)))


def test_diff_patch_on_bool_and_rgb() -> None:
    a = np.zeros((8, 8), bool)
    b = a.copy()
    b[3, 5] = True
    p = diff_to_patch(a, b)
    assert p.bbox == (5, 3, 6, 4)
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb2 = rgb.copy()
    rgb2[1, 2, 1] = 9
    q = diff_to_patch(rgb, rgb2)
    assert q.bbox == (2, 1, 3, 2)
    q.apply(rgb)
    assert np.array_equal(rgb, rgb2)


def test_recorder_nothing_changed_gives_none() -> None:
    arr = np.zeros((40, 40), np.uint8)
    rec = StrokeRecorder(arr)
    assert rec.finish() is None
    rec.before_change((2, 2, 10, 10))
    assert rec.finish() is None  # announced but not changed
    rec.before_change((-5, -5, -1, -1))  # outside: ignored
    assert rec.bbox is None


def test_recorder_restore_aborts_stroke() -> None:
    arr = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 7
    arr = arr.astype(np.uint8)
    orig = arr.copy()
    rec = StrokeRecorder(arr, tile=8)
    paint_line(arr, (3, 3), (60, 50), 4, 200, recorders=[rec])
    assert not np.array_equal(arr, orig)
    rec.restore()
    assert np.array_equal(arr, orig)
    assert rec.finish() is None


def test_long_stroke_patch_is_exact_and_small() -> None:
    """500 stamps of a radius-20 brush on an 8000×6000 map: memory follows the stroke, not the image."""
    h, w = 6000, 8000
    labels = np.zeros((h, w), np.uint8)  # calloc'd: untouched pages cost nothing
    labels[3000:3100, :] = 4
    rec = StrokeRecorder(labels)
    pts = [(1000 + i * 4.0, 3000 + 200 * math.sin(i / 40)) for i in range(501)]
    for a, b in zip(pts[:-1], pts[1:]):
        paint_line(labels, a, b, 20, 7, recorders=[rec])
    saved = rec.nbytes
    region = rec.bbox
    patch = rec.finish()
    x0, y0, x1, y1 = patch.bbox
    box_area = (x1 - x0) * (y1 - y0)
    assert region[0] <= x0 and region[1] <= y0 and region[2] >= x1 and region[3] >= y1
    assert patch.nbytes == 2 * box_area
    assert box_area < 0.02 * h * w
    assert saved < 0.01 * h * w  # saved tiles are O(touched area)
    # exact undo/redo inside the box, and nothing outside the box was touched
    after = labels[y0:y1, x0:x1].copy()
    patch.revert(labels)
    assert not (labels == 7).any()
    assert (labels[3000:3100] == 4).all() and labels[:3000].max() == 0 and labels[3100:].max() == 0
    patch.apply(labels)
    assert np.array_equal(labels[y0:y1, x0:x1], after)


def test_sparse_patch_round_trip_2d_bool_and_channels() -> None:
    rng = np.random.default_rng(2)
    for shape, dtype in (((40, 50), np.uint8), ((40, 50), bool), ((40, 50, 3), np.uint8)):
        old = (rng.integers(0, 2, shape) if dtype is bool else rng.integers(0, 255, shape)).astype(dtype)
        new = old.copy()
        new[5, 7] = ~new[5, 7] if dtype is bool else new[5, 7] + 1
        new[30, 44] = ~new[30, 44] if dtype is bool else new[30, 44] + 1
        dense = diff_to_patch(old, new)
        sparse = dense.compact()
        assert isinstance(sparse, SparsePatch) and sparse.nbytes < dense.nbytes
        assert sparse.bbox == dense.bbox
        assert np.array_equal(sparse.changed(), dense.changed())
        arr = old.copy()
        sparse.apply(arr)
        assert arr.tobytes() == new.tobytes()
        sparse.revert(arr)
        assert arr.tobytes() == old.tobytes()
    # a dense change stays a MaskPatch
    a = np.zeros((10, 10), np.uint8)
    p = diff_to_patch(a, a + 1)
    assert p.compact() is p


def test_compact_long_stroke_is_o_touched_area() -> None:
    h, w = 6000, 8000
    labels = np.zeros((h, w), np.uint8)
    rec = StrokeRecorder(labels)
    # a diagonal drag: its union box is most of the image, the touched band is thin
    pts = [(100 + i * 15.0, 100 + i * 11.0) for i in range(501)]
    for a, b in zip(pts[:-1], pts[1:]):
        paint_line(labels, a, b, 20, 7, recorders=[rec])
    touched = int((labels == 7).sum())
    patch = rec.finish(compact=True)
    assert isinstance(patch, SparsePatch)
    x0, y0, x1, y1 = patch.bbox
    box_area = (x1 - x0) * (y1 - y0)
    assert box_area > 0.5 * h * w
    assert patch.nbytes <= 2 * touched + box_area // 8 + 16
    assert patch.nbytes < 0.15 * box_area
    patch.revert(labels)
    assert not labels.any()
    patch.apply(labels)
    assert int((labels == 7).sum()) == touched
