"""labelme / X-AnyLabeling JSON: each shape type against hand-known pixels, a folder of real VOC
images compared with labelme's own `shapes_to_label` (what labelme2voc.py draws), the writer's
round trips through our reader and through labelme, the EXIF frame, embedded images, bad input.

labelme imports PyQt5 and onnxruntime, so it runs in a child process (`_labelme_maps`), never
beside this process's PySide6.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import io
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.core.labels import IGNORE, LabelSet
from deeplab_studio.storage import formats
from deeplab_studio.storage.formats import labelme_writer
from deeplab_studio.storage.formats.base import ExportItem, FormatError
from deeplab_studio.storage.formats.contours import Region
from deeplab_studio.storage.formats.labelme import READER, WRITER
from deeplab_studio.storage.images import apply_orientation, read_image

DATA = Path(__file__).parents[1] / "data"
LABELME_VOC = DATA / "formats" / "labelme_voc"

# labelme2voc's rasterisation: labelme's own loader (EXIF, imageData) and shapes_to_label, with the
# class numbering of labels.txt (`__ignore__` -1, written as 255)
_ORACLE = r"""
import sys, json, numpy as np
from labelme._label_file import read_label_file
from labelme.utils import img_data_to_arr, shapes_to_label
labels_txt, out, *files = sys.argv[1:]
names = [n.strip() for n in open(labels_txt, encoding="utf-8") if n.strip()]
lut = {n: i - 1 for i, n in enumerate(names)}
maps = {}
for i, f in enumerate(files):
    d = read_label_file(f)
    cls, _ = shapes_to_label(img_data_to_arr(d.image_data).shape, d.shapes, lut)
    maps[str(i)] = cls.astype(np.uint8)
