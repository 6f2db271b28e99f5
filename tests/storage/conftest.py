"""A small annotated project shared by the VOC tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.core.labels import LabelSet
from deeplab_studio.storage.project import Project, Status

CLASSES = LabelSet(["background", "cat", "dog food", "tree"], [(0, 0, 0), (250, 10, 10), (10, 250, 10), (1, 2, 3)])


def _labels(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), np.uint8)
    for cls in (1, 2, 3):
        y, x = rng.integers(0, h - 10), rng.integers(0, w - 10)
        lab[y:y + 10, x:x + 12] = cls
    lab[0, :] = 255  # a void band
    return lab


@pytest.fixture()
def annotated(tmp_path: Path) -> Project:
    """Images: JPEG, PNG, same stem in a subfolder, an EXIF-rotated JPEG, RGBA PNG; statuses mixed."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)

    def rgb(h=48, w=64):
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)

    Image.fromarray(rgb()).save(folder / "a.jpg", quality=90)
    Image.fromarray(rgb()).save(folder / "b.png")
    Image.fromarray(rgb()).save(folder / "sub" / "a.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb(48, 64)).save(folder / "rot.jpg", exif=exif.tobytes())  # shown as 48 wide, 64 high
    Image.fromarray(rng.integers(0, 256, (40, 40, 4), dtype=np.uint8), "RGBA").save(folder / "alpha.png")
    Image.fromarray(rgb()).save(folder / "todo.jpg")  # stays unlabeled
    proj = Project.open(folder)
    proj.set_labelset(CLASSES)
    plan = {"a.jpg": Status.REVIEWED, "b.png": Status.EDITED, "sub/a.jpg": Status.AUTO, "rot.jpg": Status.REVIEWED,
            "alpha.png": Status.EDITED}
    for i, (path, status) in enumerate(plan.items()):
        rec = proj.record(path)
        mask = np.zeros((rec.height, rec.width), bool)
        mask[5:9, 5:9] = status != Status.AUTO
        proj.save_annotation(rec, _labels(rec.height, rec.width, i), mask, status=status)
    return proj
