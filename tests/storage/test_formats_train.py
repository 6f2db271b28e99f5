"""`train` and `evaluate` read datasets through the import's readers: labelmap.txt colours decode
colour masks, a VOC folder without ImageSets trains, any importable folder trains."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.commands import CommandError
from deeplab_studio.commands.evaluate import open_source, read_pair
from deeplab_studio.commands.train import load_data
from deeplab_studio.core.labels import IGNORE
from deeplab_studio.ml.datasets import load_sample

COLOURS = [(0, 0, 0), (200, 100, 0), (0, 0, 255)]


def _colour_voc(root: Path, n: int, *, with_sets: bool) -> dict[str, np.ndarray]:
    """A VOC folder with colour masks in labelmap.txt's colours (not the VOC colormap's)."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n"
                                       + "".join(f"{nm}:{r},{g},{b}::\n" for nm, (r, g, b)
                                                 in zip(("background", "road", "car"), COLOURS))
                                       + "ignored:224,224,192::\n")
    pal = np.array(COLOURS + [(0, 0, 0)] * 252 + [(224, 224, 192)], np.uint8)
    truth = {}
    for i in range(n):
        lab = np.zeros((16, 20), np.uint8)
        lab[2 + i:8 + i, 3:9] = 1
        lab[10:, 12:] = 2
        lab[0] = IGNORE
        Image.fromarray(np.full((16, 20, 3), 30 * i, np.uint8)).save(root / "JPEGImages" / f"im{i}.jpg")
        Image.fromarray(pal[lab]).save(root / "SegmentationClass" / f"im{i}.png")  # RGB colour mask
        truth[f"im{i}"] = lab
    if with_sets:
        (root / "ImageSets/Segmentation").mkdir(parents=True)
        (root / "ImageSets/Segmentation/train.txt").write_text("".join(f"im{i}\n" for i in range(n - 1)))
        (root / "ImageSets/Segmentation/val.txt").write_text(f"im{n - 1}\n")
    return truth


def test_labelmap_colours_decode_in_train_and_evaluate(tmp_path: Path) -> None:
    truth = _colour_voc(tmp_path / "voc", 3, with_sets=True)
    data = load_data(tmp_path / "voc", val_fraction=0.2, seed=0)
    assert data.class_names == ["background", "road", "car"] and data.class_colors == COLOURS
    assert [s.name for s in data.val] == ["im2"] and data.source.startswith("VOC ")
    for sample in data.train + data.val:
        _, labels = load_sample(pickle.loads(pickle.dumps(sample)))
        np.testing.assert_array_equal(labels, truth[sample.name])
    (item,) = open_source(tmp_path / "voc", "auto", None).items
    np.testing.assert_array_equal(read_pair(item)[1], truth["im2"])


def test_a_voc_folder_without_imagesets_trains(tmp_path: Path) -> None:
    truth = _colour_voc(tmp_path / "voc", 5, with_sets=False)
    data = load_data(tmp_path / "voc", val_fraction=0.4, seed=1)
    assert len(data.train) == 3 and len(data.val) == 2 and "seeded split 0.4" in data.source
    assert sorted(s.name for s in data.train + data.val) == sorted(truth)


def test_a_mask_folder_trains_and_a_non_dataset_is_one_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "m"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(3):
        Image.fromarray(np.full((12, 14, 3), 50 * i, np.uint8)).save(root / "images" / f"{i}.webp", lossless=True)
        Image.fromarray(np.full((12, 14), i % 2, np.uint8)).save(root / "masks" / f"{i}.png")
    data = load_data(root, val_fraction=0.34, seed=0, fmt="masks")
    assert data.class_names == ["background", "class 1"] and data.source.startswith("mask folder ")
    assert load_sample(data.train[0])[1].shape == (12, 14)
    with pytest.raises(CommandError, match="neither a VOC folder nor another dataset"):
        load_data(tmp_path, val_fraction=0.2, seed=0)
