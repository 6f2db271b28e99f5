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
from deeplab_studio.storage.labelmaps import read_label_png, write_label_png
from deeplab_studio.storage.project import Project, Status
from deeplab_studio.storage import voc as voc_export
from deeplab_studio.storage import voc_check
from deeplab_studio.storage.voc import (
    ExportCheckError, ForeignExportError, VOCError, check_export, export_marker, export_voc, import_voc, object_map,
    other_project_export)
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
        "background:0,0,0::", "cat:250,10,10::", "dog food:10,250,10::", "tree:1,2,3::",
        "ignored:224,224,192::"]  # the void colour declared (Datumaro and CVAT refuse undeclared colours)
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
    p2.close()  # one writer at a time: the import opens the project itself
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
        m.setattr("deeplab_studio.storage.formats.project_import.can_write_dir", lambda p: False)
        with pytest.raises(VOCError, match="not writable"):
            import_voc(voc, tmp_path / "ro")
    with pytest.raises(VOCError, match="not a VOC dataset"):
        import_voc(tmp_path, tmp_path / "p")
    with pytest.raises(VOCError, match="no such folder"):
        import_voc(tmp_path / "nope", tmp_path / "p")
    with pytest.raises(VOCError, match="no such split"):
        import_voc(voc, tmp_path / "p", split="test")
    annotated.close()
    classes_before = list(annotated.labels.names)
    s = import_voc(voc, annotated.folder)  # VOC classes into a project of other classes: matched by name
    assert s.imported == 3 and s.classes.names[:4] == classes_before and len(s.classes) == 4 + 19
    assert [(m.source, m.how) for m in s.plan.matches[:2]] == [("background", "same"), ("aeroplane", "added")]
    assert [m.how for m in s.plan.matches if m.source == "cat"] == ["same"]
    import_voc(voc, tmp_path / "p")
    proj = Project.open(tmp_path / "p")
    rec = proj.record("2007_000001.jpg")
    edited = gts["2007_000001"].copy()
    edited[100:110, 100:110] = 5
    proj.save_annotation(rec, edited, np.ones_like(edited, bool), status=Status.EDITED)
    proj.close()
    s = import_voc(voc, tmp_path / "p")
    assert s.conflicts == ["2007_000001.jpg"] and s.unchanged == 2
    np.testing.assert_array_equal(Project.open(tmp_path / "p").load_annotation(rec)[0], edited)
    assert import_voc(voc, tmp_path / "p", overwrite=True).imported == 1
    bad = np.full((5, 5), 40, np.uint8)
    write_label_png(voc / "SegmentationClass" / "2007_000023.png", bad, voc_colormap())
    s = import_voc(voc, tmp_path / "q", split="val")  # a bad file is reported, not raised
    assert s.imported == 0 and s.failed[0][0] == "2007_000023" and "2007_000023.png: is 5×5" in s.failed[0][1]
    write_label_png(voc / "SegmentationClass" / "2007_000023.png", np.full(gts["2007_000023"].shape, 40, np.uint8),
                    voc_colormap())
    s = import_voc(voc, tmp_path / "q", split="val")
    assert len(s.failed) == 1 and "uses class 40" in s.failed[0][1]


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


def test_import_goes_on_after_a_bad_file(tmp_path: Path, data_dir: Path, monkeypatch) -> None:
    voc, gts = _devkit(tmp_path, data_dir)
    (voc / "JPEGImages" / "2007_000023.jpg").write_text("not a jpeg")  # second of three in trainval
    s = import_voc(voc, tmp_path / "p")
    assert s.imported == 2 and [i for i, _ in s.failed] == ["2007_000023"] and "2007_000023.jpg" in s.failed[0][1]
    proj = Project.open(tmp_path / "p")
    assert [r.path for r in proj.records] == ["2007_000001.jpg", "2008_000114.jpg"]
    for rec in proj.records:
        assert rec.status == Status.REVIEWED
        np.testing.assert_array_equal(proj.load_annotation(rec)[0], gts[rec.path[:-4]])
    proj.close()
    from deeplab_studio.storage.formats import mask_files

    real = mask_files.read_label_png

    def out_of_memory_for_one(path, *a, **k):
        if Path(path).stem == "2007_000001":
            raise MemoryError()
        return real(path, *a, **k)

    monkeypatch.setattr(mask_files, "read_label_png", out_of_memory_for_one)
    s = import_voc(voc, tmp_path / "q")
    assert s.imported == 1 and sorted(i for i, _ in s.failed) == ["2007_000001", "2007_000023"]
    assert any("not enough memory" in why and "2007_000001" in why for _, why in s.failed)
    (tmp_path / "file").write_text("x")
    with pytest.raises(VOCError, match="not a folder"):
        import_voc(voc, tmp_path / "file")
    with pytest.raises(VOCError, match="cannot create the folder"):
        import_voc(voc, tmp_path / "file" / "sub")


