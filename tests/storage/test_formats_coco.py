"""COCO: instances (polygons, uncompressed and compressed RLE, crowds, overlaps) and panoptic read
as semantic maps; the writer's files read back exactly by pycocotools (`COCO.annToMask`), by a
plain decoding of the panoptic PNGs and by our reader; layouts (COCO 2017, Roboflow), the EXIF
frame and bad input."""

from __future__ import annotations

import functools
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from deeplab_studio.core.labels import IGNORE, LabelSet
from deeplab_studio.storage import formats
from deeplab_studio.storage.formats.base import ExportItem, FormatError
from deeplab_studio.storage.formats.coco import READER, WRITER
from deeplab_studio.storage.formats.coco_masks import encode_uncompressed, string_counts
from deeplab_studio.storage.formats.coco_panoptic import ids_of, rgb_of
from deeplab_studio.storage.images import apply_orientation, read_image

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")  # its numpy-2 copy warning

DATA = Path(__file__).parents[1] / "data"
W, H = 40, 30


def _image(path: Path, size=(W, H), exif_orientation: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {}
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        extra["exif"] = exif.tobytes()
    Image.new("RGB", size, (70, 80, 90)).save(path, **extra)


def _write(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


CATS = [{"id": 3, "name": "cat", "supercategory": "animal"}, {"id": 7, "name": "dog", "supercategory": "animal"},
        {"id": 12, "name": "person", "supercategory": "person"}, {"id": 20, "name": "kite", "supercategory": "x"}]


def _hand_rle() -> tuple[dict, np.ndarray]:
    """Columns 30..34 of rows 0..4 as an uncompressed RLE (column-major runs, zeros first)."""
    mask = np.zeros((H, W), bool)
    mask[0:5, 30:35] = True
    return {"size": [H, W], "counts": [900, 5, 25, 5, 25, 5, 25, 5, 25, 5, 175]}, mask


# ---------------------------------------------------------------------------------------------
# reading


def test_instances_polygons_rles_crowds_and_overlaps(tmp_path: Path):
    _image(tmp_path / "images" / "a.png")
    unc, unc_mask = _hand_rle()
    comp_mask = np.zeros((H, W), np.uint8)
    comp_mask[20:28, 2:9] = 1
    comp = mask_utils.encode(np.asfortranarray(comp_mask))
    anns = [
        {"id": 1, "image_id": 5, "category_id": 3, "segmentation": _rect(10, 10, 14, 14), "iscrowd": 0},  # small, first
        {"id": 2, "image_id": 5, "category_id": 7, "segmentation": _rect(5, 5, 25, 20), "iscrowd": 0},  # big, later
        {"id": 3, "image_id": 5, "category_id": 12, "segmentation": unc, "iscrowd": 1},
        {"id": 4, "image_id": 5, "category_id": 20,
         "segmentation": {"size": [H, W], "counts": comp["counts"].decode()}, "iscrowd": 1},
    ]
    path = _write(tmp_path / "annotations" / "instances_default.json", {
        "images": [{"id": 5, "file_name": "a.png", "width": W, "height": H}], "annotations": anns, "categories": CATS})
    ds = READER.read(tmp_path)
    assert ds.class_names == ["background", "cat", "dog", "person", "kite"] and not ds.problems
    (item,) = ds.items
    assert item.key == "a" and item.subset == "default"
    coco = COCO(str(path))
    expected = np.zeros((H, W), np.uint8)
    expected[coco.annToMask(anns[1]) > 0] = 2  # the larger polygon first, whatever the file order
    expected[coco.annToMask(anns[0]) > 0] = 1
    expected[unc_mask] = 3
    expected[comp_mask > 0] = 4
    labels = item.read_labels()
    np.testing.assert_array_equal(labels, expected)
    assert labels[12, 12] == 1 and labels[6, 20] == 2 and labels[29, 39] == 0


def test_panoptic_segments_things_and_stuff_void_unlabelled(tmp_path: Path):
    _image(tmp_path / "val2017" / "p.jpg", (W, H))
    ids = np.zeros((H, W), np.uint32)
    ids[:10] = 70000  # sky (stuff); uses the blue channel
    ids[15:25, 5:15] = 300  # a person (thing); uses the green channel
    ids[15:25, 20:30] = 1  # another person
    ids[10:27] = np.where(ids[10:27] == 0, 4242, ids[10:27])  # road
    ids[27:, :] = 0  # unlabelled
    png_dir = tmp_path / "annotations" / "panoptic_val2017"
    png_dir.mkdir(parents=True)
    Image.fromarray(rgb_of(ids), "RGB").save(png_dir / "p.png")
    cats = [{"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]},
            {"id": 119, "name": "sky-other-merged", "isthing": 0, "color": [70, 130, 180]},
            {"id": 149, "name": "road", "isthing": 0, "color": [128, 64, 128]}]
    segs = [{"id": 70000, "category_id": 119}, {"id": 300, "category_id": 1, "iscrowd": 0},
            {"id": 1, "category_id": 1}, {"id": 4242, "category_id": 149}]
    _write(tmp_path / "annotations" / "panoptic_val2017.json", {
        "images": [{"id": 9, "file_name": "p.jpg", "width": W, "height": H}],
        "annotations": [{"image_id": 9, "file_name": "p.png", "segments_info": segs}], "categories": cats})
    ds = READER.read(tmp_path)
    assert not ds.problems and ds.class_names == ["background", "person", "sky-other-merged", "road"]
    assert ds.colors == [(0, 0, 0), (220, 20, 60), (70, 130, 180), (128, 64, 128)]
    (item,) = ds.items
    assert item.key == "p" and item.subset == "val2017"
    expected = np.full((H, W), 3, np.uint8)
    expected[:10] = 2
    expected[15:25, 5:15] = 1
    expected[15:25, 20:30] = 1
    expected[27:] = IGNORE
    np.testing.assert_array_equal(item.read_labels(), expected)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(item.read_labels))(), expected)


def test_coco2017_layout_two_splits_and_panoptic_preferred(tmp_path: Path):
    for split in ("train2017", "val2017"):
        _image(tmp_path / "images" / split / "000000000139.jpg")
        _write(tmp_path / "annotations" / f"instances_{split}.json", {
            "images": [{"id": 139, "file_name": "000000000139.jpg", "width": W, "height": H}],
            "annotations": [{"id": 1, "image_id": 139, "category_id": 3, "segmentation": _rect(1, 1, 9, 9)}],
            "categories": CATS})
    _write(tmp_path / "annotations" / "captions_val2017.json", {"images": [], "annotations": []})
    ds = READER.read(tmp_path)
    assert [(it.key, it.subset) for it in ds.items] == [("train2017/000000000139", "train2017"),
                                                       ("val2017/000000000139", "val2017")]
    assert all(it.read_labels()[5, 5] == 1 for it in ds.items)
    png_dir = tmp_path / "annotations" / "panoptic_val2017"
    png_dir.mkdir()
    Image.fromarray(rgb_of(np.full((H, W), 5)), "RGB").save(png_dir / "000000000139.png")
    _write(tmp_path / "annotations" / "panoptic_val2017.json", {
        "images": [{"id": 139, "file_name": "000000000139.jpg", "width": W, "height": H}],
        "annotations": [{"image_id": 139, "file_name": "000000000139.png",
                         "segments_info": [{"id": 5, "category_id": 7}]}],
        "categories": [{"id": 7, "name": "dog", "isthing": 1}]})
    ds = READER.read(tmp_path)
    assert any("panoptic_val2017.json read" in n for n in ds.notes)
    val = next(it for it in ds.items if it.subset == "val2017")
    assert np.all(val.read_labels() == ds.class_names.index("dog"))


def test_roboflow_layout_drops_its_dataset_category(tmp_path: Path):
    _image(tmp_path / "train" / "cell_jpg.rf.abc.jpg")
    _write(tmp_path / "train" / "_annotations.coco.json", {
        "categories": [{"id": 0, "name": "cells", "supercategory": "none"},
                       {"id": 1, "name": "RBC", "supercategory": "cells"}, {"id": 2, "name": "WBC", "supercategory": "cells"}],
        "images": [{"id": 0, "file_name": "cell_jpg.rf.abc.jpg", "width": W, "height": H}],
        "annotations": [{"id": 0, "image_id": 0, "category_id": 2, "segmentation": _rect(2, 2, 8, 8), "iscrowd": 0}]})
    assert formats.detect(tmp_path) == "coco"
    ds = READER.read(tmp_path)
    assert ds.class_names == ["background", "RBC", "WBC"] and any("'cells'" in n for n in ds.notes)
    assert ds.items[0].key == "cell_jpg.rf.abc" and ds.items[0].subset == "train"
    assert ds.items[0].read_labels()[5, 5] == 2


def test_exif_rotated_photo_is_drawn_in_the_frame_its_size_names(tmp_path: Path):
    """Stored 40×30, tagged "rotate 90° clockwise": shown 30 wide, 40 high. An entry declaring
    30×40 is in the shown frame; one declaring 40×30 (a tool that ignored EXIF) is turned."""
    _image(tmp_path / "rot.jpg", (W, H), exif_orientation=6)
    images = [{"id": 1, "file_name": "rot.jpg", "width": H, "height": W}]
    anns = [{"id": 1, "image_id": 1, "category_id": 3, "segmentation": _rect(2, 3, 12, 20)}]
    shown = _write(tmp_path / "shown.json", {"images": images, "annotations": anns, "categories": CATS})
    images = [{"id": 1, "file_name": "rot.jpg", "width": W, "height": H}]
    stored = _write(tmp_path / "stored.json", {"images": images, "annotations": anns, "categories": CATS})
    a = READER.read(shown).items[0].read_labels()
    b = READER.read(stored).items[0].read_labels()
    assert a.shape == b.shape == read_image(tmp_path / "rot.jpg").shape[:2] == (W, H)
    ref_shown = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(anns[0]["segmentation"], W, H)))
    ref_stored = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(anns[0]["segmentation"], H, W)))
    np.testing.assert_array_equal(a == 1, ref_shown > 0)
    np.testing.assert_array_equal(b == 1, apply_orientation(ref_stored, 6) > 0)


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_annotations_name_file_and_annotation_and_the_rest_is_read(tmp_path: Path):
    for name in ("ok", "cat", "poly", "size", "runs", "none", "junk"):
        _image(tmp_path / "images" / f"{name}.png")
    images = [{"id": i, "file_name": f"{n}.png", "width": W, "height": H}
              for i, n in enumerate(("ok", "cat", "poly", "size", "runs", "none", "junk", "lost"))]
    unc, _ = _hand_rle()
    anns = [
        {"id": 10, "image_id": 0, "category_id": 3, "segmentation": _rect(1, 1, 5, 5)},
        {"id": 11, "image_id": 1, "category_id": 99, "segmentation": _rect(1, 1, 5, 5)},
        {"id": 12, "image_id": 2, "category_id": 3, "segmentation": [[1, 1, 5, 5]]},
        {"id": 13, "image_id": 3, "category_id": 3, "segmentation": {"size": [H + 1, W], "counts": unc["counts"]}},
        {"id": 14, "image_id": 4, "category_id": 3, "segmentation": {"size": [H, W], "counts": [900, 5]}},
        {"id": 15, "image_id": 5, "category_id": 3, "bbox": [1, 1, 4, 4]},
        {"id": 16, "image_id": 6, "category_id": 3, "segmentation": {"size": [H, W], "counts": "\x7f\x7f"}},
        {"id": 17, "image_id": 42, "category_id": 3, "segmentation": _rect(1, 1, 5, 5)},
    ]
    _write(tmp_path / "annotations" / "instances_default.json",
           {"images": images, "annotations": anns, "categories": CATS})
    _write(tmp_path / "annotations" / "instances_broken.json", {"images": "nope"})
    (tmp_path / "annotations" / "instances_truncated.json").write_text('{"images": [')
    ds = READER.read(tmp_path)
    assert [it.key for it in ds.items] == ["default/ok"]
    problems = dict(ds.problems)
    file = "annotations/instances_default.json"
    assert problems["default/cat"] == f"{file}: image 'default/cat': annotation id 11: unknown category_id 99"
    assert "annotation id 12: polygon 0 has 2 points, a polygon needs at least 3" in problems["default/poly"]
    assert "annotation id 13: RLE size is 40×31, the image is 40×30" in problems["default/size"]
    assert "annotation id 14: RLE counts cover 905 pixels, the image has 1200" in problems["default/runs"]
    assert "annotation id 15: no segmentation" in problems["default/none"]
    assert "'lost.png'" in problems["default/lost"] and "image file not found" in problems["default/lost"]
    assert problems[file] == f"{file}: annotation id 17: no image with id 42"
    assert "not a COCO file" in problems["annotations/instances_broken.json"]
    assert "not a readable JSON file" in problems["annotations/instances_truncated.json"]
    assert "annotation id 16: compressed RLE has a character out of range" in problems["default/junk"]
    assert ds.items[0].read_labels()[3, 3] == 1