np.savez(out, **maps)
"""


def _labelme_maps(labels_txt: Path, files: list[Path], tmp: Path) -> list[np.ndarray]:
    if importlib.util.find_spec("labelme") is None:  # found, not imported: it brings PyQt5 along
        pytest.skip("labelme is not installed (it is in the test extra)")
    out = tmp / "labelme_maps.npz"
    run = subprocess.run([sys.executable, "-c", _ORACLE, str(labels_txt), str(out), *map(str, files)],
                         check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    with np.load(out) as npz:
        return [npz[str(i)] for i in range(len(files))]


def _shape(label: str, points: list, kind: str = "polygon", **extra) -> dict:
    return {"label": label, "points": points, "group_id": None, "shape_type": kind, "flags": {}, **extra}


def _folder(tmp: Path, docs: dict[str, list[dict]], size=(30, 24), labels_txt: str | None = None,
            **extra) -> Path:
    """A labelme folder: one grey PNG per file and its JSON with `docs[name]` as shapes."""
    tmp.mkdir(parents=True, exist_ok=True)
    for name, shapes in docs.items():
        Image.new("RGB", size, (90, 90, 90)).save(tmp / f"{name}.png")
        doc = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": f"{name}.png", "imageData": None,
               "imageHeight": size[1], "imageWidth": size[0], **extra}
        (tmp / f"{name}.json").write_text(json.dumps(doc))
    if labels_txt is not None:
        (tmp / "labels.txt").write_text(labels_txt)
    return tmp


def _read_one(folder: Path) -> tuple[np.ndarray, list[str]]:
    ds = READER.read(folder)
    assert not ds.problems, ds.problems
    return ds.items[0].read_labels(), ds.class_names


def _mask_b64(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(bool)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


# ---------------------------------------------------------------------------------------------
# shapes


def _expect(shape_hw, *boxes) -> np.ndarray:
    """A bool map with the inclusive boxes (x0, y0, x1, y1) set."""
    out = np.zeros(shape_hw, bool)
    for x0, y0, x1, y1 in boxes:
        out[y0:y1 + 1, x0:x1 + 1] = True
    return out


@pytest.mark.parametrize("shape, expected", [
    # Pillow's coordinates: integer x is a pixel centre, so a polygon's corners are filled
    (_shape("a", [[2, 3], [9, 3], [9, 7], [2, 7]]), _expect((24, 30), (2, 3, 9, 7))),
    (_shape("a", [[2, 3], [9, 3], [9, 7], [2, 7]], "rotation", direction=0.0), _expect((24, 30), (2, 3, 9, 7))),
    (_shape("a", [[2, 3], [9, 3], [9, 7], [2, 7]], "oriented_rectangle"), _expect((24, 30), (2, 3, 9, 7))),
    # a rectangle's corners are truncated to whole pixels (labelme2voc's Pillow call)
    (_shape("a", [[10.7, 1.2], [4.2, 5.9]], "rectangle"), _expect((24, 30), (4, 1, 10, 5))),
    # X-AnyLabeling's four-corner rectangle: their box
    (_shape("a", [[4, 1], [10, 1], [10, 5], [4, 5]], "rectangle", difficult=True), _expect((24, 30), (4, 1, 10, 5))),
    # circle: centre and a point on it, radius 3 (Pillow's ellipse, rows 12..18)
    (_shape("a", [[15, 15], [18, 15]], "circle"),
     _expect((24, 30), (14, 12, 16, 12), (13, 13, 17, 13), (12, 14, 18, 16), (13, 17, 17, 17), (14, 18, 16, 18))),
    # point: a disk of radius 5 (11 rows)
    (_shape("a", [[15, 11]], "point"),
     _expect((24, 30), (13, 6, 17, 6), (12, 7, 18, 7), (11, 8, 19, 8), (10, 9, 20, 13), (11, 14, 19, 14),
             (12, 15, 18, 15), (13, 16, 17, 16))),
    # line: 10 px wide (4 above, 5 below), no caps
    (_shape("a", [[5, 12], [20, 12]], "line"), _expect((24, 30), (5, 8, 20, 17))),
    # linestrip: each segment 10 px wide, no joint
    (_shape("a", [[5, 5], [15, 5], [15, 20]], "linestrip"), _expect((24, 30), (5, 1, 15, 10), (11, 5, 20, 20))),
])
def test_each_shape_type_draws_the_pixels_labelme_draws(tmp_path: Path, shape: dict, expected: np.ndarray):
    labels, names = _read_one(_folder(tmp_path, {"x": [shape]}))
    assert names == ["_background_", "a"]
    np.testing.assert_array_equal(labels == 1, expected)
    assert set(np.unique(labels)) <= {0, 1}


def test_mask_shape_fills_its_box_from_the_png(tmp_path: Path):
    m = np.array([[1, 0, 1, 0], [0, 1, 1, 0], [1, 1, 1, 1]], bool)  # 4 wide, 3 high
    shape = _shape("a", [[6.9, 2.2], [9.5, 4.7]], "mask", mask=_mask_b64(m))  # box x 6..9, y 2..4
    labels, _ = _read_one(_folder(tmp_path, {"x": [shape]}))
    expected = np.zeros((24, 30), bool)
    expected[2:5, 6:10] = m
    np.testing.assert_array_equal(labels == 1, expected)


def test_later_shapes_paint_over_earlier_ignore_is_void_background_is_zero(tmp_path: Path):
    shapes = [_shape("dog", [[1, 1], [20, 1], [20, 15], [1, 15]], group_id=3),
              _shape("cat", [[5, 5], [25, 5], [25, 20], [5, 20]], group_id=3),  # group ids do not matter
              _shape("__ignore__", [[22, 18], [28, 18], [28, 22], [22, 22]]),
              _shape("_background_", [[8, 8], [10, 8], [10, 10], [8, 10]])]
    labels, names = _read_one(_folder(tmp_path, {"x": shapes}))
    assert names == ["_background_", "dog", "cat"]  # order of appearance, background first
    expected = np.zeros((24, 30), np.uint8)
    expected[1:16, 1:21] = 1
    expected[5:21, 5:26] = 2
    expected[18:23, 22:29] = IGNORE
    expected[8:11, 8:11] = 0
    np.testing.assert_array_equal(labels, expected)


def test_class_names_come_from_labels_txt_and_unlisted_labels_are_added(tmp_path: Path):
    shapes = [_shape("horse", [[1, 1], [4, 1], [4, 4]]), _shape("zebra", [[6, 6], [9, 6], [9, 9]])]
    folder = _folder(tmp_path, {"x": shapes}, labels_txt="__ignore__\n_background_\ncat\nhorse\n")
    ds = READER.read(folder)
    assert ds.class_names == ["_background_", "cat", "horse", "zebra"]
    assert ds.classes_declared and any("zebra" in n for n in ds.notes)
    labels = ds.items[0].read_labels()
    assert labels[2, 3] == 2 and labels[8, 8] == 3


def test_x_anylabeling_classes_txt_and_extra_keys(tmp_path: Path):
    shapes = [_shape("car", [[1, 1], [4, 1], [4, 4]], description="", difficult=False, attributes={"a": 1},
                     score=0.9, kie_linking=[])]
    folder = _folder(tmp_path, {"x": shapes}, labels_txt=None, description="", chat_history=[])
    (folder / "classes.txt").write_text("person\ncar\n")
    ds = READER.read(folder)
    assert ds.class_names == ["_background_", "person", "car"] and not ds.problems
    assert ds.items[0].read_labels()[2, 3] == 2


# ---------------------------------------------------------------------------------------------
# against labelme itself


def test_real_voc_folder_reads_as_labelme2voc_draws_it(tmp_path: Path):
    """Polygons traced from the VOC ground truth of three real images, and one file with every
    labelme shape type: our maps equal labelme's `shapes_to_label`, pixel for pixel."""
    files = sorted(LABELME_VOC.glob("*.json"))
    kinds = {s["shape_type"] for f in files for s in json.loads(f.read_text())["shapes"]}
    assert kinds == {"polygon", "rectangle", "circle", "line", "linestrip", "point", "mask", "oriented_rectangle"}
    ds = READER.read(LABELME_VOC)
    assert not ds.problems and [it.key for it in ds.items] == [f.stem for f in files]
    theirs = _labelme_maps(LABELME_VOC / "labels.txt", files, tmp_path)
    for item, ref in zip(ds.items, theirs):
        ours = item.read_labels()
        assert ours.shape == ref.shape == read_image(item.image).shape[:2]
        assert int((ours != ref).sum()) == 0, item.key
    assert IGNORE in ds.items[0].read_labels()  # the file with every shape type has an `__ignore__`


