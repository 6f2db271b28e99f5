"""The synthetic scene generator: deterministic, any size, learnable class statistics."""

from __future__ import annotations

import numpy as np
import pytest

from deeplab_studio.core.scenes import SCENE_CLASSES, generate_scene, generate_scenes, scene_labelset


def test_same_seed_same_scene_other_seed_other_scene() -> None:
    a_img, a_lab = generate_scene(48, 64, seed=7)
    b_img, b_lab = generate_scene(48, 64, seed=7)
    c_img, _ = generate_scene(48, 64, seed=8)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)


@pytest.mark.parametrize("h, w", [(8, 8), (37, 91), (200, 120)])
def test_any_size_types_and_label_range(h: int, w: int) -> None:
    img, lab = generate_scene(h, w, seed=(1, h, w))
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    assert lab.shape == (h, w) and lab.dtype == np.uint8
    assert lab.max() < len(SCENE_CLASSES)


def test_too_small_or_bad_counts_raise() -> None:
    with pytest.raises(ValueError):
        generate_scene(4, 64, seed=0)
    with pytest.raises(ValueError):
        generate_scene(64, 64, seed=0, min_objects=3, max_objects=1)


def test_every_class_appears_and_objects_are_drawn_where_labelled() -> None:
    scenes = generate_scenes(40, 64, 64, seed=3)
    counts = np.bincount(np.concatenate([lab.ravel() for _, lab in scenes]), minlength=4)
    assert (counts > 0).all()
    assert 0.05 < counts[1:].sum() / counts.sum() < 0.6  # objects are neither specks nor everything
    assert generate_scenes(2, 32, 32, seed=3)[1][0].tolist() == generate_scene(32, 32, seed=(3, 1))[0].tolist()


def test_classes_have_distinct_colour_statistics() -> None:
    """Mean colour per class: disks are reddest, squares bluest, triangles greenest."""
    scenes = generate_scenes(40, 64, 64, seed=5)
    img = np.concatenate([im.reshape(-1, 3) for im, _ in scenes]).astype(np.float64)
    lab = np.concatenate([lb.ravel() for _, lb in scenes])
    means = np.stack([img[lab == c].mean(0) for c in range(4)])
    chroma = means - means.mean(1, keepdims=True)  # colour minus grey level
    assert chroma[1].argmax() == 0 and chroma[2].argmax() == 2 and chroma[3].argmax() == 1
    assert np.ptp(chroma[0]) < min(np.ptp(chroma[c]) for c in (1, 2, 3))  # background is greyish


def test_labelset_matches_classes() -> None:
    ls = scene_labelset()
    assert ls.names == list(SCENE_CLASSES) and len(ls.colors) == 4
