"""LabelSet: VOC colormap, editing with remap tables, limits, JSON."""

from __future__ import annotations

import numpy as np
import pytest

from deeplab_studio.core.labels import (BACKGROUND, IGNORE, IGNORE_COLOR, MAX_CLASSES, VOC_CLASSES,
                                        LabelSet, LabelSetError, voc_colormap)


def test_voc_colormap_known_values() -> None:
    cmap = voc_colormap()
    assert cmap.shape == (256, 3) and cmap.dtype == np.uint8
    assert tuple(cmap[0]) == (0, 0, 0)
    assert tuple(cmap[1]) == (128, 0, 0)
    assert tuple(cmap[2]) == (0, 128, 0)
    assert tuple(cmap[15]) == (192, 128, 128)
    assert tuple(cmap[20]) == (0, 64, 128)
    assert tuple(cmap[255]) == (224, 224, 192) == IGNORE_COLOR
    assert len({tuple(c) for c in cmap}) == 256  # all distinct


def test_voc_default_and_palette() -> None:
    ls = LabelSet.voc()
    assert ls.names == list(VOC_CLASSES) and len(ls) == 21
    assert ls.names[15] == "person" and ls.colors[15] == (192, 128, 128)
    pal = ls.palette()
    assert pal.shape == (256, 3) and tuple(pal[IGNORE]) == IGNORE_COLOR
    labels = np.array([[0, 1], [15, 255]], np.uint8)
    rgb = ls.colorize(labels)
    assert rgb.shape == (2, 2, 3)
    assert tuple(rgb[0, 1]) == (128, 0, 0) and tuple(rgb[1, 1]) == IGNORE_COLOR


def test_add_rename_recolor() -> None:
    ls = LabelSet(["background", "road"])
    i = ls.add("tree", (1, 2, 3))
    assert i == 2 and ls.colors[2] == (1, 2, 3)
    j = ls.add("car")
    assert ls.colors[j] == tuple(int(v) for v in voc_colormap()[3])
    ls.rename(1, "street")
    assert ls.index("street") == 1
    ls.recolor(1, (9, 9, 9))
    assert tuple(ls.palette()[1]) == (9, 9, 9)
    with pytest.raises(LabelSetError):
        ls.add("tree")
    with pytest.raises(LabelSetError):
        ls.rename(1, "tree")
    with pytest.raises(LabelSetError):
        ls.recolor(1, (256, 0, 0))
    with pytest.raises(LabelSetError):
        ls.add("a:b")
    with pytest.raises(LabelSetError):
        ls.rename(9, "x")
    with pytest.raises(KeyError):
        ls.index("nope")


def test_delete_with_remap_lut() -> None:
    ls = LabelSet(["background", "a", "b", "c"])
    labels = np.array([0, 1, 2, 3, 255], np.uint8)
    lut = ls.delete(2, replacement=1)
    assert lut.dtype == np.uint8 and lut.shape == (256,)
    assert ls.names == ["background", "a", "c"]
    assert lut[labels].tolist() == [0, 1, 1, 2, 255]
    ls2 = LabelSet(["background", "a", "b", "c"])
    assert ls2.delete(1)[labels].tolist() == [0, 0, 1, 2, 255]  # default: to background
    ls3 = LabelSet(["background", "a", "b", "c"])
    assert ls3.delete(3, replacement=IGNORE)[labels].tolist() == [0, 1, 2, 255, 255]
    with pytest.raises(LabelSetError):
        ls3.delete(BACKGROUND)
    with pytest.raises(LabelSetError):
        ls3.delete(1, replacement=1)


def test_class_limit_255() -> None:
    names = [f"c{i}" for i in range(MAX_CLASSES)]
    ls = LabelSet(names)
    assert len(ls) == 255
    with pytest.raises(LabelSetError):
        ls.add("one-too-many")
    with pytest.raises(LabelSetError):
        LabelSet(names + ["x"])
    with pytest.raises(LabelSetError):
        LabelSet([])
    with pytest.raises(LabelSetError):
        LabelSet(["a", "a"])


def test_json_round_trip() -> None:
    ls = LabelSet(["background", "x", "y"], [(0, 0, 0), (10, 20, 30)])
    back = LabelSet.from_json(ls.to_json())
    assert back.names == ls.names and back.colors == ls.colors
    assert back.colors[2] == tuple(int(v) for v in voc_colormap()[2])
    with pytest.raises(LabelSetError):
        LabelSet.from_json([{"label": "x"}])
