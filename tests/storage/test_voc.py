"""VOC export / import: layout, torchvision compatibility, lossless round trip, self-check, errors."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.core.labels import IGNORE, VOC_CLASSES, LabelSet, voc_colormap
from deeplab_studio.storage.images import ImageReadError
from deeplab_studio.storage.labelmaps import read_label_png, write_label_png
from deeplab_studio.storage.project import Project, Status
from deeplab_studio.storage.voc import (
    ExportCheckError, VOCError, check_export, export_marker, export_voc, import_voc, object_map)
from deeplab_studio.storage.voc_format import make_ids, split_ids




def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def test_export_layout(annotated: Project, tmp_path: Path) -> None:
    out = tmp_path / "voc"
    s = export_voc(annotated, out, val_fraction=0.4, seed=3)
    assert s.ids == ["a", "alpha", "b", "rot", "sub_a"] and len(s.val) == 2 and s.skipped == {"unlabeled": 1}
    assert s.jpegs_copied == 2 and s.images_converted == 3  # a.jpg, sub/a.jpg copied; png, rgba, rotated converted
    folder = annotated.folder
    assert _sha(out / "JPEGImages" / "a.jpg") == _sha(folder / "a.jpg")
    assert _sha(out / "JPEGImages" / "sub_a.jpg") == _sha(folder / "sub" / "a.jpg")
    for i in ("b", "alpha", "rot"):
        with Image.open(out / "JPEGImages" / f"{i}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB" and not im.getexif().get(0x0112)
    with Image.open(out / "JPEGImages" / "rot.jpg") as im:
        assert im.size == (48, 64)  # the rotation is baked in, as the label map is
    with Image.open(out / "SegmentationClass" / "a.png") as im:
        assert im.mode == "P"
        pal = np.asarray(im.getpalette()[:768], np.uint8).reshape(-1, 3)
    assert tuple(pal[2]) == (10, 250, 10) and tuple(pal[IGNORE]) == (224, 224, 192)
    assert (out / "class_names.txt").read_text() == "background\ncat\ndog food\ntree\n"
    assert (out / "labelmap.txt").read_text().splitlines()[1:] == [
        "background:0,0,0::", "cat:250,10,10::", "dog food:10,250,10::", "tree:1,2,3::"]
    sets = {n: (out / "ImageSets" / "Segmentation" / f"{n}.txt").read_text().split() for n in ("train", "val", "trainval")}
    assert sorted(sets["train"] + sets["val"]) == sets["trainval"] == s.ids
    assert export_marker(out)["sources"]["sub_a"] == "sub/a.jpg"
    report = check_export(out)
    assert report.num_classes == 4 and report.ids == s.ids
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_export_loads_in_torchvision(annotated: Project, tmp_path: Path) -> None:
    tv = pytest.importorskip("torchvision.datasets")
    out = tmp_path / "export"
    export_voc(annotated, out, val_fraction=0.4, seed=1)
    root = tmp_path / "tvroot"
    (root / "VOCdevkit").mkdir(parents=True)
    os.symlink(out, root / "VOCdevkit" / "VOC2012")
    sources = export_marker(out)["sources"]
    seen = set()
    for split in ("train", "val", "trainval"):
        ds = tv.VOCSegmentation(str(root), year="2012", image_set=split, download=False)
        ids = (out / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        assert len(ds) == len(ids) > 0
        for k, voc_id in enumerate(ids):
            img, target = ds[k]
            rec = annotated.record(sources[voc_id])
            expected = annotated.load_annotation(rec)[0]
            np.testing.assert_array_equal(np.array(target), expected)
            assert img.size == (rec.width, rec.height) and img.mode == "RGB"
            seen.add(voc_id)
    assert len(seen) == 5


def test_split_is_seeded_and_statuses_filter(annotated: Project, tmp_path: Path) -> None:
    ids = [f"img_{i}" for i in range(20)]
    a, b = split_ids(ids, 0.25, 7), split_ids(ids, 0.25, 7)
    assert a == b and len(a[1]) == 5 and split_ids(ids, 0.25, 8) != a
    assert split_ids(ids[:2], 0.1, 0)[1] and split_ids(ids, 0.0, 0)[1] == []
    with pytest.raises(ValueError):
        split_ids(ids, 1.0, 0)
    s = export_voc(annotated, tmp_path / "rev", statuses=["reviewed"])
    assert s.ids == ["a", "rot"]
    with pytest.raises(ValueError):
        export_voc(annotated, tmp_path / "x", statuses=["unlabeled"])


def test_ids_unique_and_safe() -> None:
    ids = make_ids(["a.jpg", "a.png", "A.jpg", "sub/a.jpg", "sub_a.jpg", "x y/ü é.JPG", "CON.jpg", "noext"])
    assert list(ids.values()) == ["a", "a_2", "A_3", "sub_a", "sub_a_2", "x_y", "CON_", "noext"]


def test_round_trip_is_bit_identical(annotated: Project, tmp_path: Path) -> None:
    first = tmp_path / "first"
    export_voc(annotated, first)
    imp = import_voc(first, tmp_path / "p2")
    assert imp.imported == 5 and imp.copied == 5 and imp.classes.names == annotated.labels.names
    p2 = Project.open(tmp_path / "p2")
    assert p2.labels.names == annotated.labels.names and p2.labels.colors == annotated.labels.colors
    assert {r.path for r in p2.records} == {"a.jpg", "alpha.jpg", "b.jpg", "rot.jpg", "sub_a.jpg"}
    assert all(r.status == Status.REVIEWED for r in p2.records)
    sources = export_marker(first)["sources"]
    for rec in p2.records:
        labels, mask = p2.load_annotation(rec)
        original = annotated.load_annotation(annotated.record(sources[rec.path[:-4]]))[0]
        np.testing.assert_array_equal(labels, original)
        assert (labels == IGNORE).any() and mask.all()
    second = tmp_path / "second"
    export_voc(p2, second)
    assert _tree(second) == _tree(first)  # every image, mask, split and class file byte-identical
    assert _sha(second / "JPEGImages" / "a.jpg") == _sha(annotated.folder / "a.jpg")
    again = import_voc(second, tmp_path / "p2")  # into the same project: nothing changes
    assert again.identical == 5 and again.copied == 0 and again.unchanged == 5 and again.imported == 0
    import_voc(second, tmp_path / "p3")
    p3 = Project.open(tmp_path / "p3")
    for rec in p3.records:
        np.testing.assert_array_equal(p3.load_annotation(rec)[0], p2.load_annotation(p2.record(rec.path))[0])
        assert _sha(p3.image_path(rec)) == _sha(p2.image_path(p2.record(rec.path)))
    assert p3.labels == p2.labels


def _devkit(tmp_path: Path, data_dir: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A miniature original VOC2012 devkit made from the real samples (JPEG images, mode-P masks)."""
    voc = tmp_path / "dl" / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    gts = {}
    for n, voc_id in (("1", "2007_000001"), ("23", "2007_000023"), ("114", "2008_000114")):
        src = data_dir / "voc_samples"
        Image.open(src / f"{n}_image.png").convert("RGB").save(voc / "JPEGImages" / f"{voc_id}.jpg", quality=90)
        gts[voc_id] = read_label_png(src / f"{n}_target.png")  # colourised GT -> indices
        write_label_png(voc / "SegmentationClass" / f"{voc_id}.png", gts[voc_id], voc_colormap())
    (voc / "ImageSets/Segmentation/train.txt").write_text("2007_000001\n2008_000114\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("2007_000023\n")
    (voc / "ImageSets/Segmentation/trainval.txt").write_text("2007_000001\n2007_000023\n2008_000114\n")
    return voc, gts


def test_import_original_devkit_layout(tmp_path: Path, data_dir: Path) -> None:
    voc, gts = _devkit(tmp_path, data_dir)
    s = import_voc(tmp_path / "dl", tmp_path / "proj", split="train")  # the folder holding VOCdevkit/
    assert s.voc_root == voc and s.imported == 2 and list(s.classes.names) == list(VOC_CLASSES)
    s = import_voc(voc, tmp_path / "proj", split="val")  # the VOC2012 folder itself
    assert s.imported == 1
    proj = Project.open(tmp_path / "proj")
    assert [r.path for r in proj.records] == ["2007_000001.jpg", "2007_000023.jpg", "2008_000114.jpg"]
    for rec in proj.records:
        labels, mask = proj.load_annotation(rec)
        np.testing.assert_array_equal(labels, gts[rec.path[:-4]])
        assert (labels == IGNORE).any() and mask.all() and rec.status == Status.REVIEWED
        assert _sha(proj.image_path(rec)) == _sha(voc / "JPEGImages" / rec.path)


def test_import_colour_masks_and_exif(tmp_path: Path) -> None:
    voc = tmp_path / "voc"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "SegmentationClass").mkdir()
    ls = LabelSet(["bg", "road", "car"], [(0, 0, 0), (200, 100, 0), (0, 0, 255)])
    (voc / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbg:0,0,0::\nroad:200,100,0::\ncar:0,0,255::\n")
    lab = np.zeros((30, 40), np.uint8)
    lab[10:20, 5:15] = 2
    lab[0] = 255
    Image.fromarray(ls.palette()[lab]).save(voc / "SegmentationClass" / "x.png")  # an RGB mask
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(voc / "JPEGImages" / "x.jpg", exif=exif.tobytes())
    import_voc(voc, tmp_path / "p")  # no ImageSets: every mask is imported
    proj = Project.open(tmp_path / "p")
    rec = proj.records[0]
    assert rec.size == (30, 40) and proj.labels.colors == ls.colors
    np.testing.assert_array_equal(proj.load_annotation(rec)[0], np.rot90(lab))  # rotated like the image


def test_import_errors_and_conflicts(tmp_path: Path, data_dir: Path, annotated: Project, monkeypatch) -> None:
    voc, gts = _devkit(tmp_path, data_dir)
    with monkeypatch.context() as m:  # root can write anywhere: inject the read-only answer
        m.setattr("deeplab_studio.storage.voc_import.can_write_dir", lambda p: False)
        with pytest.raises(VOCError, match="not writable"):
            import_voc(voc, tmp_path / "ro")
    with pytest.raises(VOCError, match="not a VOC dataset"):
        import_voc(tmp_path, tmp_path / "p")
    with pytest.raises(VOCError, match="no such folder"):
        import_voc(tmp_path / "nope", tmp_path / "p")
    with pytest.raises(VOCError, match="no such split"):
        import_voc(voc, tmp_path / "p", split="test")
    with pytest.raises(VOCError, match="differ"):
        import_voc(voc, annotated.folder)  # VOC classes vs the project's custom ones
    import_voc(voc, tmp_path / "p")
    proj = Project.open(tmp_path / "p")
    rec = proj.record("2007_000001.jpg")
    edited = gts["2007_000001"].copy()
    edited[100:110, 100:110] = 5
    proj.save_annotation(rec, edited, np.ones_like(edited, bool), status=Status.EDITED)
    s = import_voc(voc, tmp_path / "p")
    assert s.conflicts == ["2007_000001.jpg"] and s.unchanged == 2
    np.testing.assert_array_equal(Project.open(tmp_path / "p").load_annotation(rec)[0], edited)
    assert import_voc(voc, tmp_path / "p", overwrite=True).imported == 1
    bad = np.full((5, 5), 40, np.uint8)
    write_label_png(voc / "SegmentationClass" / "2007_000023.png", bad, voc_colormap())
    with pytest.raises(VOCError, match="2007_000023.png: is 5×5"):
        import_voc(voc, tmp_path / "q", split="val")
    write_label_png(voc / "SegmentationClass" / "2007_000023.png", np.full(gts["2007_000023"].shape, 40, np.uint8),
                    voc_colormap())
    with pytest.raises(VOCError, match="uses class 40"):
        import_voc(voc, tmp_path / "q", split="val")


def test_export_refuses_bad_targets_and_replaces_previous_export(annotated: Project, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(VOCError, match="not empty"):
        export_voc(annotated, foreign)
    assert os.listdir(foreign) == ["keep.txt"]
    with pytest.raises(VOCError, match="outside the image folder"):
        export_voc(annotated, annotated.folder / "voc")
    out = tmp_path / "out"
    export_voc(annotated, out)
    export_voc(annotated, out, statuses=["reviewed"])  # a previous export is replaced whole
    assert sorted(p.stem for p in (out / "JPEGImages").iterdir()) == ["a", "rot"]
    (out / "my_notes.txt").write_text("keep me")
    with pytest.raises(VOCError, match="my_notes.txt"):
        export_voc(annotated, out)  # never deletes files an export did not write
    with pytest.raises(VOCError, match="cannot contain the image folder"):
        export_voc(annotated, annotated.folder.parent)
    (tmp_path / "empty_project").mkdir()
    empty = Project.open(tmp_path / "empty_project")
    with pytest.raises(VOCError, match="no images"):
        export_voc(empty, tmp_path / "e")


def test_self_check_catches_damage(annotated: Project, tmp_path: Path) -> None:
    out = tmp_path / "voc"
    export_voc(annotated, out)
    check_export(out)
    damaged = tmp_path / "d1"
    shutil.copytree(out, damaged)
    jpg = damaged / "JPEGImages" / "a.jpg"
    jpg.write_bytes(jpg.read_bytes()[:200])
    with pytest.raises(ExportCheckError, match="a.jpg"):
        check_export(damaged)
    damaged = tmp_path / "d2"
    shutil.copytree(out, damaged)
    Image.open(out / "SegmentationClass" / "b.png").convert("L").save(damaged / "SegmentationClass" / "b.png")
    with pytest.raises(ExportCheckError, match="mode P"):
        check_export(damaged)
    damaged = tmp_path / "d3"
    shutil.copytree(out, damaged)
    (damaged / "ImageSets" / "Segmentation" / "val.txt").write_text("")
    with pytest.raises(ExportCheckError, match="partition"):
        check_export(damaged)
    lab = read_label_png(out / "SegmentationClass" / "b.png")
    lab[1, 1] = 9
    write_label_png(damaged / "SegmentationClass" / "b.png", lab, annotated.labels.palette())
    (damaged / "ImageSets" / "Segmentation" / "val.txt").write_text((out / "ImageSets/Segmentation/val.txt").read_text())
    with pytest.raises(ExportCheckError, match="class 9"):
        check_export(damaged)


def test_segmentation_objects(annotated: Project, tmp_path: Path) -> None:
    lab = np.zeros((20, 30), np.uint8)
    lab[1:4, 1:4] = 3
    lab[10:14, 10:14] = 3
    lab[4:6, 4:6] = 3  # touches the first blob diagonally: same object (8-connected)
    lab[15:18, 20:25] = 1
    lab[19, :] = 255
    inst, dropped = object_map(lab)
    assert dropped == 0 and sorted(np.unique(inst).tolist()) == [0, 1, 2, 3, 255]
    assert len(np.unique(inst[lab == 3])) == 2 and (inst[lab == 255] == 255).all()
    many = np.zeros((64, 64), np.uint8)
    many[::2, ::4] = 1  # 32*16 = 512 isolated pixels
    inst, dropped = object_map(many)
    assert dropped == 512 - 254 and inst.max() == 255 and len(np.unique(inst)) == 256
    out = tmp_path / "voc"
    export_voc(annotated, out, objects=True)
    with Image.open(out / "SegmentationObject" / "a.png") as im:
        assert im.mode == "P"
    check_export(out)


def test_export_and_import_ignore_pillows_global_bomb_limit(annotated: Project, tmp_path: Path, monkeypatch) -> None:
    """Images up to our 400 MP limit are accepted, so their label maps must export and import too,
    even though Pillow's own global limit (~179 MP; lowered here to stand in for it) is smaller."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # every test image is larger than 2×1000 px
    s = export_voc(annotated, tmp_path / "voc")
    assert len(s.ids) == 5
    check_export(tmp_path / "voc")
    assert import_voc(tmp_path / "voc", tmp_path / "p").imported == 5
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_import_stopped_by_a_bad_file_keeps_what_it_imported(tmp_path: Path, data_dir: Path) -> None:
    voc, gts = _devkit(tmp_path, data_dir)
    (voc / "JPEGImages" / "2007_000023.jpg").write_text("not a jpeg")  # second of three in trainval
    with pytest.raises(ImageReadError, match="2007_000023.jpg"):
        import_voc(voc, tmp_path / "p")
    proj = Project.open(tmp_path / "p")
    rec = proj.record("2007_000001.jpg")
    assert [r.path for r in proj.records] == ["2007_000001.jpg"] and rec.status == Status.REVIEWED
    np.testing.assert_array_equal(proj.load_annotation(rec)[0], gts["2007_000001"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(VOCError, match="not a folder"):
        import_voc(voc, tmp_path / "file")
    with pytest.raises(VOCError, match="cannot create the folder"):
        import_voc(voc, tmp_path / "file" / "sub")


def test_export_of_a_damaged_source_names_it_and_writes_nothing(annotated: Project, tmp_path: Path) -> None:
    src = annotated.folder / "a.jpg"  # header intact, data cut: copied byte for byte, caught by the self-check
    data = src.read_bytes()
    src.write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "voc"
    with pytest.raises(ExportCheckError) as info:
        export_voc(annotated, out)
    msg = str(info.value)
    assert msg.startswith(f"{out}: the export failed its self-check") and "JPEGImages/a.jpg" in msg
    assert f"(source image {src})" in msg and "truncated" in msg and ".partial-" not in msg
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["images"]


def test_import_refuses_a_folder_that_holds_the_dataset(annotated: Project, tmp_path: Path) -> None:
    host = tmp_path / "host"
    export_voc(annotated, host / "voc")
    with pytest.raises(VOCError, match="holds the dataset"):
        import_voc(host / "voc", host)  # its JPEGImages/ and masks would be scanned as project images
    assert sorted(p.name for p in host.iterdir()) == ["voc"]
    assert import_voc(host / "voc", host / "project").imported == 5  # a sibling folder is fine


def test_export_removes_leftovers_of_a_killed_export(annotated: Project, tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()  # a process that has exited
    stale = [tmp_path / f".voc.partial-{dead}-0badc0de", tmp_path / f".voc.old-{dead}-0badc0de"]
    kept = [tmp_path / f".voc.partial-{os.getpid()}-00c0ffee",  # a live writer's (ours)
            tmp_path / f".other.partial-{dead}-0badc0de"]  # another export's
    for d in stale + kept:
        (d / "JPEGImages").mkdir(parents=True)
        (d / "JPEGImages" / "x.jpg").write_bytes(b"half")
    export_voc(annotated, tmp_path / "voc")
    assert not any(d.exists() for d in stale) and all(d.exists() for d in kept)