def test_an_image_of_another_size_than_its_entry_fails_when_read(tmp_path: Path):
    _image(tmp_path / "a.png", (W + 5, H))
    path = _write(tmp_path / "instances_x.json", {
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}], "annotations": [], "categories": CATS})
    (item,) = READER.read(path).items
    with pytest.raises(FormatError, match=r"instances_x\.json: image 'a' is for a 40×30 image, the image is 45×30"):
        item.read_labels()


def test_rle_runs_agree_with_pycocotools():
    """Compressed strings are checked through their runs, uncompressed ones written as runs: both
    agree with pycocotools on random masks (empty, full and odd sizes included)."""
    rng = np.random.default_rng(7)
    for t in range(200):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        m = rng.random((h, w)) < [0.0, 1.0, 0.05, 0.5, 0.95][t % 5]
        compressed = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode()
        runs = encode_uncompressed(m)
        assert string_counts(compressed) == runs["counts"] and sum(runs["counts"]) == h * w
        np.testing.assert_array_equal(mask_utils.decode(mask_utils.frPyObjects(runs, h, w)), m)


def test_panoptic_bad_segments(tmp_path: Path):
    for name in ("a", "b", "c"):
        _image(tmp_path / f"{name}.jpg")
    png = tmp_path / "panoptic_x"
    png.mkdir()
    Image.fromarray(rgb_of(np.full((H, W), 8)), "RGB").save(png / "a.png")
    Image.fromarray(rgb_of(np.full((H, W), 8)), "RGB").save(png / "b.png")
    _write(tmp_path / "panoptic_x.json", {
        "images": [{"id": i, "file_name": f"{n}.jpg", "width": W, "height": H} for i, n in enumerate("abc")],
        "annotations": [{"image_id": 0, "file_name": "a.png", "segments_info": [{"id": 9, "category_id": 1}]},
                        {"image_id": 1, "file_name": "b.png", "segments_info": [{"id": 8, "category_id": 5}]},
                        {"image_id": 2, "file_name": "c.png", "segments_info": [{"id": 8, "category_id": 1}]}],
        "categories": [{"id": 1, "name": "dog", "isthing": 1}]})
    ds = READER.read(tmp_path)
    problems = dict(ds.problems)
    assert "segment id 8: unknown category_id 5" in problems["b"]
    assert "c.png not found" in problems["c"]
    with pytest.raises(FormatError, match="the segment PNG has id 8, which segments_info does not list"):
        ds.items[0].read_labels()


