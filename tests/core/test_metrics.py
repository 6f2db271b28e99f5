"""ConfusionMatrix against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from deeplab_studio.core.metrics import ConfusionMatrix


def test_hand_computed_example() -> None:
    gt = np.array([[0, 0, 1, 1],
                   [0, 0, 1, 1],
                   [2, 2, 255, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 1],
                     [0, 0, 1, 0],
                     [2, 255, 2, 0]], np.uint8)
    cm = ConfusionMatrix(4)
    cm.update(gt, pred)
    # gt 0: pred 0,1,0,0 ; gt 1: pred 1,1,1,0 ; gt 2: pred 2, ignore(missed) ; two GT-ignore skipped
    assert cm.matrix.tolist() == [[3, 1, 0, 0], [1, 3, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert cm.missed.tolist() == [0, 0, 1, 0]
    assert cm.total == 10
    iou = cm.iou()
    assert iou[0] == pytest.approx(3 / (4 + 4 - 3))
    assert iou[1] == pytest.approx(3 / (4 + 4 - 3))
    assert iou[2] == pytest.approx(1 / (2 + 1 - 1))
    assert math.isnan(iou[3])  # absent from both: not part of the mean
    assert cm.miou() == pytest.approx((0.6 + 0.6 + 0.5) / 3)
    assert cm.pixel_accuracy() == pytest.approx(7 / 10)
    assert cm.class_accuracy()[:3] == pytest.approx([0.75, 0.75, 0.5])


def test_class_only_in_prediction_counts_in_mean() -> None:
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 2]))
    iou = cm.iou()
    assert iou[0] == pytest.approx(3 / 4) and iou[2] == 0.0 and math.isnan(iou[1])
    assert cm.miou() == pytest.approx((0.75 + 0.0) / 2)


def test_accumulate_and_merge_equal_one_big_update() -> None:
    rng = np.random.default_rng(0)
    imgs = [(rng.integers(0, 5, (16, 16)), rng.integers(0, 5, (16, 16))) for _ in range(6)]
    for g, p in imgs:
        g[rng.random(g.shape) < 0.1] = 255
        p[rng.random(p.shape) < 0.05] = 255
    whole = ConfusionMatrix(5)
    whole.update(np.concatenate([g for g, _ in imgs]), np.concatenate([p for _, p in imgs]))
    a, b = ConfusionMatrix(5), ConfusionMatrix(5)
    for i, (g, p) in enumerate(imgs):
        (a if i % 2 else b).update(g.astype(np.uint8), p.astype(np.uint8))
    a.merge(b)
    assert np.array_equal(a.matrix, whole.matrix) and np.array_equal(a.missed, whole.missed)
    assert a.miou() == whole.miou()
    # reference by plain loops
    ref = np.zeros((5, 5), np.int64)
    for g, p in imgs:
        for gv, pv in zip(g.ravel(), p.ravel()):
            if gv != 255 and pv != 255:
                ref[gv, pv] += 1
    assert np.array_equal(whole.matrix, ref)


def test_to_dict_is_json_and_round_trips() -> None:
    cm = ConfusionMatrix(3)
    cm.update(np.array([[0, 1], [1, 255]]), np.array([[0, 1], [255, 2]]))
    d = cm.to_dict(["bg", "a", "b"])
    text = json.dumps(d)
    assert d["iou"] == [1.0, 0.5, None] and d["class_names"] == ["bg", "a", "b"]
    back = ConfusionMatrix.from_dict(json.loads(text))
    assert np.array_equal(back.matrix, cm.matrix) and np.array_equal(back.missed, cm.missed)
    assert back.miou() == cm.miou()
    empty = ConfusionMatrix(2).to_dict()
    assert empty["miou"] is None and empty["pixel_accuracy"] is None
    json.dumps(empty)


def test_bad_input() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="ground truth holds value 7"):
        cm.update(np.array([7]), np.array([0]))
    with pytest.raises(ValueError, match="prediction holds value 3"):
        cm.update(np.array([0]), np.array([3]))
    with pytest.raises(ValueError):
        cm.merge(ConfusionMatrix(4))
    with pytest.raises(ValueError):
        ConfusionMatrix(300, ignore_index=255)
    assert cm.total == 0
    with pytest.raises(ValueError):
        cm.matrix[0, 0] = 1
    no_ignore = ConfusionMatrix(3, ignore_index=None)
    with pytest.raises(ValueError):
        no_ignore.update(np.array([0]), np.array([255]))
    with pytest.raises(ValueError):
        no_ignore.update(np.array([0]), np.array([3]))


@pytest.mark.parametrize("ignore", [255, None, 7])
def test_uint8_fast_path_equals_general_path(ignore) -> None:
    rng = np.random.default_rng(4)
    k = 6
    gt = rng.integers(0, k, (30, 40)).astype(np.uint8)
    pred = rng.integers(0, k, (30, 40)).astype(np.uint8)
    if ignore is not None:
        gt[rng.random(gt.shape) < 0.1] = ignore
        pred[rng.random(pred.shape) < 0.1] = ignore
    fast, general = ConfusionMatrix(k, ignore), ConfusionMatrix(k, ignore)
    fast.update(gt, pred)
    general.update(gt.astype(np.int32), pred.astype(np.int32))
    assert np.array_equal(fast.matrix, general.matrix)
    assert np.array_equal(fast.missed, general.missed)
    assert fast.total == general.total == int((gt != (ignore if ignore is not None else -1)).sum())


def test_uint8_bad_values_raise() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="ground truth holds value 7"):
        cm.update(np.array([[7, 0]], np.uint8), np.array([[0, 0]], np.uint8))
    with pytest.raises(ValueError, match="prediction holds value 3"):
        cm.update(np.array([[0, 255]], np.uint8), np.array([[3, 3]], np.uint8))
    # a bad prediction under ignored ground truth is not counted, so not an error
    cm.update(np.array([[0, 255]], np.uint8), np.array([[0, 9]], np.uint8))
    assert cm.total == 1 and cm.matrix[0, 0] == 1
    with pytest.raises(ValueError):
        ConfusionMatrix(3, ignore_index=None).update(np.array([[0]], np.uint8), np.array([[255]], np.uint8))


def _voc_indices(path) -> np.ndarray:
    from PIL import Image

    from deeplab_studio.core.labels import voc_colormap

    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
    key = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    cmap = voc_colormap().astype(np.int64)
    ckey = (cmap[:, 0] << 16) | (cmap[:, 1] << 8) | cmap[:, 2]
    order = np.argsort(ckey)
    pos = np.searchsorted(ckey[order], key).clip(0, 255)
    assert np.array_equal(ckey[order][pos], key), f"{path} holds colours outside the VOC colormap"
    return order[pos].astype(np.uint8)


@pytest.mark.parametrize("n, cls, miou", [(1, 1, 0.9692), (23, 17, 0.9660), (114, 3, 0.9637)])
def test_real_deeplab_prediction_miou(data_dir, n, cls, miou) -> None:
    gt = _voc_indices(data_dir / "voc_samples" / f"{n}_target.png")
    pred = _voc_indices(data_dir / "voc_samples" / f"{n}_pred.png")
    assert (gt == 255).any() and set(np.unique(gt)) <= {0, cls, 255}
    cm = ConfusionMatrix(21)
    cm.update(gt, pred)
    assert cm.total == int((gt != 255).sum())
    assert cm.miou() == pytest.approx(miou, abs=5e-5)
    assert np.isfinite(cm.iou()).sum() == 2  # background and the object only