def test_export_goes_on_after_a_failing_image(annotated: Project, tmp_path: Path, monkeypatch) -> None:
    src = annotated.folder / "a.jpg"  # header intact, data cut: copied byte for byte, fails to decode
    data = src.read_bytes()
    src.write_bytes(data[: len(data) * 2 // 3])
    real = Project.load_labels

    def out_of_memory_for_one(self, rec):
        if rec.path == "b.png":
            raise MemoryError()
        return real(self, rec)

    monkeypatch.setattr(Project, "load_labels", out_of_memory_for_one)
    out = tmp_path / "voc"
    s = export_voc(annotated, out)
    assert s.ids == ["alpha", "rot", "sub_a"] and sorted(s.train + s.val) == s.ids
    assert [p for p, _ in s.failed] == ["a.jpg", "b.png"]
    assert s.failed[0][1].startswith(f"{src}: ") and "truncated" in s.failed[0][1]
    assert s.failed[1][1] == f"{annotated.folder / 'b.png'}: not enough memory to process it"
    assert sorted(p.stem for p in (out / "JPEGImages").iterdir()) == s.ids
    assert sorted(export_marker(out)["sources"]) == s.ids
    assert check_export(out).ids == s.ids
    monkeypatch.setattr(Project, "load_labels", lambda self, rec: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(VOCError, match="none of the 5 images could be exported"):
        export_voc(annotated, tmp_path / "none")
    assert not (tmp_path / "none").exists() and sorted(export_marker(out)["sources"]) == s.ids


def test_export_stops_when_it_cannot_write(annotated: Project, tmp_path: Path, monkeypatch) -> None:
    """A full disk is a failure of the whole run, not of one image: it stops at once."""
    import errno

    real, calls = Path.write_bytes, []

    def disk_full(self, data):
        calls.append(self.name)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(VOCError) as info:
        export_voc(annotated, tmp_path / "voc")
    monkeypatch.setattr(Path, "write_bytes", real)
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'voc'}: cannot write the export (JPEGImages/a.jpg: cannot write (No space")
    assert msg.endswith("nothing was written") and len(calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


def test_export_failing_its_self_check_writes_nothing(annotated: Project, tmp_path: Path, monkeypatch) -> None:
    real = voc_export.encode_label_png

    def wrong_pixels(labels, palette, **k):  # a writer bug: the stored class map differs
        return real(np.where(labels == 1, 2, labels).astype(np.uint8), palette, **k)

    monkeypatch.setattr(voc_export, "encode_label_png", wrong_pixels)
    with pytest.raises(ExportCheckError) as info:
        export_voc(annotated, tmp_path / "dest", layout="devkit")
    msg = str(info.value)
    out = tmp_path / "dest" / "VOCdevkit" / "VOC2012"
    assert msg.startswith(f"{out}: the export failed its self-check") and "label pixels differ" in msg
    assert "(source image " in msg and ".partial-" not in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]  # not even an empty dest/VOCdevkit


def _other_project(tmp_path: Path, name: str = "other") -> Project:
    """A second project (one edited image) beside `annotated`."""
    folder = tmp_path / name
    folder.mkdir()
    Image.fromarray(np.full((20, 30, 3), 99, np.uint8)).save(folder / "only.png")
    proj = Project.open(folder)
    rec = proj.record("only.png")
    proj.save_annotation(rec, np.ones((20, 30), np.uint8), np.ones((20, 30), bool), status=Status.EDITED)
    return proj


@pytest.mark.parametrize("layout", ["flat", "devkit"])
def test_export_refuses_another_projects_export(annotated: Project, tmp_path: Path, layout: str) -> None:
    dest = tmp_path / "shared"
    root = dest / "VOCdevkit" / "VOC2012" if layout == "devkit" else dest
    s = export_voc(annotated, dest, layout=layout)
    assert s.out_dir == root and s.destination == dest and len(s.ids) == 5
    marker = export_marker(root)
    assert marker["project"] == {"folder": str(annotated.folder), "data_dir": str(annotated.data_dir)}
    other = _other_project(tmp_path)
    assert other_project_export(other, root) == str(annotated.folder)
    assert other_project_export(annotated, root) is None and other_project_export(other, tmp_path / "new") is None
    before = _tree(root)
    with pytest.raises(ForeignExportError, match="holds the export of another project") as info:
        export_voc(other, dest, layout=layout)
    assert info.value.other == str(annotated.folder) and str(annotated.folder) in str(info.value)
    assert _tree(root) == before  # the 5 images are still there
    s = export_voc(other, dest, layout=layout, replace_other=True)  # asked for explicitly
    assert s.ids == ["only"] and export_marker(root)["project"]["folder"] == str(other.folder)
    with pytest.raises(ForeignExportError):
        export_voc(annotated, dest, layout=layout)  # now it is the other project's
    export_voc(other, dest, layout=layout, statuses=["edited"])  # its own export: replaced without a question


def test_export_replaces_only_what_an_export_wrote(annotated: Project, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    root = dest / "VOCdevkit" / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)  # the original VOC devkit of the user
    (root / "JPEGImages" / "2007_000001.jpg").write_bytes(b"theirs")
    with pytest.raises(VOCError, match="not empty and not a previous DeepLab Studio export"):
        export_voc(annotated, dest, layout="devkit")
    assert (root / "JPEGImages" / "2007_000001.jpg").read_bytes() == b"theirs"
    shutil.rmtree(dest / "VOCdevkit")
    (dest / "notes.txt").write_text("mine")  # a non-empty destination: only VOCdevkit/VOC2012 is written
    export_voc(annotated, dest, layout="devkit")
    assert sorted(p.name for p in dest.iterdir()) == ["VOCdevkit", "notes.txt"]
    extra = root / "JPEGImages" / "my_extra.jpg"
    extra.write_bytes(b"added by hand")  # inside our own export: never deleted by the next export
    with pytest.raises(VOCError, match="JPEGImages/my_extra.jpg"):
        export_voc(annotated, dest, layout="devkit")
    assert extra.read_bytes() == b"added by hand"
    extra.unlink()
    (root / "ImageSets" / "Main").mkdir()
    (root / "ImageSets" / "Main" / "train.txt").write_text("mine")
    with pytest.raises(VOCError, match="ImageSets/Main/train.txt"):
        export_voc(annotated, dest, layout="devkit")
    shutil.rmtree(root / "ImageSets" / "Main")
    (root / ".DS_Store").write_bytes(b"finder")  # file-browser litter does not block
    export_voc(annotated, dest, layout="devkit", statuses=["reviewed"])
    assert sorted(p.stem for p in (root / "JPEGImages").iterdir()) == ["a", "rot"]
    flat = tmp_path / "flat"
    export_voc(annotated, flat)
    with pytest.raises(VOCError, match="flat-layout export"):
        export_voc(annotated, flat, layout="devkit")  # would end holding both layouts
    assert not (flat / "VOCdevkit").exists()
    with pytest.raises(VOCError, match="holds VOCdevkit/"):
        export_voc(annotated, dest)  # flat into a devkit destination


def _non_utf8(folder: Path, name: bytes) -> Path:
    """`folder/name` for a file name that is not UTF-8 (skips where the file system refuses it)."""
    path = Path(os.fsdecode(os.path.join(os.fsencode(folder), name)))
    probe = Path(os.fsdecode(os.path.join(os.fsencode(folder), b".probe-" + name)))
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except (OSError, UnicodeError):
        pytest.skip("this file system does not store names that are not UTF-8")
    return path


def test_non_utf8_file_names_export_and_import(annotated: Project, tmp_path: Path) -> None:
    cafe = _non_utf8(annotated.folder, b"caf\xe9.png")
    Image.fromarray(np.full((30, 40, 3), 7, np.uint8)).save(cafe, format="PNG")
    Image.fromarray(np.full((30, 40, 3), 8, np.uint8)).save(annotated.folder / "caf.png")
    annotated.close()
    proj = Project.open(annotated.folder)
    lab = np.zeros((30, 40), np.uint8)
    lab[5:10, 5:10] = 2
    for name in ("caf\udce9.png", "caf.png"):
        proj.save_annotation(proj.record(name), lab, lab > 0, status=Status.REVIEWED)
    out = tmp_path / "voc"
    s = export_voc(proj, out)
    ids = make_ids(["caf.png", "caf\udce9.png"])
    assert ids["caf.png"] == "caf" and ids["caf\udce9.png"].startswith("caf_") and len(ids["caf\udce9.png"]) == 10
    assert ids["caf\udce9.png"] in s.ids and "caf" in s.ids and not s.failed
    for split in ("train", "val", "trainval"):
        (out / "ImageSets" / "Segmentation" / f"{split}.txt").read_bytes().decode("utf-8")  # valid UTF-8
    assert export_marker(out)["sources"][ids["caf\udce9.png"]] == "caf\udce9.png"
    proj.close()
    back = import_voc(out, tmp_path / "p2")
    assert back.imported == 7 and not back.failed
    # a VOC folder whose own file names (and split file) are not UTF-8
    voc = tmp_path / "latin1"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    Image.fromarray(np.full((30, 40, 3), 50, np.uint8)).save(_non_utf8(voc / "JPEGImages", b"caf\xe9.jpg"), "JPEG")
    write_label_png(_non_utf8(voc / "SegmentationClass", b"caf\xe9.png"), lab, voc_colormap())
    (voc / "ImageSets/Segmentation/trainval.txt").write_bytes(b"caf\xe9\n")
    s = import_voc(voc, tmp_path / "p3")
    assert s.imported == 1 and not s.failed
    p3 = Project.open(tmp_path / "p3")
    assert [r.path for r in p3.records] == ["caf\udce9.jpg"]
    np.testing.assert_array_equal(p3.load_annotation(p3.records[0])[0], lab)
    assert (tmp_path / "p3" / "caf\udce9.jpg").read_bytes() == _non_utf8(voc / "JPEGImages", b"caf\xe9.jpg").read_bytes()


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


def _flip_a_byte_while_writing(name: str, monkeypatch):
    """The export's writes, with one byte of file `name` flipped on its way into the stage; returns
    the real write function."""
    real = voc_export._write

    def flip_a_byte(path: Path, data):
        if path.name == name:
            data = bytearray(data)
            data[len(data) // 2] ^= 0x40
            data = bytes(data)
        real(path, data)

    monkeypatch.setattr(voc_export, "_write", flip_a_byte)
    return real


def test_a_copied_jpeg_damaged_in_the_stage_fails_the_check(annotated: Project, tmp_path: Path, monkeypatch) -> None:
    """Copies are checked by their hash, not decoded: a copy whose bytes differ from the source's
    (injected here: one byte flipped while writing a.jpg into the stage) fails the self-check."""
    real = _flip_a_byte_while_writing("a.jpg", monkeypatch)
    with pytest.raises(ExportCheckError) as info:
        export_voc(annotated, tmp_path / "voc")
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'voc'}: the export failed its self-check and was not written: ")
    assert f"JPEGImages{os.sep}a.jpg: differs from the source bytes it was copied from" in msg
    assert msg.endswith(f"(source image {annotated.folder / 'a.jpg'})") and ".partial-" not in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]
    monkeypatch.setattr(voc_export, "_write", real)
    s = export_voc(annotated, tmp_path / "voc")
    assert s.jpegs_copied == 2 and _sha(tmp_path / "voc" / "JPEGImages" / "a.jpg") == _sha(annotated.folder / "a.jpg")


def test_a_converted_jpeg_damaged_in_the_stage_fails_the_check(annotated: Project, tmp_path: Path,
                                                                monkeypatch) -> None:
    """A converted image's JPEG is checked against the bytes the encoder gave (no second decode):
    a byte flipped while writing b.jpg fails the self-check, and nothing is written."""
    _flip_a_byte_while_writing("b.jpg", monkeypatch)
    with pytest.raises(ExportCheckError) as info:
        export_voc(annotated, tmp_path / "voc")
    assert f"JPEGImages{os.sep}b.jpg: differs from the JPEG the export encoded" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


def test_jpeg_structure_walk(tmp_path: Path) -> None:
    """`_jpeg_complete` accepts whole JPEGs (baseline, progressive, grayscale, EXIF, real VOC
    photographs, bytes after EOI) and refuses every truncation of them."""
    rng = np.random.default_rng(1)
    samples = [p.read_bytes() for p in sorted((Path(__file__).parents[1] / "data" / "voc_real" / "images").glob("*.jpg"))]
    exif = Image.Exif()
    exif[0x0112] = 1
    for arr, kw in ((rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), {}),
                    (rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), {"progressive": True}),
                    (rng.integers(0, 256, (33, 17), dtype=np.uint8), {"optimize": True}),
                    (rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), {"exif": exif.tobytes()})):
        Image.fromarray(arr).save(tmp_path / "x.jpg", **kw)
        samples.append((tmp_path / "x.jpg").read_bytes())
    for data in samples:
        assert voc_export._jpeg_complete(data) and voc_export._jpeg_complete(data + b"\0trailer")
        step = max(1, len(data) // 300)
        assert not any(voc_export._jpeg_complete(data[:n]) for n in [*range(0, len(data) - 1, step), len(data) - 1])
    assert not voc_export._jpeg_complete(b"\x89PNG\r\n\x1a\n") and not voc_export._jpeg_complete(b"")


def test_export_copies_a_jpeg_that_fails_the_walk_but_decodes(annotated: Project, tmp_path: Path, monkeypatch) -> None:
    """A JPEG whose structure the walk does not accept is decoded: readable ones are still copied."""
    monkeypatch.setattr(voc_export, "_jpeg_complete", lambda data: False)
    s = export_voc(annotated, tmp_path / "voc")
    assert s.jpegs_copied == 2 and not s.failed
    assert _sha(tmp_path / "voc" / "JPEGImages" / "sub_a.jpg") == _sha(annotated.folder / "sub" / "a.jpg")


def test_fast_label_png_reader_agrees_with_pillow(tmp_path: Path) -> None:
    """The self-check reads the label maps it wrote without Pillow; anything else (another writer,
    a damaged chunk or stream) is left to Pillow (None)."""
    from deeplab_studio.storage.labelmaps import PngPalette, encode_label_png

    rng = np.random.default_rng(2)
    for shape in ((1, 1), (7, 300), (375, 500)):
        lab = rng.integers(0, 256, shape, dtype=np.uint8)
        lab[: shape[0] // 2] = 0
        data = encode_label_png(lab, PngPalette(voc_colormap(21)))
        rows = voc_check._unfiltered_palette_rows(data)
        assert rows is not None and rows.shape == shape and (rows == lab).all()
        for k in (20, 40, len(data) // 2, len(data) - 5):  # PLTE, inside IDAT, IEND's CRC
            bad = bytearray(data)
            bad[k] ^= 1
            assert voc_check._unfiltered_palette_rows(bytes(bad)) is None
        assert voc_check._unfiltered_palette_rows(data[:-12]) is None  # no IEND
    Image.fromarray(lab).save(tmp_path / "l.png")  # mode L: not a label map as exported
    Image.fromarray(lab % 16, "P").save(tmp_path / "p.png", bits=4)  # 4-bit palette PNG: Pillow reads it
    assert voc_check._unfiltered_palette_rows((tmp_path / "l.png").read_bytes()) is None
    assert voc_check._unfiltered_palette_rows((tmp_path / "p.png").read_bytes()) is None
    fallback = voc_check._read_p_png(tmp_path / "p.png", lambda path, why: pytest.fail(why))
    with Image.open(tmp_path / "p.png") as im:
        assert im.mode == "P" and (fallback == np.array(im)).all()
