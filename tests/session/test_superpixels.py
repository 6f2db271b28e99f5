"""Superpixels (SLIC at several scales, shrunk for large images) and the wand tool that uses them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.session.annotation_session import AnnotationSession
from deeplab_studio.session.superpixels import SCALES, SuperpixelCache, compute_superpixels
from deeplab_studio.session.tools import Mods

VOC = Path(__file__).resolve().parents[1] / "data" / "voc_real"
PLANE = "2007_000033"  # an aeroplane (class 1) on sky


def two_colour_image(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image split by a slanted edge: (image, bool mask of the right-hand side)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    right = xx > w * 0.37 + 0.29 * yy
    img = np.where(right[..., None], (40, 90, 200), (210, 120, 40)).astype(np.int16)
    img += rng.integers(-12, 13, img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8), right


def full_masks(sp, scale: int) -> list[np.ndarray]:
    out = []
    for seg in range(sp.levels[scale].count):
        (x0, y0, x1, y1), crop = sp.mask(scale, seg)
        m = np.zeros(sp.shape, bool)
        m[y0:y1, x0:x1] = crop
        out.append(m)
    return out


def test_segments_follow_an_edge_at_every_scale():
    img, right = two_colour_image(120, 160)
    sp = compute_superpixels(img)
    assert len(sp) == len(SCALES) and sp.factor == 1.0
    counts = [level.count for level in sp.levels]
    assert counts[0] > counts[1] > counts[2] > 1  # fine to coarse
    for scale in range(len(sp)):
        masks = full_masks(sp, scale)
        assert all(m.any() for m in masks)
        minority = sum(min((m & right).sum(), (m & ~right).sum()) for m in masks)
        assert minority < 0.002 * right.size  # segments keep to one side (measured: 4, 0, 0 pixels)


def test_a_shrunk_image_gives_full_size_masks_that_follow_the_edge():
    """Segmented on a 4.5× smaller copy; the border re-assignment puts full-size pixels back on
    the right side of the edge, which plain nearest-neighbour upsampling does not."""
    img, right = two_colour_image(540, 720, seed=1)
    sp = compute_superpixels(img, work_pixels=20_000)
    assert sp.factor > 4
    covered = np.zeros(sp.shape, np.int32)
    wrong_refined = wrong_nearest = 0
    for scale in range(len(sp)):
        level = sp.levels[scale]
        nearest = sp._nearest(level, (0, 0, sp.shape[1], sp.shape[0]))
        for seg, m in enumerate(full_masks(sp, scale)):
            side = (m & right).sum() * 2 > m.sum()
            wrong_refined += int((m & (right != side)).sum())
            n = nearest == seg
            wrong_nearest += int((n & (right != ((n & right).sum() * 2 > n.sum()))).sum())
            if scale == 0:
                covered += m
    assert wrong_refined * 10 < wrong_nearest  # measured: 0 vs several thousand pixels
    assert (covered == 1).mean() > 0.99  # the fine masks tile the image (overlaps only at borders)


def test_a_click_region_always_holds_the_clicked_pixel():
    img, _ = two_colour_image(300, 400, seed=2)
    sp = compute_superpixels(img, work_pixels=10_000)
    rng = np.random.default_rng(3)
    for x, y in rng.integers(0, (400, 300), (50, 2)):
        for scale in range(len(sp)):
            (x0, y0, x1, y1), crop = sp.region_at(scale, float(x), float(y))
            assert x0 <= x < x1 and y0 <= y < y1 and crop[y - y0, x - x0]
    assert sp.region_at(0, -1.0, 5.0) is None and sp.segment_at(0, 400.0, 5.0) is None


def test_superpixels_of_a_real_photograph_hold_its_objects():
    """Achievable segmentation accuracy on the VOC aeroplane: labelling each fine superpixel with
    its majority ground-truth class gets ≥ 95 % of the (non-void) pixels right."""
    img = np.asarray(Image.open(VOC / "images" / f"{PLANE}.png").convert("RGB"))
    gt = np.asarray(Image.open(VOC / "masks" / f"{PLANE}.png"))
    sp = compute_superpixels(img)
    field, valid = sp.levels[0].field, gt != 255
    right = 0
    for seg in range(sp.levels[0].count):
        cls = gt[(field == seg) & valid]
        right += np.bincount(cls).max() if cls.size else 0
    assert right / valid.sum() > 0.95


def test_the_cache_computes_in_the_background_keeps_the_last_images_and_stops():
    cache = SuperpixelCache(capacity=2)
    imgs = [two_colour_image(60, 80, seed=s)[0] for s in range(3)]
    try:
        futs = [cache.start(f"k{i}", im) for i, im in enumerate(imgs)]
        assert cache.start("k2", imgs[2]) is futs[2]  # started once per image
        assert cache.get("k0") is None  # evicted (cancelled, or its result dropped)
        sp = cache.get("k2")
        assert sp is not None and sp.shape == (60, 80) and cache.ready("k2")
        assert cache.get("never") is None
    finally:
        cache.shutdown()


# --- the wand in a session ---------------------------------------------------------------------
@pytest.fixture
def session(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(VOC / "images" / f"{PLANE}.png", folder / f"{PLANE}.png")
    s = AnnotationSession()
    assert s.open_folder(folder)
    yield s
    if s.close_image():
        s.shutdown()


def wand(session: AnnotationSession, points, *, cls: int = 1, scale: int = 0) -> None:
    session.set_active_class(cls)
    session.tools.ctx.wand_scale = scale
    session.tools.select("wand")
    tool = session.tools.tool_for(Mods())
    tool.press(points[0], Mods())
    for p in points[1:]:
        tool.move(p, Mods())
    tool.release(points[-1], Mods())


def test_a_wand_click_fills_the_superpixel_under_it_as_one_undo_step(session):
    doc = session.document
    sp = session.superpixels.get(doc.key)  # started when the image opened
    assert sp is not None and sp.shape == doc.labels.shape
    for scale in range(len(sp)):
        box, crop = sp.region_at(scale, 250.0, 260.0)
        expected = np.zeros(doc.labels.shape, bool)
        expected[box[1]:box[3], box[0]:box[2]] = crop
        wand(session, [(250.0, 260.0)], cls=1, scale=scale)
        assert np.array_equal(doc.labels == 1, expected)
        assert np.array_equal(doc.edit_mask, expected)  # painted pixels are human
        session.undo()
        assert not doc.labels.any() and not doc.edit_mask.any()


def test_the_wand_on_the_real_aeroplane_gives_aeroplane_pixels(session):
    gt = np.asarray(Image.open(VOC / "masks" / f"{PLANE}.png"))
    wand(session, [(250.0, 260.0)], cls=1, scale=1)  # the fuselage
    painted = session.document.labels == 1
    valid = gt != 255
    assert painted.sum() > 500 and (gt[painted & valid] == 1).mean() > 0.95


def test_a_wand_drag_paints_every_superpixel_it_crosses_in_one_step(session):
    doc = session.document
    sp = session.superpixels.get(doc.key)
    path = [(100.5, 100.5), (220.5, 100.5), (220.5, 160.5)]  # along pixel centres: no corner cases
    wand(session, path, cls=3, scale=0)
    crossed = set()
    for (ax, ay), (bx, by) in zip(path, path[1:]):
        for t in np.linspace(0, 1, 200):
            crossed.add(sp.segment_at(0, ax + (bx - ax) * t, ay + (by - ay) * t))
    expected = np.zeros(doc.labels.shape, bool)
    for seg in crossed:
        (x0, y0, x1, y1), crop = sp.mask(0, seg)
        expected[y0:y1, x0:x1] |= crop
    assert len(crossed) >= 5 and np.array_equal(doc.labels == 3, expected)
    assert session.history.active.index() == 1
    session.undo()
    assert not doc.labels.any()


def test_background_only_keeps_other_classes_and_read_only_allows_no_wand(session, tmp_path):
    doc = session.document
    doc.labels[:, :260] = 7  # a class already there (as if loaded)
    session.tools.ctx.background_only = True
    wand(session, [(250.0, 260.0)], cls=2, scale=2)
    assert (doc.labels[:, :260] == 7).all() and (doc.labels == 2).any()
    session.tools.ctx.read_only = True
    session.tools.select("wand")
    assert session.tools.tool_for(Mods()) is None
