"""Training augmentation and the seeded epoch sampler."""

from __future__ import annotations

import numpy as np
import pytest

from deeplab_studio.core.scenes import generate_scene
from deeplab_studio.ml.augment import MEAN_PIXEL, AugmentParams, augment, color_jitter, random_scale_crop
from deeplab_studio.ml.datasets import EpochSampler, Sample, SegmentationDataset

COLORS = np.array([[10, 10, 10], [250, 30, 30], [30, 250, 30], [30, 30, 250]], np.uint8)


def _coded_pair(h: int = 40, w: int = 56) -> tuple[np.ndarray, np.ndarray]:
    """A label map of blocks and an image whose colour encodes the label."""
    lab = np.zeros((h, w), np.uint8)
    lab[5:20, 4:30] = 1
    lab[22:38, 20:50] = 2
    lab[:, 52:] = 3
    return COLORS[lab], lab


def test_same_seed_same_crop_other_seed_other_crop() -> None:
    img, lab = generate_scene(60, 80, seed=1)
    p = AugmentParams(crop=48)
    a = augment(img, lab, np.random.default_rng(5), p)
    b = augment(img, lab, np.random.default_rng(5), p)
    c = augment(img, lab, np.random.default_rng(6), p)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (48, 48, 3) and a[1].shape == (48, 48) and a[0].dtype == a[1].dtype == np.uint8


def test_scale_range_padding_and_label_values() -> None:
    img, lab = _coded_pair()
    areas = []
    for seed in range(60):
        rng = np.random.default_rng(seed)
        o, lb, (x0, y0, x1, y1) = random_scale_crop(img, lab, rng, 64, (0.5, 2.0), flip=True)
        valid = lb != 255
        assert set(np.unique(lb)) <= {0, 1, 2, 3, 255}  # nearest neighbour: no invented labels
        assert valid.sum() == (x1 - x0) * (y1 - y0)  # the image covers exactly the valid box
        assert (o[~valid] == MEAN_PIXEL).all()  # padding: mean colour / ignore
        areas.append(valid.sum())
        # where a label is, the image shows that label's colour (no misalignment, flips included)
        inner = valid.copy()
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            inner &= np.roll(lb, (dy, dx), (0, 1)) == lb
        err = np.abs(o[inner].astype(int) - COLORS[lb[inner]])
        assert err.max() < 120 and err.mean() < 2  # colours are >= 220 apart; bilinear blends a little
    full = 40 * 56
    assert min(areas) < 0.5 * full and max(areas) >= 64 * 40  # small at 0.5×, crop-filling at 2×


def test_flip_is_a_mirror_at_scale_one() -> None:
    img, lab = _coded_pair(64, 64)
    seen = set()
    for seed in range(20):
        o, lb, _ = random_scale_crop(img, lab, np.random.default_rng(seed), 64, (1.0, 1.0), flip=True)
        assert np.array_equal(lb, lab) or np.array_equal(lb, lab[:, ::-1])
        seen.add(bool(np.array_equal(lb, lab)))
        assert np.array_equal(o, COLORS[lb])
    assert seen == {True, False}


def test_jitter_changes_colours_but_not_padding() -> None:
    img, lab = generate_scene(20, 20, seed=2)
    out, olab = augment(img, lab, np.random.default_rng(0), AugmentParams(crop=64, scale=(1, 1), jitter=0.3))
    assert (out[olab == 255] == MEAN_PIXEL).all()
    jittered = color_jitter(img, np.random.default_rng(1), 0.3)
    assert jittered.dtype == np.uint8 and not np.array_equal(jittered, img)
    assert np.array_equal(color_jitter(img, np.random.default_rng(1), 0.0), img)


def test_mismatched_pair_raises() -> None:
    img, lab = generate_scene(20, 20, seed=2)
    with pytest.raises(ValueError):
        augment(img, lab[:10], np.random.default_rng(0), AugmentParams(crop=16))


def test_epoch_sampler_is_seeded_per_epoch_and_resumes_mid_epoch() -> None:
    s = EpochSampler(10, seed=3, min_items=12)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert len(e0) == 12 and sorted({i for i, _ in e0}) == list(range(10))
    assert e0 != e1
    s.set_epoch(1, start=8)
    assert list(s) == e1[8:] and len(s) == 4
    s2 = EpochSampler(10, seed=3, min_items=12)
    s2.set_epoch(1)
    assert list(s2) == e1


def test_dataset_items_depend_only_on_the_key() -> None:
    scenes = [generate_scene(40, 40, seed=i) for i in range(3)]
    ds = SegmentationDataset([Sample(i, lb) for i, lb in scenes], 4, AugmentParams(crop=32))
    a_img, a_lab = ds[(1, 99)]
    b_img, b_lab = ds[(1, 99)]
    assert a_img.shape == (3, 32, 32) and a_lab.shape == (32, 32)
    assert str(a_img.dtype) == "torch.uint8" and (a_img == b_img).all() and (a_lab == b_lab).all()
