"""Importing VOC and mask folders: split choice, class files, subfolder ids, what is skipped and
said, bad input, a second writer, a read-only destination, and nothing left behind on a stop."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.core.labels import IGNORE, LabelSet, voc_colormap
from deeplab_studio.storage.formats import detect, open_dataset
from deeplab_studio.storage.formats.base import Cancelled, FormatError
from deeplab_studio.storage.formats.project_import import import_dataset
from deeplab_studio.storage.labelmaps import write_label_png
from deeplab_studio.storage.project import Project, ProjectError, Status


def _labels(h: int, w: int, seed: int, n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), np.uint8)
    for c in range(1, n):
        y, x = rng.integers(0, h - 6), rng.integers(0, w - 6)
        lab[y:y + 6, x:x + 7] = c
    lab[-1] = IGNORE
    return lab


def _voc(root: Path, ids: list[str], splits: dict[str, list[str]] | None, size=(24, 32)) -> dict[str, np.ndarray]:
    """A VOC folder: JPEG images, palette masks; `splits` None: no ImageSets at all."""
    truth = {}
    for k, voc_id in enumerate(ids):
        (root / "JPEGImages" / voc_id).parent.mkdir(parents=True, exist_ok=True)
        (root / "SegmentationClass" / voc_id).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((*size, 3), 40 * k, np.uint8)).save(root / "JPEGImages" / f"{voc_id}.jpg")
        truth[voc_id] = _labels(*size, k)
        write_label_png(root / "SegmentationClass" / f"{voc_id}.png", truth[voc_id], voc_colormap())
    if splits is not None:
        (root / "ImageSets" / "Segmentation").mkdir(parents=True)
        for name, members in splits.items():
            (root / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("".join(f"{m}\n" for m in members))
    return truth


def test_voc_split_choice_is_said(tmp_path: Path) -> None:
    ids = ["a", "b", "c", "d"]
    _voc(tmp_path / "dm", ids, {"train": ["a", "b", "c"], "val": ["d"]})  # Datumaro: no trainval.txt
    s = open_dataset(tmp_path / "dm")
    assert [(i.key, i.subset) for i in s.items] == [("a", "train"), ("b", "train"), ("c", "train"), ("d", "val")]
    assert s.notes == ["format: voc (Pascal VOC), detected", "classes: none declared, the 21 Pascal VOC classes",
                       "split: train.txt + val.txt"] and not s.classes_declared
    _voc(tmp_path / "tv", ids, {"trainval": ids, "train": ["a", "b"], "val": ["c", "d"], "test": ["zz"]})
    s = open_dataset(tmp_path / "tv")
    assert s.notes[-1] == "split: trainval.txt" and [i.subset for i in s.items] == ["train", "train", "val", "val"]
    assert [i.key for i in open_dataset(tmp_path / "tv", split="val").items] == ["c", "d"]
    with pytest.raises(FormatError, match=r"no such split file \(splits here: test, train, trainval, val\)"):
        open_dataset(tmp_path / "tv", split="nope")
    _voc(tmp_path / "withtest", ids, {"train": ["a"], "val": ["b"], "test": ["c"]})
    assert [i.key for i in open_dataset(tmp_path / "withtest").items] == ["a", "b"]  # test.txt: not by default
    _voc(tmp_path / "bare", ids[:2], None)
    s = open_dataset(tmp_path / "bare")
    assert [i.key for i in s.items] == ["a", "b"] and "every mask in SegmentationClass/ (2)" in s.notes[-1]
    with pytest.raises(FormatError, match="--split is for voc and cvat-mask"):
        open_dataset(tmp_path / "bare", "masks", split="train")


def test_unsafe_ids_are_skipped_and_subfolder_ids_kept(tmp_path: Path) -> None:
    truth = _voc(tmp_path / "voc", ["ok", "dir/deep/ok2"], {"default": ["ok", "../evil", ".hidden", "dir/deep/ok2",
                                                                       "/abs", "missing"]})
    (tmp_path / "evil.jpg").write_bytes((tmp_path / "voc/JPEGImages/ok.jpg").read_bytes())
    source = open_dataset(tmp_path / "voc")
    assert source.format == "cvat-mask"  # default.txt: CVAT's layout
    s = import_dataset(source, tmp_path / "p")
    assert s.imported == 2 and sorted(k for k, _ in s.failed) == ["../evil", ".hidden", "/abs", "missing"]
    reasons = dict(s.failed)
    assert "unsafe image id" in reasons["../evil"] and "image listed in the split is missing" in reasons["missing"]
    with Project.open(tmp_path / "p", read_only=True) as p:
        assert [r.path for r in p.records] == ["dir/deep/ok2.jpg", "ok.jpg"]
        np.testing.assert_array_equal(p.load_annotation(p.record("dir/deep/ok2.jpg"))[0], truth["dir/deep/ok2"])
    assert sorted(os.listdir(tmp_path)) == ["evil.jpg", "p", "voc"]  # nothing written beside the project
    assert sorted(os.listdir(tmp_path / "p")) == [".deeplab_studio", "dir", "ok.jpg"]


def test_class_files_void_entry_and_dataset_meta(tmp_path: Path) -> None:
    voc = tmp_path / "voc"
    truth = _voc(voc, ["x"], {"trainval": ["x"]})
    # labelmap with the void entry in the middle (Datumaro's default VOC map has it last)
    (voc / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbg:0,0,0::\nignored:224,224,192::\n"
                                      "road:1,2,3::\ncar:4,5,6::\n")
    raw = np.where(truth["x"] == IGNORE, 1, np.where(truth["x"] > 0, truth["x"] + 1, 0)).astype(np.uint8)
    write_label_png(voc / "SegmentationClass/x.png", raw, voc_colormap())  # index masks in the file's numbering
    s = open_dataset(voc)
    assert s.class_names == ["bg", "road", "car"] and s.colors == [(0, 0, 0), (1, 2, 3), (4, 5, 6)]
    np.testing.assert_array_equal(s.items[0].read_labels(), truth["x"])
    # colour masks in those colours, the void colour included
    pal = np.array([(0, 0, 0), (1, 2, 3), (4, 5, 6)] + [(0, 0, 0)] * 252 + [(224, 224, 192)], np.uint8)
    Image.fromarray(pal[truth["x"]]).save(voc / "SegmentationClass/x.png")
    np.testing.assert_array_equal(open_dataset(voc).items[0].read_labels(), truth["x"])
    # dataset_meta.json (Datumaro's) wins over labelmap.txt, as in Datumaro
    (voc / "dataset_meta.json").write_text(json.dumps({
        "labels": ["background", "lane", "auto"], "label_map": {"0": "background", "1": "lane", "2": "auto"},
        "segmentation_colors": [[0, 0, 0], [1, 2, 3], [4, 5, 6]]}))
    s = open_dataset(voc)
    assert s.class_names == ["background", "lane", "auto"] and s.notes[1] == "classes: dataset_meta.json"
    np.testing.assert_array_equal(s.items[0].read_labels(), truth["x"])


@pytest.mark.parametrize("line, where", [("cat:1,2::", ":3:"), ("dog:300,0,0::", ":3:"), ("bg:0,0,0::", ":3:")])
def test_malformed_labelmap_names_file_and_line(tmp_path: Path, line: str, where: str) -> None:
    voc = tmp_path / "voc"
    _voc(voc, ["x"], {"trainval": ["x"]})
    (voc / "labelmap.txt").write_text(f"# header\nbg:0,0,0::\n{line}\n")
    with pytest.raises(FormatError, match=f"labelmap.txt{where}"):
        open_dataset(voc)
    assert not (tmp_path / "p").exists()


def test_mask_folder_pairs_by_stem_and_says_what_it_skips(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "images" / "sub").mkdir(parents=True)
    (root / "masks" / "sub").mkdir(parents=True)
    truth = {}
    rng = np.random.default_rng(1)
    for key, ext in (("a", ".tif"), ("b", ".webp"), ("c", ".png"), ("sub/e", ".jpg")):
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(root / "images" / f"{key}{ext}",
                                                                                lossless=True)
        truth[key] = _labels(20, 30, len(truth))
        Image.fromarray(truth[key]).save(root / "masks" / f"{key}.png")  # 8-bit grayscale index PNG
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "images" / "nomask.jpg")
    (root / "images" / "phone.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(root / "masks" / "orphan.png")
    (root / "classes.txt").write_text("background\nleaf\nstem\n")
    assert detect(root) == "masks"
    s = import_dataset(open_dataset(root), tmp_path / "p")
    assert s.imported == 4 and s.classes.names == ["background", "leaf", "stem"]
    reasons = dict(s.failed)
    assert sorted(reasons) == ["images/phone.HEIC", "nomask", "orphan"]
    assert "HEIC images are skipped" in reasons["images/phone.HEIC"] and "cannot decode HEIC" in reasons["images/phone.HEIC"]
    assert "no mask for" in reasons["nomask"] and "no image for this mask" in reasons["orphan"]
    assert not any(".jpg" in why for k, why in s.failed if k in ("a", "b"))  # .tif/.webp matched by stem
    with Project.open(tmp_path / "p", read_only=True) as p:
        assert [r.path for r in p.records] == ["a.tif", "b.webp", "c.png", "sub/e.jpg"]
        for rec in p.records:
            np.testing.assert_array_equal(p.load_annotation(rec)[0], truth[rec.path.rsplit(".", 1)[0]])
            assert (p.image_path(rec)).read_bytes() == (root / "images" / rec.path).read_bytes()
    (root / "classes.txt").unlink()
    s = open_dataset(root)
    assert s.class_names == ["background", "class 1", "class 2"] and not s.classes_declared


def test_masks_in_the_voc_colours_name_the_voc_classes(tmp_path: Path, data_dir: Path) -> None:
    """A mask folder without classes.txt whose palette PNGs draw every value in its VOC colour (the
    ten real VOC masks) is read as the 21 VOC classes; one value in another colour, or a grayscale
    mask, and the classes are numbered as before."""
    s = open_dataset(data_dir / "voc_real")
    assert s.class_names == ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
                             "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
                             "sheep", "sofa", "train", "tvmonitor"]
    assert s.colors == [tuple(int(v) for v in c) for c in voc_colormap(21)] and not s.classes_declared
    assert any("Pascal VOC colours" in n for n in s.notes)
    imported = import_dataset(s, tmp_path / "p")
    assert imported.imported == 10 and imported.classes.names == s.class_names
    root = tmp_path / "m"
    (root / "images").mkdir(parents=True)
    labels = np.zeros((8, 8), np.uint8)
    labels[2:6, 2:6] = 3
    for name, palette in (("a", voc_colormap(256)), ("b", voc_colormap(256))):
        Image.fromarray(np.full((8, 8, 3), 120, np.uint8)).save(root / "images" / f"{name}.png")
        write_label_png(root / "masks" / f"{name}.png", labels, palette)
    assert open_dataset(root).class_names[3] == "bird"
    odd = voc_colormap(256)
    odd[3] = (1, 2, 3)  # value 3 drawn in a colour that is not VOC's
    write_label_png(root / "masks" / "b.png", labels, odd)
    assert open_dataset(root).class_names == ["background", "class 1", "class 2", "class 3"]
    Image.fromarray(labels).save(root / "masks" / "b.png")  # grayscale: no colours at all
    assert open_dataset(root).class_names == ["background", "class 1", "class 2", "class 3"]


def test_class_mapping_file(tmp_path: Path) -> None:
    voc = tmp_path / "voc"
    truth = _voc(voc, ["x"], {"trainval": ["x"]})
    (voc / "labelmap.txt").write_text("bg:0,0,0::\npotted plant:1,1,1::\nBlur:2,2,2::\n")
    mapping = tmp_path / "classes.txt"
    mapping.write_text("# dataset = project\nblur = (void)\nPotted-Plant = plant\nnot there = x\n")
    s = import_dataset(open_dataset(voc), tmp_path / "p", classes_file=mapping)
    assert s.classes.names == ["bg", "plant"] and s.plan.unused == ["not there"]
    assert s.plan.summary() == "classes: 1 same; 1 mapped (potted plant → plant); 1 void (Blur → (void))"
    with Project.open(tmp_path / "p", read_only=True) as p:
        want = np.where(truth["x"] == 2, IGNORE, truth["x"])
        np.testing.assert_array_equal(p.load_annotation(p.records[0])[0], want)
    mapping.write_text("just a name\n")
    with pytest.raises(FormatError, match=r"classes.txt:1: expected 'dataset name = project name'"):
        import_dataset(open_dataset(voc), tmp_path / "q", classes_file=mapping)
    assert not (tmp_path / "q").exists()


def test_a_second_writer_is_refused_before_any_copy(tmp_path: Path) -> None:
    _voc(tmp_path / "voc", ["a", "b"], {"trainval": ["a", "b"]})
    folder = tmp_path / "p"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "mine.png")
    holder = Project.open(folder)  # a window holding the project
    before = sorted(os.listdir(folder))
    with pytest.raises(ProjectError, match="open for writing"):
        import_dataset(open_dataset(tmp_path / "voc"), folder)
    assert sorted(os.listdir(folder)) == before and [r.path for r in holder.records] == ["mine.png"]
    holder.close()
    assert import_dataset(open_dataset(tmp_path / "voc"), folder).imported == 2


def test_a_read_only_destination_is_refused(tmp_path: Path) -> None:
    _voc(tmp_path / "voc", ["a"], {"trainval": ["a"]})
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
    elif Path("/sys/kernel").is_dir():
        ro = Path("/sys/kernel")  # root writes anywhere but on a read-only file system
    else:
        pytest.skip("no read-only folder for root here")
    with pytest.raises(FormatError, match="not writable"):
        import_dataset(open_dataset(tmp_path / "voc"), ro)
    with pytest.raises(FormatError, match="cannot create the folder"):
        import_dataset(open_dataset(tmp_path / "voc"), ro / "new")


def test_a_stopped_import_leaves_nothing_behind(tmp_path: Path) -> None:
    truth = _voc(tmp_path / "voc", ["a", "b", "c", "d"], {"trainval": ["a", "b", "c", "d"]})
    (tmp_path / "voc" / "labelmap.txt").write_text("background:0,0,0::\nx:1,1,1::\nnew one:2,2,2::\n")
    calls = []

    def stop_at_third() -> bool:
        calls.append(1)
        return len(calls) >= 3

    with pytest.raises(Cancelled):  # into a new folder: the folder goes too
        import_dataset(open_dataset(tmp_path / "voc"), tmp_path / "new", cancel=stop_at_third)
    assert not (tmp_path / "new").exists()

    folder = tmp_path / "existing"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(folder / "sub" / "mine.png")
    Image.fromarray(np.full((24, 32, 3), 99, np.uint8)).save(folder / "b.jpg")  # taken: b goes to b-2.jpg
    with Project.open(folder) as p:
        p.set_labelset(LabelSet(["background", "x"]))
        p.save_annotation(p.record("sub/mine.png"), truth["a"].clip(0, 1), np.ones((24, 32), bool),
                          status=Status.EDITED)
    before = sorted(str(q.relative_to(folder)) for q in folder.rglob("*") if ".deeplab_studio" not in q.parts)
    calls.clear()
    with pytest.raises(Cancelled):
        import_dataset(open_dataset(tmp_path / "voc"), folder, cancel=stop_at_third)
    after = sorted(str(q.relative_to(folder)) for q in folder.rglob("*") if ".deeplab_studio" not in q.parts)
    assert after == before
    with Project.open(folder, read_only=True) as p:
        assert [r.path for r in p.records] == ["b.jpg", "sub/mine.png"] and p.labels.names == ["background", "x"]
        np.testing.assert_array_equal(p.load_annotation(p.record("sub/mine.png"))[0], truth["a"].clip(0, 1))
    s = import_dataset(open_dataset(tmp_path / "voc"), folder)  # the same run, not stopped
    assert s.imported == 4 and s.renamed == ["b"] and s.classes.names == ["background", "x", "new one"], s.failed
