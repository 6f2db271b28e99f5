"""Brush rasterising: exact disks, gap-free capsules, clipping, protect, edit mask, recorders."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deeplab_studio.core.brush import disk, paint_disk, paint_line
from deeplab_studio.core.labels import IGNORE
from deeplab_studio.core.patches import StrokeRecorder, bbox_of


def ref_capsule(shape, a, b, r) -> np.ndarray:
    """Exact integer reference: pixels within r of the segment between the snapped end pixels."""
    h, w = shape
    ax, ay = math.floor(a[0]), math.floor(a[1])
    bx, by = math.floor(b[0]), math.floor(b[1])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.int64)
    px, py = xx - ax, yy - ay
    dx, dy = bx - ax, by - ay
    ll = dx * dx + dy * dy
    d_a = px * px + py * py <= r * r
    d_b = (xx - bx) ** 2 + (yy - by) ** 2 <= r * r
    if ll == 0:
        return d_a
    dot = px * dx + py * dy
    cross = px * dy - py * dx
    band = (dot > 0) & (dot < ll) & (cross * cross <= r * r * ll)
    return d_a | d_b | band


class Spy:
    """A recorder that checks every write happens inside an announced box, after the call."""

    def __init__(self, target: np.ndarray) -> None:
        self.target = target
        self.snapshot = target.copy()
        self.allowed = np.zeros(target.shape[:2], bool)
        self.calls = 0

    def before_change(self, bbox) -> None:
        # nothing may have changed outside the boxes announced so far
        assert np.array_equal(self.target[~self.allowed], self.snapshot[~self.allowed])
        x0, y0, x1, y1 = bbox
        self.allowed[y0:y1, x0:x1] = True
        self.calls += 1

    def check(self) -> None:
        assert np.array_equal(self.target[~self.allowed], self.snapshot[~self.allowed])


def test_disk_exact_pixels_and_cached_readonly() -> None:
    for r in (0, 1, 2, 5, 20):
        d = disk(r)
        assert d.shape == (2 * r + 1, 2 * r + 1) and d.dtype == bool
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        assert np.array_equal(d, xx**2 + yy**2 <= r * r)
    assert disk(3) is disk(3)
    with pytest.raises(ValueError):
        disk(3)[0, 0] = True
    assert disk(1).sum() == 5 and disk(0).sum() == 1
    with pytest.raises(ValueError):
        disk(-1)


def test_paint_disk_exact_at_float_centre() -> None:
    labels = np.zeros((64, 64), np.uint8)
    box = paint_disk(labels, (10.7, 20.2), 4, 7)
    assert box == (6, 16, 15, 25)
    assert np.array_equal(labels == 7, ref_capsule(labels.shape, (10, 20), (10, 20), 4))
    assert set(np.unique(labels)) == {0, 7}


@pytest.mark.parametrize("centre", [(0, 0), (63.9, 63.9), (-3, 30), (66, 10), (30, 62.5)])
def test_paint_disk_clipped_at_borders(centre) -> None:
    labels = np.zeros((64, 64), np.uint8)
    box = paint_disk(labels, centre, 5, 3)
    ref = ref_capsule(labels.shape, centre, centre, 5)
    assert np.array_equal(labels == 3, ref)
    tight = bbox_of(ref)  # the returned box covers the written pixels and stays in the image
    assert box[0] <= tight[0] and box[1] <= tight[1] and box[2] >= tight[2] and box[3] >= tight[3]
    assert box[0] >= 0 and box[1] >= 0 and box[2] <= 64 and box[3] <= 64


def test_paint_disk_outside_returns_none() -> None:
    labels = np.zeros((32, 32), np.uint8)
    spy = Spy(labels)
    assert paint_disk(labels, (-10, 5), 3, 1, recorders=[spy]) is None
    assert paint_disk(labels, (5, 40), 3, 1, recorders=[spy]) is None
    assert not labels.any() and spy.calls == 0


def test_paint_line_matches_exact_capsule_on_random_segments() -> None:
    rng = np.random.default_rng(0)
    for _ in range(60):
        r = int(rng.integers(0, 12))
        a = tuple(rng.uniform(-8, 72, 2))
        b = (a[0] + rng.uniform(-28, 28), a[1] + rng.uniform(-28, 28))
        labels = np.zeros((64, 64), np.uint8)
        box = paint_line(labels, a, b, r, 9)
        ref = ref_capsule(labels.shape, a, b, r)
        assert np.array_equal(labels == 9, ref), (a, b, r)
        if ref.any():
            x0, y0, x1, y1 = bbox_of(ref)
            assert box[0] <= x0 and box[1] <= y0 and box[2] >= x1 and box[3] >= y1
        else:
            assert box is None


@pytest.mark.parametrize("cached_move", [0, 24])  # 0: every move computed, never cached
def test_cached_and_computed_capsules_agree(monkeypatch, cached_move) -> None:
    from deeplab_studio.core import brush

    monkeypatch.setattr(brush, "_CACHED_MOVE", cached_move)
    rng = np.random.default_rng(7)
    for _ in range(40):
        r = int(rng.integers(0, 9))
        a = tuple(rng.uniform(-4, 52, 2))
        b = (a[0] + rng.uniform(-20, 20), a[1] + rng.uniform(-20, 20))
        labels = np.zeros((48, 48), np.uint8)
        paint_line(labels, a, b, r, 1)
        assert np.array_equal(labels == 1, ref_capsule(labels.shape, a, b, r))


def test_large_radius_and_limits() -> None:
    labels = np.zeros((200, 220), np.uint8)
    paint_line(labels, (100.5, 90.5), (110.2, 97.9), 70, 4)  # above the cached radius
    assert np.array_equal(labels == 4, ref_capsule(labels.shape, (100.5, 90.5), (110.2, 97.9), 70))
    with pytest.raises(ValueError):
        paint_disk(labels, (1, 1), 1001, 1)
    with pytest.raises(ValueError):
        disk(5000)


def test_fast_stroke_is_gap_free() -> None:
    # a few far-apart mouse points, as a fast drag delivers them
    labels = np.zeros((200, 300), np.uint8)
    pts = [(5.5, 5.5), (290.2, 40.1), (20.0, 190.0), (250.0, 180.0), (251.0, 20.0)]
    for a, b in zip(pts[:-1], pts[1:]):
        paint_line(labels, a, b, 2, 1)
    for a, b in zip(pts[:-1], pts[1:]):
        for t in np.linspace(0.0, 1.0, 2000):
            x = math.floor(a[0]) + (math.floor(b[0]) - math.floor(a[0])) * t
            y = math.floor(a[1]) + (math.floor(b[1]) - math.floor(a[1])) * t
            assert labels[int(round(y)), int(round(x))] == 1
    # exactly the union of the capsules, nothing stray
    ref = np.zeros_like(labels, bool)
    for a, b in zip(pts[:-1], pts[1:]):
        ref |= ref_capsule(labels.shape, a, b, 2)
    assert np.array_equal(labels == 1, ref)


def test_long_line_touches_only_its_band() -> None:
    labels = np.zeros((600, 800), np.uint8)
    spy = Spy(labels)
    paint_line(labels, (0, 0), (799, 599), 3, 2, recorders=[spy])
    spy.check()
    # recorders were told about small pieces, not one image-sized box
    assert spy.allowed.sum() < 0.1 * labels.size
    assert np.array_equal(labels == 2, ref_capsule(labels.shape, (0, 0), (799, 599), 3))


def test_modes_erase_and_ignore() -> None:
    labels = np.full((32, 32), 5, np.uint8)
    paint_line(labels, (4, 4), (20, 4), 2, 0)
    paint_disk(labels, (16, 20), 3, IGNORE)
    assert np.array_equal(labels == 0, ref_capsule(labels.shape, (4, 4), (20, 4), 2))
    assert np.array_equal(labels == IGNORE, ref_capsule(labels.shape, (16, 20), (16, 20), 3))


def test_protect_and_edit_mask() -> None:
    labels = np.zeros((48, 48), np.uint8)
    labels[:, 24:] = 3
    protect = labels != 0  # only overwrite background
    edit = np.zeros(labels.shape, bool)
    before = labels.copy()
    spy = Spy(labels)
    box = paint_line(labels, (10, 24), (40, 24), 6, 8, protect=protect, edit_mask=edit, recorders=[spy])
    spy.check()
    stamp = ref_capsule(labels.shape, (10, 24), (40, 24), 6)
    assert np.array_equal(labels[protect], before[protect])
    assert np.array_equal(labels == 8, stamp & ~protect)
    assert np.array_equal(edit, stamp & ~protect)
    assert box is not None and spy.calls >= 1
    # a stamp entirely on protected pixels writes nothing and reports nothing
    spy2 = Spy(labels)
    assert paint_disk(labels, (40, 10), 3, 1, protect=protect, recorders=[spy2]) is None
    assert spy2.calls == 0


def test_bad_arguments() -> None:
    labels = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError):
        paint_disk(labels, (1, 1), 2, 256)
    with pytest.raises(ValueError):
        paint_disk(labels, (float("nan"), 1), 2, 1)
    with pytest.raises(ValueError):
        paint_line(labels, (1, 1), (3, 3), 2, 1, edit_mask=np.zeros((4, 4), bool))
    with pytest.raises(ValueError):
        paint_disk(np.zeros((8, 8, 3), np.uint8), (1, 1), 2, 1)
    with pytest.raises(ValueError, match="bool"):
        paint_disk(labels, (1, 1), 2, 1, protect=np.zeros((8, 8), np.uint8))


def test_stroke_with_recorders_undoes_exactly() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, (96, 128)).astype(np.uint8)
    edit = rng.random(labels.shape) < 0.1
    orig_l, orig_e = labels.copy(), edit.copy()
    rl, re_ = StrokeRecorder(labels, tile=16), StrokeRecorder(edit, tile=16)
    pts = rng.uniform(-10, 140, (12, 2))
    for a, b in zip(pts[:-1], pts[1:]):
        paint_line(labels, tuple(a), tuple(b), 5, 2, edit_mask=edit, recorders=(rl, re_))
    after_l, after_e = labels.copy(), edit.copy()
    pl, pe = rl.finish(), re_.finish()
    pl.revert(labels)
    pe.revert(edit)
    assert np.array_equal(labels, orig_l) and np.array_equal(edit, orig_e)
    pl.apply(labels)
    pe.apply(edit)
    assert np.array_equal(labels, after_l) and np.array_equal(edit, after_e)
