"""Uncertainty bookkeeping (Qt-free): ranking, bounded maps, persistence per model, overlay."""

from __future__ import annotations

import numpy as np

from deeplab_studio.gui.model.uncertainty import UncertaintyStore, contrasting_color, uncertainty_overlay


def _conf(value: int) -> np.ndarray:
    return np.full((4, 5), value, np.uint8)


def test_ranking_bounded_maps_and_persistence(tmp_path) -> None:
    store = UncertaintyStore(max_maps=2)
    store.bind(tmp_path)
    store.set_model("a.safetensors")
    assert abs(store.put("x", _conf(255)) - 0.0) < 1e-6
    store.put("y", _conf(51))
    store.put("z", _conf(153))
    assert store.ranked(["x", "y", "z", "unknown"]) == ["y", "z", "x"]
    assert store.map("x") is None and store.map("z") is not None  # only the newest maps are kept
    store.save()
    again = UncertaintyStore()
    again.bind(tmp_path)
    assert again.model == "a.safetensors" and again.ranked(["x", "y", "z"]) == ["y", "z", "x"]
    again.set_model("a.safetensors")  # same model: the means stay
    assert again.ranked(["y"]) == ["y"]
    again.set_model("b.safetensors")  # another model: its proposals are not comparable
    assert again.ranked(["x", "y", "z"]) == []
    third = UncertaintyStore()
    third.bind(tmp_path)
    assert third.model == "b.safetensors" and third.mean == {}


def test_a_damaged_side_file_only_loses_the_hint(tmp_path) -> None:
    (tmp_path / "uncertainty.json").write_text("{broken")
    store = UncertaintyStore()
    store.bind(tmp_path)
    assert store.mean == {} and store.model is None


def test_overlay_marks_low_confidence() -> None:
    conf = np.array([[255, 240, 100, 0]], np.uint8)  # threshold 0.9 ≈ 230
    rgba = uncertainty_overlay(conf)
    assert rgba.shape == (1, 4, 4) and rgba.dtype == np.uint8
    alpha = rgba[0, :, 3]
    assert alpha[0] == 0 and alpha[1] == 0 and 0 < alpha[2] < alpha[3]
    assert (rgba[0, 2, :3] == (255, 0, 255)).all()  # magenta unless a class looks like it


def test_overlay_colour_differs_from_every_class_colour() -> None:
    from deeplab_studio.core.labels import LabelSet
    from deeplab_studio.core.scenes import scene_labelset

    for labelset in (scene_labelset(), LabelSet.voc(), LabelSet(["background"], [(0, 0, 0)])):
        color = np.asarray(contrasting_color(labelset.colors), float)
        nearest = min(np.linalg.norm(color - np.asarray(c, float)) for c in labelset.colors)
        assert nearest >= 150, (labelset.names, tuple(color), nearest)
    assert contrasting_color(scene_labelset().colors) != (255, 0, 255)  # the scenes' triangle is (235, 0, 200)
    assert contrasting_color([(0, 0, 0)]) == (255, 0, 255)
    rgba = uncertainty_overlay(np.zeros((2, 2), np.uint8), color=(0, 255, 0))
    assert (rgba[..., :3] == (0, 255, 0)).all() and (rgba[..., 3] > 0).all()