def test_detection(tmp_path: Path):
    assert not READER.detect(DATA / "formats" / "labelme_voc")
    assert not READER.detect(DATA / "voc_real") and not READER.detect(tmp_path)
    path = _write(tmp_path / "instances_x.json", {"images": [], "annotations": [], "categories": []})
    assert READER.detect(tmp_path) and READER.detect(path)
    other = _write(tmp_path / "sub" / "export.json", {"info": {}, "images": [{"file_name": "a.jpg"}]})
    assert READER.detect(other)


# ---------------------------------------------------------------------------------------------
# the writer


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _items(tmp_path: Path) -> list[ExportItem]:
    out = []
    for name in ("2007_000033", "2011_000006"):
        mask = DATA / "voc_real" / "masks" / f"{name}.png"
        image = next((DATA / "voc_real" / "images").glob(f"{name}.*"))
        lab = _png(mask)
        out.append(ExportItem(f"voc/{image.name}", image, functools.partial(_png, mask), (lab.shape[1], lab.shape[0])))
    _image(tmp_path / "rot.jpg", (W, H), exif_orientation=6)  # shown 30 wide, 40 high
    rot = np.zeros((W, H), np.uint8)
    rot[2:12, 3:9] = 20
    rot[30:, :] = IGNORE
    out.append(ExportItem("rot.jpg", tmp_path / "rot.jpg", lambda: rot, (H, W)))
    return out


