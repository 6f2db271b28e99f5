"""VOC and CVAT-mask both ways against the real Datumaro 1.13.

CVAT's "Segmentation mask 1.1" importer is its Datumaro fork's `voc` format, whose segmentation
task is the reader upstream Datumaro calls `voc_segmentation` (upstream's `voc` reads
ImageSets/Main only), so CVAT-mask exports are read here with `voc_segmentation`.

Our exports are read by Datumaro and must give our label maps back, void included; datasets
Datumaro writes (VOC with only train/val split files, CVAT-style `default.txt` with a folder in an
id) must import into label maps equal to what Datumaro holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.core.labels import IGNORE, LabelSet
from deeplab_studio.storage.formats import open_dataset
from deeplab_studio.storage.formats.project_export import export_dataset
from deeplab_studio.storage.formats.project_import import import_dataset
from deeplab_studio.storage.project import Project, Status

dm = pytest.importorskip("datumaro")
from datumaro.components.annotation import AnnotationType, LabelCategories, Mask, MaskCategories  # noqa: E402
from datumaro.components.media import Image as DmImage  # noqa: E402

VOID_NAME = "ignored"  # Datumaro's name for VOC's 255


def _dm_labels(item, names: list[str], ours: list[str]) -> np.ndarray:
    """One Datumaro item's masks as a label map in `ours`' numbering (`ignored` → 255); pixels no
    mask covers stay 254, so a gap shows up as a difference."""
    h, w = item.media.size
    out = np.full((h, w), 254, np.uint8)
    for ann in item.annotations:
        if ann.type != AnnotationType.mask:
            continue
        name = names[ann.label]
        out[np.asarray(ann.image, bool)] = IGNORE if name == VOID_NAME else ours.index(name)
    return out


def _read_back(path: Path, fmt: str) -> tuple[dict[str, np.ndarray], list[str]]:
    ds = dm.Dataset.import_from(str(path), fmt)
    names = [c.name for c in ds.categories()[AnnotationType.label]]
    return {f"{it.subset}:{it.id}": it for it in ds}, names


@pytest.fixture()
def exported_labels(annotated: Project) -> dict[str, np.ndarray]:
    """The fixture project's reviewed/edited/auto label maps by relative path."""
    return {r.path: annotated.load_annotation(r)[0] for r in annotated.records if annotated.has_annotation(r)}


def test_our_voc_export_reads_in_datumaro_with_void(annotated: Project, exported_labels, tmp_path: Path) -> None:
    out = tmp_path / "voc"
    s = export_dataset(annotated, out, "voc", layout="flat", val_fraction=0.4, seed=1)
    sources = json.loads((out / ".deeplab-studio-export.json").read_text())["sources"]
    items, names = _read_back(out, "voc_segmentation")
    assert names[-1] == VOID_NAME and names[:-1] == annotated.labels.names
    trainval = {k.split(":", 1)[1]: it for k, it in items.items() if k.startswith("trainval:")}
    assert sorted(trainval) == sorted(s.voc.ids) and len(trainval) == 5
    void = compared = 0
    for voc_id, item in trainval.items():
        want = exported_labels[sources[voc_id]]
        got = _dm_labels(item, names, annotated.labels.names)
        np.testing.assert_array_equal(got, want)
        void += int((want == IGNORE).sum())
        compared += want.size
    assert void > 0 and compared == sum(a.size for a in exported_labels.values())  # 5 maps, every pixel


def test_our_cvat_mask_export_reads_in_datumaro(annotated: Project, exported_labels, tmp_path: Path) -> None:
    out = tmp_path / "cvat"
    export_dataset(annotated, out, "cvat-mask")
    assert (out / "ImageSets/Segmentation/default.txt").read_text().split() == ["a", "alpha", "b", "rot", "sub/a"]
    items, names = _read_back(out, "voc_segmentation")  # the segmentation reader of CVAT's importer
    assert sorted(items) == ["default:a", "default:alpha", "default:b", "default:rot", "default:sub/a"]
    stems = {"a": "a.jpg", "alpha": "alpha.png", "b": "b.png", "rot": "rot.jpg", "sub/a": "sub/a.jpg"}
    for key, item in items.items():
        want = exported_labels[stems[key.split(":", 1)[1]]]
        np.testing.assert_array_equal(_dm_labels(item, names, annotated.labels.names), want)


def _datumaro_dataset(ids_subsets: list[tuple[str, str]], names: list[str], colors: list[tuple[int, int, int]],
                      seed: int) -> tuple["dm.Dataset", dict[str, np.ndarray]]:
    """A Datumaro dataset of random class blocks (a void band where `ignored` is a label) and the
    label maps it holds, in `names`' numbering (void = 255)."""
    rng = np.random.default_rng(seed)
    void = names.index(VOID_NAME) if VOID_NAME in names else None
    classes = [i for i in range(len(names)) if i != void]
    items, truth = [], {}
    for item_id, subset in ids_subsets:
        h, w = 30 + 2 * len(truth), 40
        lab = np.zeros((h, w), np.uint8)
        for c in classes[1:]:
            y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
            lab[y:y + 8, x:x + 9] = c
        if void is not None:
            lab[h - 3:, :] = void
        anns = [Mask(image=lab == c, label=int(c)) for c in np.unique(lab)]
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        items.append(dm.DatasetItem(id=item_id, subset=subset, media=DmImage.from_numpy(img), annotations=anns))
        truth[item_id] = np.where(lab == void, IGNORE, lab).astype(np.uint8) if void is not None else lab
    cats = {AnnotationType.label: LabelCategories.from_iterable(names),
            AnnotationType.mask: MaskCategories(dict(enumerate(colors)))}
    return dm.Dataset.from_iterable(items, categories=cats), truth


