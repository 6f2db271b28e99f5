"""One EXIF rule for import, train and evaluate: a mask of a mask format is stored in its image
file's raw pixel frame and is turned with the image's EXIF orientation, so labels always sit on
the image as the window shows it (orientation 3: turned by 180°, orientation 6: by 90°)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from deeplab_studio.commands.evaluate import open_source, read_pair
from deeplab_studio.commands.train import load_data
from deeplab_studio.core.labels import voc_colormap
from deeplab_studio.ml.datasets import load_sample
from deeplab_studio.storage.formats import open_dataset
from deeplab_studio.storage.formats.project_import import import_dataset
from deeplab_studio.storage.images import read_image
from deeplab_studio.storage.labelmaps import write_label_png
from deeplab_studio.storage.project import Project

SHOWN = {1: lambda a: a, 3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, -1)}


def _pair(image: Path, mask: Path, orientation: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A JPEG with that EXIF orientation and its raw-frame mask (an off-centre block, so a turn shows)."""
    rng = np.random.default_rng(seed)
    raw = np.repeat(np.repeat(rng.integers(0, 255, (3, 4, 3), dtype=np.uint8), 10, 0), 10, 1)  # 30×40, blocky
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(raw).save(image, quality=95, exif=exif.tobytes())
    lab = np.zeros((30, 40), np.uint8)
    lab[2:9, 3:15] = 1
    lab[20:, 30:] = 2
    mask.parent.mkdir(parents=True, exist_ok=True)
    write_label_png(mask, lab, voc_colormap())
    return raw, lab


def test_voc_orientation_3_is_one_rule_for_import_train_and_evaluate(tmp_path: Path) -> None:
    voc = tmp_path / "voc"
    truth = {}
    for k, (voc_id, o) in enumerate((("upside_down", 3), ("upright", 1), ("turned", 6))):
        _, lab = _pair(voc / "JPEGImages" / f"{voc_id}.jpg", voc / "SegmentationClass" / f"{voc_id}.png", o, k)
        truth[voc_id] = SHOWN[o](lab)
    (voc / "ImageSets/Segmentation").mkdir(parents=True)
    (voc / "ImageSets/Segmentation/train.txt").write_text("upside_down\nupright\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("turned\n")
    (voc / "class_names.txt").write_text("background\nsky\ntree\n")

    s = import_dataset(open_dataset(voc), tmp_path / "p")  # import
    assert s.imported == 3 and s.rotated == 2
    with Project.open(tmp_path / "p", read_only=True) as proj:
        for rec in proj.records:
            labels = proj.load_annotation(rec)[0]
            np.testing.assert_array_equal(labels, truth[rec.path[:-4]])
            assert labels.shape == proj.read_image(rec).shape[:2]

    data = load_data(voc, val_fraction=0.2, seed=0)  # train: the dataset's train/val split
    assert sorted(x.name for x in data.train) == ["upright", "upside_down"] and [x.name for x in data.val] == ["turned"]
    for sample in data.train + data.val:
        sample = pickle.loads(pickle.dumps(sample))  # as a spawned loader process gets it
        image, labels = load_sample(sample)
        np.testing.assert_array_equal(labels, truth[sample.name])
        np.testing.assert_array_equal(image, read_image(voc / "JPEGImages" / f"{sample.name}.jpg"))

    source = open_source(voc, "auto", None)  # evaluate: the val split, read the same way
    assert [it.key for it in source.items] == ["turned"]
    for split in ("train", "val"):
        for item in open_source(voc, "voc", split).items:
            image, gt = read_pair(item)
            np.testing.assert_array_equal(gt, truth[item.key])
            assert image.shape[:2] == gt.shape


def test_mask_folder_and_cvat_masks_follow_the_same_rule(tmp_path: Path) -> None:
    _, lab = _pair(tmp_path / "m/images/x.jpg", tmp_path / "m/masks/x.png", 3, 0)
    np.testing.assert_array_equal(open_dataset(tmp_path / "m").items[0].read_labels(), np.rot90(lab, 2))
    cvat = tmp_path / "c"
    _, lab = _pair(cvat / "JPEGImages/d/y.jpg", cvat / "SegmentationClass/d/y.png", 6, 1)
    (cvat / "ImageSets/Segmentation").mkdir(parents=True)
    (cvat / "ImageSets/Segmentation/default.txt").write_text("d/y\n")
    (cvat / "labelmap.txt").write_text("background:0,0,0::\na:128,0,0::\nb:0,128,0::\n")
    source = open_dataset(cvat)
    assert source.format == "cvat-mask"
    np.testing.assert_array_equal(source.items[0].read_labels(), np.rot90(lab, -1))