def test_writer_round_trip_exact_through_pycocotools_plain_png_decoding_and_our_reader(tmp_path: Path):
    items = _items(tmp_path)
    classes = LabelSet.voc()
    stage = tmp_path / "out"
    stage.mkdir()
    assert WRITER.write(stage, items, classes) == []
    wanted = {it.key.rsplit(".", 1)[0]: it.labels() for it in items}
    # pycocotools: annToMask of every annotation, category id = class value (255: void)
    coco = COCO(str(stage / "annotations" / "instances_default.json"))
    assert {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}[IGNORE] == "__ignore__"
    for img in coco.dataset["images"]:
        out = np.zeros((img["height"], img["width"]), np.uint8)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]])):
            assert ann["iscrowd"] == int(ann["category_id"] == IGNORE)
            # torchvision's segmentation reference passes every segmentation through frPyObjects
            seg = ann["segmentation"]
            assert isinstance(seg["counts"], list)
            frp = mask_utils.decode(mask_utils.frPyObjects(seg, img["height"], img["width"]))
            np.testing.assert_array_equal(frp, coco.annToMask(ann))
            assert ann["area"] == int(frp.sum())
            out[coco.annToMask(ann) > 0] = ann["category_id"]
        np.testing.assert_array_equal(out, wanted[img["file_name"].rsplit(".", 1)[0]])
        assert read_image(stage / "images" / "default" / img["file_name"]).shape[:2] == out.shape  # upright
    # panoptic: the PNG's ids, segment = category = class + 1, 0 = void
    pan = json.loads((stage / "annotations" / "panoptic_default.json").read_text())
    for ann in pan["annotations"]:
        ids = ids_of(np.asarray(Image.open(stage / "annotations" / "panoptic_default" / ann["file_name"])))
        seg_cat = {s["id"]: s["category_id"] for s in ann["segments_info"]}
        out = np.full(ids.shape, IGNORE, np.uint8)
        for sid, cid in seg_cat.items():
            out[ids == sid] = cid - 1
        assert set(np.unique(ids).tolist()) <= {0, *seg_cat}
        np.testing.assert_array_equal(out, wanted[ann["file_name"][:-4]])
    assert [c["name"] for c in pan["categories"]][:2] == ["background", "aeroplane"]
    # our reader: the folder (panoptic read) and the instances file alone
    for source in (stage, stage / "annotations" / "instances_default.json"):
        ds = READER.read(source)
        assert not ds.problems and ds.class_names[:21] == ["background", *classes.names[1:]]
        assert sorted(it.key for it in ds.items) == sorted(wanted)
        for it in ds.items:
            np.testing.assert_array_equal(it.read_labels(), wanted[it.key])


def test_writer_failures_leave_nothing_behind(tmp_path: Path):
    _image(tmp_path / "a.png")
    good = ExportItem("a.png", tmp_path / "a.png", lambda: np.ones((H, W), np.uint8), (W, H))
    bad = ExportItem("b.png", tmp_path / "a.png", lambda: np.zeros((3, 3), np.uint8), (W, H))
    lost = ExportItem("c.png", tmp_path / "gone.png", lambda: np.zeros((H, W), np.uint8), (W, H))
    stage = tmp_path / "out"
    stage.mkdir()
    failed = dict(WRITER.write(stage, [good, bad, lost], LabelSet(["bg", "thing"])))
    assert set(failed) == {"b.png", "c.png"}
    files = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    assert files == ["annotations/instances_default.json", "annotations/panoptic_default.json",
                     "annotations/panoptic_default/a.png", "images/default/a.png"]
    assert [im["file_name"] for im in json.loads((stage / files[0]).read_text())["images"]] == ["a.png"]
    with pytest.raises(FormatError, match="reads back as void or background"):
        WRITER.write(stage, [good], LabelSet(["bg", "Background"]))