def test_exif_rotated_photo_is_drawn_as_labelme_shows_it(tmp_path: Path):
    """A 64×48 photo tagged "rotate 90° clockwise" is shown 48 wide, 64 high: labelme 6 draws
    there; a file declaring the stored 64×48 (an older tool) is drawn there and turned with it."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (64, 48), (50, 60, 70)).save(tmp_path / "rot.jpg", exif=exif.tobytes())
    box = _shape("cat", [[2, 3], [12, 20]], "rectangle")
    for name, (w, h) in (("shown", (48, 64)), ("stored", (64, 48))):
        doc = {"shapes": [box], "imagePath": "rot.jpg", "imageData": None, "imageWidth": w, "imageHeight": h}
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    ds = READER.read(tmp_path)
    shown, stored = (it.read_labels() for it in ds.items)
    assert shown.shape == stored.shape == (64, 48)
    np.testing.assert_array_equal(shown == 1, _expect((64, 48), (2, 3, 12, 20)))
    np.testing.assert_array_equal(stored == 1, apply_orientation(_expect((48, 64), (2, 3, 12, 20)), 6))
    (tmp_path / "labels.txt").write_text("__ignore__\n_background_\ncat\n")
    (theirs,) = _labelme_maps(tmp_path / "labels.txt", [tmp_path / "shown.json"], tmp_path)
    np.testing.assert_array_equal(shown, theirs)


def test_image_only_embedded_in_the_json_becomes_a_file(tmp_path: Path):
    buf = io.BytesIO()
    Image.new("RGB", (30, 20), (200, 10, 10)).save(buf, format="PNG")
    doc = {"shapes": [_shape("a", [[1, 1], [5, 1], [5, 5]])], "imagePath": "gone/away.png",
           "imageData": base64.b64encode(buf.getvalue()).decode(), "imageWidth": 30, "imageHeight": 20}
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.json").write_text(json.dumps(doc))
    ds = READER.read(tmp_path)
    (item,) = ds.items
    assert item.key == "sub/e" and item.image.suffix == ".png" and item.image.is_file()
    assert not item.image.is_relative_to(tmp_path)
    assert read_image(item.image)[0, 0].tolist() == [200, 10, 10]
    assert item.read_labels()[2, 4] == 1 and any("imageData" in n for n in ds.notes)


def test_read_labels_pickles(tmp_path: Path):
    ds = READER.read(_folder(tmp_path, {"x": [_shape("a", [[1, 1], [5, 1], [5, 5]])]}))
    again = pickle.loads(pickle.dumps(ds.items[0].read_labels))
    np.testing.assert_array_equal(again(), ds.items[0].read_labels())


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_files_and_shapes_are_named_and_the_rest_is_read(tmp_path: Path):
    good = [_shape("a", [[1, 1], [5, 1], [5, 5]])]
    folder = _folder(tmp_path, {
        "good": good,
        "two_points": good + [_shape("dog", [[1, 1], [5, 5]])],
        "unknown": [_shape("cat", [[1, 1], [5, 1], [5, 5]], "cuboid")],
        "nan": [_shape("cat", [[1, 1], [5, float("nan")], [5, 5]])],
        "no_label": [{"points": [[1, 1], [5, 1], [5, 5]], "shape_type": "polygon"}],
    })
    (folder / "broken.json").write_text('{"shapes": [')
    (folder / "lost.json").write_text(json.dumps({"shapes": good, "imagePath": "lost.jpg", "imageData": None}))
    ds = READER.read(folder)
    assert [it.key for it in ds.items] == ["good"]
    problems = dict(ds.problems)
    assert "shape 1 ('dog', polygon)" in problems["two_points"] and "two_points.json" in problems["two_points"]
    assert "at least 3 points" in problems["two_points"]
    assert "shape 0 ('cat', cuboid)" in problems["unknown"] and "unknown shape_type" in problems["unknown"]
    assert "shape 0 ('cat', polygon)" in problems["nan"]
    assert "shape 0 (None, polygon)" in problems["no_label"]
    assert "broken.json" in problems["broken"] and "not valid JSON" in problems["broken"]
    assert "'lost.jpg' not found" in problems["lost"]


def test_bad_mask_and_wrong_size_raise_from_read_labels_naming_file_and_shape(tmp_path: Path):
    folder = _folder(tmp_path, {
        "junk": [_shape("m", [[1, 1], [3, 3]], "mask", mask="not base64 png")],
        "misfit": [_shape("m", [[1, 1], [3, 3]], "mask", mask=_mask_b64(np.ones((2, 2))))],
    })
    doc = json.loads((folder / "junk.json").read_text())
    doc.update(imageWidth=99, imageHeight=99, shapes=[])
    (folder / "size.json").write_text(json.dumps(doc))
    items = {it.key: it for it in READER.read(folder).items}
    with pytest.raises(FormatError, match=r"junk\.json: shape 0 \('m', mask\): 'mask' is not a base64 PNG"):
        items["junk"].read_labels()
    with pytest.raises(FormatError, match=r"misfit\.json: shape 0 \('m', mask\): mask is 2×2 pixels.*3×3"):
        items["misfit"].read_labels()
    with pytest.raises(FormatError, match=r"size\.json is for a 99×99 image, the image is 30×24"):
        items["size"].read_labels()


def test_detection(tmp_path: Path):
    assert READER.detect(LABELME_VOC) and READER.detect(LABELME_VOC / "2011_000003.json")
    assert formats.detect(LABELME_VOC) == "labelme"
    (tmp_path / "instances_x.json").write_text(json.dumps({"images": [{"file_name": "a.jpg"}], "annotations": []}))
    assert not READER.detect(tmp_path) and not READER.detect(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------
# the writer


def _voc_items(names: list[str]) -> list[ExportItem]:
    out = []
    for name in names:
        mask = DATA / "voc_real" / "masks" / f"{name}.png"
        image = next((DATA / "voc_real" / "images").glob(f"{name}.*"))
        lab = np.asarray(Image.open(mask))
        out.append(ExportItem(f"photos/{image.name}", image, functools.partial(_png, mask), (lab.shape[1], lab.shape[0])))
    return out


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _rings() -> np.ndarray:
    """Class 1 with a background hole holding a class-2 island with a void hole; a 1-px line."""
    lab = np.zeros((40, 50), np.uint8)
    lab[5:35, 5:45] = 1
    lab[10:30, 10:40] = 0
    lab[14:26, 15:35] = 2
    lab[18:22, 20:25] = IGNORE
    lab[37, 3:47] = 3
    lab[0, 0] = 3
    return lab


def test_writer_round_trip_exact_through_our_reader_and_labelme(tmp_path: Path):
    Image.new("RGB", (50, 40), (1, 2, 3)).save(tmp_path / "rings.png")
    rings = _rings()
    items = _voc_items(["2007_000033", "2009_005189", "2011_000025"])
    items.append(ExportItem("rings.png", tmp_path / "rings.png", lambda: rings, (50, 40)))
    classes = LabelSet.voc()
    stage = tmp_path / "out"
    stage.mkdir()
    assert WRITER.write(stage, items, classes) == []
    assert (stage / "labels.txt").read_text().splitlines() == ["__ignore__", "_background_", *classes.names[1:]]
    ds = READER.read(stage)
    assert not ds.problems and [it.key for it in ds.items] == ["photos/2007_000033", "photos/2009_005189",
                                                               "photos/2011_000025", "rings"]
    json_files = [stage / f"{it.key}.json" for it in ds.items]
    theirs = _labelme_maps(stage / "labels.txt", json_files, tmp_path)
    for item, src, ref in zip(ds.items, items, theirs):
        np.testing.assert_array_equal(item.read_labels(), src.labels())
        np.testing.assert_array_equal(ref, src.labels())
        doc = json.loads((stage / f"{item.key}.json").read_text())
        assert doc["imageData"] is None and (stage / f"{item.key}.json").parent / doc["imagePath"] == item.image
    order = [s["label"] for s in json.loads(json_files[-1].read_text())["shapes"]]
    assert order.index("aeroplane") < order.index("_background_") < order.index("bicycle") < order.index("__ignore__")


def test_writer_embeds_images_on_request(tmp_path: Path):
    (item,) = _voc_items(["2011_000003"])
    stage = tmp_path / "out"
    stage.mkdir()
    assert labelme_writer.LabelmeWriter(embed_images=True).write(stage, [item], LabelSet.voc()) == []
    (stage / "photos" / "2011_000003.jpg").unlink()
    (read,) = READER.read(stage).items
    np.testing.assert_array_equal(read.read_labels(), item.labels())
    np.testing.assert_array_equal(read_image(read.image), read_image(item.image))


def test_pixels_the_tracer_misses_are_patched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The safety net: regions left out of the trace come back as one-row polygons drawn last."""
    real = labelme_writer.trace_regions

    def lossy(labels: np.ndarray) -> list[Region]:
        return [r for r in real(labels) if r.value != 2]

    monkeypatch.setattr(labelme_writer, "trace_regions", lossy)
    shapes, patches = labelme_writer.trace_shapes(_rings())
    assert patches == 16  # the island's rows 14..25, rows 18..21 split in two by its void hole
    canvas = Image.new("L", (50, 40))
    labelme_writer._paint(canvas, shapes)
    np.testing.assert_array_equal(np.asarray(canvas), _rings())


def test_writer_failures_leave_nothing_behind(tmp_path: Path):
    Image.new("RGB", (50, 40)).save(tmp_path / "a.png")
    good = ExportItem("a.png", tmp_path / "a.png", _rings, (50, 40))
    wrong_size = ExportItem("b/a.png", tmp_path / "a.png", lambda: np.zeros((4, 4), np.uint8), (50, 40))
    unknown_class = ExportItem("c.png", tmp_path / "a.png", lambda: np.full((40, 50), 9, np.uint8), (50, 40))
    stage = tmp_path / "out"
    stage.mkdir()
    failed = dict(WRITER.write(stage, [good, wrong_size, unknown_class], LabelSet(["bg", "x", "y", "z"])))
    assert set(failed) == {"b/a.png", "c.png"} and "4×4" in failed["b/a.png"]
    assert sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file()) == [
        "a.json", "a.png", "labels.txt"]
    with pytest.raises(FormatError, match="reserves"):
        WRITER.write(stage, [good], LabelSet(["bg", "__ignore__"]))
