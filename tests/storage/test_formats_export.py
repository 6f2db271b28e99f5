"""The generic export (every format but VOC's own path): what the writers write, the round trip
through their own reader, the target rules shared with the VOC export, failures and stopping."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.core.labels import LabelSet
from deeplab_studio.storage.formats import open_dataset, writer
from deeplab_studio.storage.formats.base import Cancelled, FormatError
from deeplab_studio.storage.formats.project_export import export_dataset
from deeplab_studio.storage.formats.project_import import import_dataset
from deeplab_studio.storage.project import Project
from deeplab_studio.storage.voc import ForeignExportError, VOCError

MARKER = ".deeplab-studio-export.json"


def _maps(project: Project) -> dict[str, np.ndarray]:
    return {r.path: project.load_annotation(r)[0] for r in project.records if project.has_annotation(r)}


@pytest.mark.parametrize("fmt", ["cvat-mask", "masks", "voc"])
def test_export_then_import_gives_the_label_maps_back(annotated: Project, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "out"
    s = export_dataset(annotated, out, fmt, **({"layout": "flat"} if fmt == "voc" else {}))
    assert s.format == fmt and len(s.keys) == 5 and s.skipped == {"unlabeled": 1} and not s.failed
    source = open_dataset(out)
    assert source.format == fmt and not source.problems
    imported = import_dataset(source, tmp_path / "back")
    assert imported.imported == 5 and not imported.failed
    back = Project.open(tmp_path / "back", read_only=True)
    assert back.labels == annotated.labels
    want = _maps(annotated)
    stem = {"voc": lambda p: p.replace("/", "_")}.get(fmt, lambda p: p)
    for path, labels in want.items():
        rec = next(r for r in back.records if r.path.rsplit(".", 1)[0] == stem(path).rsplit(".", 1)[0])
        np.testing.assert_array_equal(back.load_annotation(rec)[0], labels)
        assert rec.size == annotated.record(path).size
    back.close()


def test_cvat_mask_layout(annotated: Project, tmp_path: Path) -> None:
    out = tmp_path / "cvat"
    export_dataset(annotated, out, "cvat-mask")
    tree = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert tree == [MARKER, "ImageSets/Segmentation/default.txt", "JPEGImages/a.jpg", "JPEGImages/alpha.png",
                    "JPEGImages/b.png", "JPEGImages/rot.jpg", "JPEGImages/sub/a.jpg", "SegmentationClass/a.png",
                    "SegmentationClass/alpha.png", "SegmentationClass/b.png", "SegmentationClass/rot.png",
                    "SegmentationClass/sub/a.png", "labelmap.txt"]
    assert (out / "JPEGImages/a.jpg").read_bytes() == (annotated.folder / "a.jpg").read_bytes()  # copied
    assert (out / "JPEGImages/b.png").read_bytes() == (annotated.folder / "b.png").read_bytes()
    with Image.open(out / "JPEGImages/rot.jpg") as im:  # EXIF-rotated: written upright, as its mask is
        assert im.size == (48, 64) and not im.getexif().get(0x0112)
    with Image.open(out / "SegmentationClass/a.png") as im:
        assert im.mode == "RGB"  # CVAT's colour masks
    assert (out / "labelmap.txt").read_text().splitlines()[-1] == "ignored:224,224,192::"
    marker = json.loads((out / MARKER).read_text())
    assert marker["format"] == "cvat-mask" and marker["sources"]["sub/a"] == "sub/a.jpg"
    assert sorted(marker["files"]) == [f for f in tree if f != MARKER]


def test_masks_layout(annotated: Project, tmp_path: Path) -> None:
    out = tmp_path / "m"
    export_dataset(annotated, out, "masks", statuses=["reviewed"])
    assert sorted(p.relative_to(out / "images").as_posix() for p in (out / "images").rglob("*")) == [
        "a.jpg", "rot.jpg"]
    assert (out / "classes.txt").read_text() == "background\ncat\ndog food\ntree\n"
    meta = json.loads((out / "dataset_meta.json").read_text())  # Datumaro's class file, void declared
    assert meta["labels"] == ["background", "cat", "dog food", "tree", "ignored"]
    assert meta["segmentation_colors"] == [[0, 0, 0], [250, 10, 10], [10, 250, 10], [1, 2, 3], [224, 224, 192]]
    with Image.open(out / "masks/a.png") as im:
        assert im.mode == "P"


def test_targets_follow_the_voc_rules(annotated: Project, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_dataset(annotated, out, "masks")
    export_dataset(annotated, out, "cvat-mask")  # its own export, of another format: replaced
    assert sorted(os.listdir(out)) == [MARKER, "ImageSets", "JPEGImages", "SegmentationClass", "labelmap.txt"]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(VOCError, match="also holds notes.txt"):
        export_dataset(annotated, out, "masks")
    assert (out / "notes.txt").read_text() == "mine" and (out / "labelmap.txt").is_file()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(VOCError, match="not empty"):
        export_dataset(annotated, foreign, "masks")
    with pytest.raises(VOCError, match="outside the image folder"):
        export_dataset(annotated, annotated.folder / "m", "masks")
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(other / "o.png")
    with Project.open(other) as p:
        p.save_annotation(p.records[0], np.zeros((8, 8), np.uint8), np.ones((8, 8), bool))
        export_dataset(p, tmp_path / "theirs", "masks")
    with pytest.raises(ForeignExportError):
        export_dataset(annotated, tmp_path / "theirs", "masks")
    export_dataset(annotated, tmp_path / "theirs", "masks", replace_other=True)
    assert len(list((tmp_path / "theirs" / "masks").rglob("*.png"))) == 5
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_a_failing_image_is_left_out_and_a_stop_writes_nothing(annotated: Project, tmp_path: Path) -> None:
    src = annotated.folder / "a.jpg"
    src.write_bytes(src.read_bytes()[:300])  # header intact, data cut: fails when decoded
    s = export_dataset(annotated, tmp_path / "out", "cvat-mask")
    assert [p for p, _ in s.failed] == [str(src)] and len(s.keys) == 4
    assert not (tmp_path / "out/JPEGImages/a.jpg").exists() and not (tmp_path / "out/SegmentationClass/a.png").exists()
    seen = []

    def stop_after_two() -> bool:
        return len(seen) >= 2

    with pytest.raises(Cancelled):
        export_dataset(annotated, tmp_path / "stopped", "masks", cancel=stop_after_two,
                       progress=lambda done, total, what: seen.append(what))
    assert not (tmp_path / "stopped").exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    with pytest.raises(Cancelled):  # the VOC export stops the same way
        seen.clear()
        export_dataset(annotated, tmp_path / "stopped", "voc", cancel=stop_after_two,
                       progress=lambda done, total, what: seen.append(what))
    assert not (tmp_path / "stopped").exists()


def test_cvat_masks_need_one_colour_per_class(annotated: Project, tmp_path: Path) -> None:
    annotated.set_labelset(LabelSet(["background", "cat", "dog food", "tree"],
                                    [(0, 0, 0), (9, 9, 9), (9, 9, 9), (1, 2, 3)]))
    with pytest.raises(FormatError, match="'cat' and 'dog food' share the colour"):
        export_dataset(annotated, tmp_path / "c", "cvat-mask")
    assert not (tmp_path / "c").exists()
    export_dataset(annotated, tmp_path / "m", "masks")  # index masks do not need distinct colours


def test_writers_name_items_by_export_stem(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    for name in ("x.jpg", "x.png"):  # one stem, two images
        Image.fromarray(np.full((10, 12, 3), 7, np.uint8)).save(folder / name)
    with Project.open(folder) as p:
        for i, rec in enumerate(p.records):
            p.save_annotation(rec, np.full((10, 12), i, np.uint8), np.ones((10, 12), bool))
        export_dataset(p, tmp_path / "out", "masks")
    assert sorted(os.listdir(tmp_path / "out/masks")) == ["x.png", "x_2.png"]
    assert writer("masks").name == "masks"


@pytest.mark.parametrize("fmt", ["masks", "cvat-mask", "voc"])
def test_a_source_that_fails_after_its_copy_leaves_no_file_in_the_stage(tmp_path: Path, fmt: str) -> None:
    from deeplab_studio.storage.formats.base import ExportItem

    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), np.uint8)).save(good, quality=95)
    cut = tmp_path / "cut.jpg"
    data = good.read_bytes()
    cut.write_bytes(data[:len(data) * 2 // 3])  # header intact: copied, then fails when the copy is decoded
    items = [ExportItem(p.name, p, lambda: np.ones((24, 32), np.uint8), (32, 24)) for p in (good, cut)]
    stage = tmp_path / "stage"
    stage.mkdir()
    failed = writer(fmt).write(stage, items, LabelSet(["background", "thing"]))
    assert [key for key, _ in failed] == ["cut.jpg"]
    images = sorted(p.name for p in stage.rglob("*.jpg"))
    assert images == ["good.jpg"] and not [p for p in stage.rglob("cut*")]