def test_datumaro_voc_with_train_and_val_only_imports_equal(tmp_path: Path) -> None:
    names = ["background", "potted plant", "tv/monitor", VOID_NAME]
    colors = [(0, 0, 0), (0, 64, 128), (200, 10, 10), (224, 224, 192)]
    ds, truth = _datumaro_dataset([("x1", "train"), ("x2", "train"), ("sub/x3", "val")], names, colors, seed=3)
    ds.export(str(tmp_path / "dmvoc"), "voc_segmentation", save_media=True, label_map="source")
    sets = sorted(p.name for p in (tmp_path / "dmvoc/ImageSets/Segmentation").iterdir())
    assert sets == ["train.txt", "val.txt"]  # what Datumaro writes: no trainval.txt
    source = open_dataset(tmp_path / "dmvoc")
    assert source.format == "voc" and "split: train.txt + val.txt" in source.notes
    assert [(it.key, it.subset) for it in source.items] == [("x1", "train"), ("x2", "train"), ("sub/x3", "val")]
    s = import_dataset(source, tmp_path / "p")
    assert s.imported == 3 and not s.failed and s.classes.names == names[:3]
    proj = Project.open(tmp_path / "p")
    assert [r.path for r in proj.records] == ["sub/x3.jpg", "x1.jpg", "x2.jpg"]
    for rec in proj.records:
        want = truth[rec.path[:-4]]
        np.testing.assert_array_equal(proj.load_annotation(rec)[0], want)
        assert (want == IGNORE).sum() == 3 * rec.width and rec.status == Status.REVIEWED

    # a project with label maps keeps its classes: "potted plant", "tv/monitor" are matched by name
    proj.close()
    seeded = tmp_path / "seeded"
    seeded.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(seeded / "seed.png")
    with Project.open(seeded) as p:
        p.set_labelset(LabelSet.voc())
        p.save_annotation(p.records[0], np.zeros((8, 8), np.uint8), np.ones((8, 8), bool), status=Status.EDITED)
    s = import_dataset(open_dataset(tmp_path / "dmvoc"), seeded)
    assert [(m.source, m.target, m.how) for m in s.plan.matches] == [
        ("background", "background", "same"), ("potted plant", "pottedplant", "by name"),
        ("tv/monitor", "tvmonitor", "by name")]
    with Project.open(seeded, read_only=True) as p:
        assert p.labels.names == LabelSet.voc().names
        lut = np.array([0, 16, 20], np.uint8)
        for key, want in truth.items():
            got = p.load_annotation(p.record(f"{key}.jpg"))[0]
            np.testing.assert_array_equal(got, np.where(want == IGNORE, IGNORE, lut[np.minimum(want, 2)]))


def test_datumaro_cvat_style_export_imports_equal(tmp_path: Path) -> None:
    """CVAT writes "Segmentation mask 1.1" with Datumaro's voc_segmentation: subset `default`,
    its own colours (background first), colour masks, ids with the task's folders."""
    names = ["background", "road", "car"]
    colors = [(0, 0, 0), (128, 64, 128), (0, 0, 142)]
    ds, truth = _datumaro_dataset([("frame_0", "default"), ("left/frame_1", "default")], names, colors, seed=5)
    ds.export(str(tmp_path / "cvat"), "voc_segmentation", save_media=True, apply_colormap=True,
              label_map={n: [c, [], []] for n, c in zip(names, colors)})
    source = open_dataset(tmp_path / "cvat")
    assert source.format == "cvat-mask" and source.notes[-1] == "split: default.txt"
    assert dict(zip(source.class_names, source.colors)) == dict(zip(names, colors))  # in labelmap.txt's order
    assert [it.key for it in source.items] == ["frame_0", "left/frame_1"]
    s = import_dataset(source, tmp_path / "p")
    assert s.imported == 2 and not s.failed
    proj = Project.open(tmp_path / "p")
    assert proj.labels.names == source.class_names and proj.labels.colors == source.colors
    lut = np.array([proj.labels.names.index(n) for n in names], np.uint8)
    for rec in proj.records:
        np.testing.assert_array_equal(proj.load_annotation(rec)[0], lut[truth[rec.path[:-4]]])


def test_our_mask_folder_export_reads_in_datumaro(annotated: Project, exported_labels, tmp_path: Path) -> None:
    """Datumaro's common_semantic_segmentation (images/, masks/, dataset_meta.json) names items by
    the mask's base name, so the subfolder image (status auto) is left out here."""
    out = tmp_path / "masks"
    export_dataset(annotated, out, "masks", statuses=["reviewed", "edited"])
    items, names = _read_back(out, "common_semantic_segmentation")
    assert sorted(items) == ["default:a", "default:alpha", "default:b", "default:rot"]
    paths = {"a": "a.jpg", "alpha": "alpha.png", "b": "b.png", "rot": "rot.jpg"}
    for key, item in items.items():
        want = exported_labels[paths[key.split(":", 1)[1]]]
        np.testing.assert_array_equal(_dm_labels(item, names, annotated.labels.names), want)
        assert (want == IGNORE).any()
