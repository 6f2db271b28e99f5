"""`deeplab-studio predict` and `evaluate` end to end on tiny images and a tiny checkpoint."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab_studio.cli import main
from deeplab_studio.commands.predict import collect_images
from deeplab_studio.ml.checkpoints import save_checkpoint
from deeplab_studio.ml.zoo import build_model

COLORS = [(0, 0, 0), (250, 10, 10), (10, 250, 10)]


def _constant_model(winner: int) -> torch.nn.Module:
    """A real deeplabv3plus_mobilenet whose classifier always votes for class `winner`."""
    torch.manual_seed(0)
    model = build_model("deeplabv3plus_mobilenet", num_classes=3)
    last = model.classifier.classifier[3]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 0.0, 0.0]))
        last.bias[winner] = 5.0
    return model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "const1.safetensors"
    save_checkpoint(path, _constant_model(1), arch="deeplabv3plus_mobilenet", num_classes=3,
                    class_names=["background", "red", "green"], class_colors=COLORS)
    return path


@pytest.fixture(scope="module")
def random_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("ckpt") / "random.safetensors"
    save_checkpoint(path, build_model("deeplabv3plus_mobilenet", num_classes=3),
                    arch="deeplabv3plus_mobilenet", num_classes=3, class_colors=COLORS)
    return path


def _image(path: Path, h: int = 32, w: int = 40, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


# --- predict -------------------------------------------------------------------------------------
def test_predict_writes_palette_pngs_probs_and_overlays(tmp_path: Path, random_ckpt: Path, capsys) -> None:
    a = _image(tmp_path / "in" / "a.jpg", 32, 40)
    b = _image(tmp_path / "in" / "sub" / "b.png", 24, 36, seed=1)
    out = tmp_path / "out"
    rc = main(["predict", "--model", str(random_ckpt), "--device", "cpu", "--save-probs", "--overlay",
               str(tmp_path / "in"), "--out", str(out)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "images/s" in err and "2 of 2" in err
    for stem, (h, w), src in (("a", (32, 40), a), ("sub/b", (24, 36), b)):
        with Image.open(out / f"{stem}.png") as im:
            assert im.mode == "P" and im.size == (w, h)
            labels = np.array(im)
            pal = np.array(im.getpalette()[: 9]).reshape(3, 3)
        assert labels.max() <= 2
        np.testing.assert_array_equal(pal, COLORS)
        probs = np.load(out / f"{stem}.probs.npy", allow_pickle=False)
        assert probs.dtype == np.float16 and probs.shape == (3, h, w)
        np.testing.assert_array_equal(probs.astype(np.float32).argmax(0), labels)  # same model output
        with Image.open(out / f"{stem}.overlay.jpg") as im:
            assert im.format == "JPEG" and im.size == (w, h)
    assert not list(out.rglob("*.tmp*"))


def test_predict_skips_a_bad_image_and_exits_non_zero(tmp_path: Path, ckpt: Path, capsys) -> None:
    _image(tmp_path / "in" / "good1.png")
    (tmp_path / "in" / "bad.jpg").write_bytes(b"\xff\xd8\xff not a jpeg at all")
    _image(tmp_path / "in" / "good2.png", seed=2)
    out = tmp_path / "out"
    rc = main(["predict", "--model", str(ckpt), "--device", "cpu", "--quiet", str(tmp_path / "in"), "--out", str(out)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "bad.jpg" in err and "1 failed" in err
    assert sorted(p.name for p in out.iterdir()) == [".deeplab-studio-predict.jsonl", "good1.png", "good2.png"]
    with Image.open(out / "good1.png") as im:
        assert (np.array(im) == 1).all()  # the constant model's class


def test_predict_with_crf_tiles_tta_and_output_stride(tmp_path: Path, random_ckpt: Path) -> None:
    src = _image(tmp_path / "x.png", 40, 72)
    rc = main(["predict", "--model", str(random_ckpt), "--device", "cpu", "--crf", "--tile-size", "64",
               "--tta", "flip", "--output-stride", "8", str(src), "--out", str(tmp_path / "out")])
    assert rc == 0
    with Image.open(tmp_path / "out" / "x.png") as im:
        assert im.mode == "P" and im.size == (72, 40) and np.array(im).max() <= 2


def test_predict_tile_size_auto_fits_the_image_to_memory(tmp_path: Path, random_ckpt: Path) -> None:
    src = _image(tmp_path / "x.png", 40, 72)
    for name, size in (("fixed", "64"), ("auto", "auto")):
        assert main(["predict", "--model", str(random_ckpt), "--device", "cpu", "--tile-size", size, str(src),
                     "--out", str(tmp_path / name)]) == 0
    with Image.open(tmp_path / "auto" / "x.png") as a, Image.open(tmp_path / "fixed" / "x.png") as f:
        assert a.size == f.size == (72, 40)
    runs = {name: json.loads((tmp_path / name / ".deeplab-studio-predict.jsonl").read_text())["run"]
            for name in ("fixed", "auto")}
    assert runs["fixed"] != runs["auto"]  # the tile size is part of the run key --resume compares


def test_output_names_are_unique(tmp_path: Path) -> None:
    for rel in ("d1/x.jpg", "d1/x.png", "d1/sub/x.jpg", "d2/x.jpg", "d1/.hidden/y.jpg", "d1/notes.txt"):
        _image(tmp_path / rel) if not rel.endswith(".txt") else (tmp_path / rel).write_text("hi")
    found = collect_images([str(tmp_path / "d1"), str(tmp_path / "d2"), str(tmp_path / "d2" / "x.jpg")])
    names = [stem.as_posix() for _, stem in found]
    assert len(found) == 4  # hidden folders, non-images and repeated inputs are left out
    assert names == ["sub/x", "x", "x_png", "x_jpg"]  # d1/sub/x.jpg, d1/x.jpg, d1/x.png, d2/x.jpg


@pytest.mark.parametrize("argv, message", [
    (["--model", "missing.safetensors"], "file not found"),
    (["--device", "tpu"], "unknown device"),
    (["--tile-size", "8"], "--tile-size"),
    (["--tile-size", "big"], "--tile-size"),
])
def test_predict_bad_arguments_are_one_clear_line(tmp_path: Path, ckpt: Path, capsys, argv, message) -> None:
    src = _image(tmp_path / "x.png")
    base = {"--model": str(ckpt), "--device": "cpu"}
    for k, v in zip(argv[::2], argv[1::2]):
        base[k] = v if k != "--model" else str(tmp_path / v)
    args = [x for kv in base.items() for x in kv]
    try:
        rc = main(["predict", *args, str(src), "--out", str(tmp_path / "out")])
    except SystemExit as exc:  # refused by the argument parser (exit status 2, one line)
        rc = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0]


def test_predict_missing_input_is_an_error(tmp_path: Path, ckpt: Path, capsys) -> None:
    rc = main(["predict", "--model", str(ckpt), str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "no such file or folder" in capsys.readouterr().err


# --- evaluate --------------------------------------------------------------------------------------
def _tiny_voc(base: Path) -> Path:
    """VOCdevkit/VOC2012 with two 32×40 images and hand-made ground truth (255 = void)."""
    root = base / "VOCdevkit" / "VOC2012"
    gt_a = np.zeros((32, 40), np.uint8)
    gt_a[:, 20:] = 1
    gt_a[:, 19:21] = 255  # 64 void pixels; class 0: 32×19 = 608, class 1: 32×19 = 608
    gt_b = np.full((32, 40), 2, np.uint8)
    gt_b[:8] = 0  # class 0: 8×40 = 320, class 2: 24×40 = 960
    for i, (image_id, gt) in enumerate((("2007_000001", gt_a), ("2007_000002", gt_b))):
        _image(root / "JPEGImages" / f"{image_id}.jpg", seed=i)
        (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(gt, mode="P")
        im.putpalette([0, 0, 0] * 256)
        im.save(root / "SegmentationClass" / f"{image_id}.png")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000001\n2007_000002\n")
    (root / "ImageSets" / "Segmentation" / "broken.txt").write_text("2007_000001\n2007_000099\n")
    return root


def test_evaluate_miou_equals_the_hand_computed_value(tmp_path: Path, ckpt: Path, capsys) -> None:
    _tiny_voc(tmp_path)
    rc = main(["evaluate", "--model", str(ckpt), "--device", "cpu", "--json", str(tmp_path)])
    captured = capsys.readouterr()
    assert rc == 0
    result = json.loads(captured.out)  # stdout holds exactly one JSON object
    # The model predicts class 1 on all 2496 counted pixels (2×1280 minus 64 void).
    # IoU(1) = TP / (GT + pred - TP) = 608 / (608 + 2496 - 608); IoU(0) = IoU(2) = 0.
    iou1 = 608 / 2496
    assert result["per_class_iou"] == {"background": 0.0, "red": pytest.approx(iou1, abs=1e-6), "green": 0.0}
    assert result["miou"] == pytest.approx(iou1 / 3, abs=1e-6)
    assert result["pixel_accuracy"] == pytest.approx(608 / 2496, abs=1e-6)
    assert result["images"] == 2 and result["failed"] == []
    assert np.array(result["confusion_matrix"]).tolist() == [[0, 928, 0], [0, 608, 0], [0, 960, 0]]
    assert "images/s" in captured.err
    # the dense CRF cannot change a prediction that is the same everywhere
    rc = main(["evaluate", "--model", str(ckpt), "--device", "cpu", "--json", "--crf", "--quiet", str(tmp_path)])
    refined = json.loads(capsys.readouterr().out)
    assert rc == 0 and refined["crf"] is True and refined["miou"] == pytest.approx(iou1 / 3, abs=1e-6)


def test_evaluate_table_and_failures(tmp_path: Path, ckpt: Path, capsys) -> None:
    root = _tiny_voc(tmp_path)
    rc = main(["evaluate", "--model", str(ckpt), "--device", "cpu", str(root), "--split", "val"])
    out = capsys.readouterr().out
    assert rc == 0 and "mIoU 0.0812" in out and "red" in out
    assert "pixel accuracy 0.2436   mean class accuracy 0.3333" in out  # 608/2496; (0 + 1 + 0) / 3
    rc = main(["evaluate", "--model", str(ckpt), "--device", "cpu", "--json", str(root), "--split", "broken"])
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert rc == 1 and result["images"] == 1 and result["failed"][0]["id"] == "2007_000099"
    assert "2007_000099" in captured.err
    rc = main(["evaluate", "--model", str(ckpt), str(root), "--split", "test"])
    assert rc == 2 and "splits here: broken, val" in capsys.readouterr().err
    rc = main(["evaluate", "--model", str(ckpt), str(tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages")])
    assert rc == 2 and "not a VOC folder" in capsys.readouterr().err


def test_predict_messages_read_well(tmp_path: Path, ckpt: Path, capsys) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    rc = main(["predict", "--model", str(ckpt), "--device", "cpu", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"predicting 1 image on cpu into {tmp_path / 'o'}" in err
    skipped = [line for line in err.splitlines() if "] skipped " in line]
    assert len(skipped) == 1 and skipped[0].count(str(bad)) == 1  # the file is named once, with the reason
    assert "0 of 1 image in" in err and "(0.00 images/s)" in err  # a failure is no throughput


def test_evaluate_an_exported_project_and_check_class_names(tmp_path: Path, capsys) -> None:
    """The real chain: a project of generated scenes → `export_voc` → `evaluate` with the trained
    demo model; the JSON equals a confusion matrix computed here from the exported files."""
    from deeplab_studio.models import SCENES_MODEL, bundled_model_path

    with bundled_model_path(SCENES_MODEL) as path:
        demo = path
    from deeplab_studio.core.labels import LabelSet
    from deeplab_studio.core.metrics import ConfusionMatrix
    from deeplab_studio.core.scenes import generate_scene
    from deeplab_studio.ml.checkpoints import load_checkpoint
    from deeplab_studio.ml.predictor import Predictor
    from deeplab_studio.storage.images import read_image
    from deeplab_studio.storage.labelmaps import read_label_png
    from deeplab_studio.storage.project import Project, Status
    from deeplab_studio.storage.voc import export_voc

    folder = tmp_path / "project"
    folder.mkdir()
    truths = {}
    for i in range(4):
        image, truth = generate_scene(64, 80, seed=40 + i)
        Image.fromarray(image).save(folder / f"s{i}.png")
        truths[f"s{i}.png"] = truth
    project = Project.open(folder)
    project.set_labelset(LabelSet(["background", "disk", "square", "triangle"],
                                  [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]))
    for rec in project.records:
        truth = truths[rec.path]
        project.save_annotation(rec, truth, np.ones(truth.shape, bool), status=Status.REVIEWED)
    voc = tmp_path / "voc"
    export_voc(project, voc, val_fraction=0.5)

    rc = main(["evaluate", "--model", str(demo), "--device", "cpu", "--json", "--quiet", str(voc)])
    result = json.loads(capsys.readouterr().out)
    ids = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    predictor = Predictor(load_checkpoint(demo), device="cpu")
    cm = ConfusionMatrix(4)
    for image_id in ids:
        cm.update(read_label_png(voc / "SegmentationClass" / f"{image_id}.png"),
                  predictor.predict(read_image(voc / "JPEGImages" / f"{image_id}.jpg")).labels)
    assert rc == 0 and result["images"] == len(ids) == 2 and result["warnings"] == []
    assert result["confusion_matrix"] == cm.matrix.tolist()
    assert result["miou"] == pytest.approx(cm.miou(), abs=1e-6) and result["miou"] > 0.5
    assert list(result["per_class_iou"]) == ["background", "disk", "square", "triangle"]

    (voc / "class_names.txt").write_text("background\nball\nbox\n")  # a dataset of other classes
    rc = main(["evaluate", "--model", str(demo), "--device", "cpu", "--quiet", str(voc)])
    err = capsys.readouterr().err
    assert rc == 0 and "warning: the model's classes (background, disk, square, triangle) differ" in err


class _Terminal(io.StringIO):
    """stderr as a terminal would be (isatty), recorded."""

    def isatty(self) -> bool:
        return True


def test_tiled_image_shows_tile_progress_on_a_terminal(tmp_path: Path, ckpt: Path, monkeypatch) -> None:
    src = _image(tmp_path / "wide.png", 40, 150)
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    rc = main(["predict", "--model", str(ckpt), "--device", "cpu", "--tile-size", "64", str(src),
               "--out", str(tmp_path / "out")])
    text = term.getvalue()
    assert rc == 0
    assert all(f"wide.png: tile {k}/3" in text for k in (1, 2, 3))  # 150 px wide in 64 px tiles
    assert "\r\x1b[K[1/1]" in text  # the tile line is cleared before the per-image line
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal: no tile lines (logs stay clean)
    main(["predict", "--model", str(ckpt), "--device", "cpu", "--tile-size", "64", str(src), "--out", str(tmp_path / "o2")])
    assert ": tile " not in sys.stderr.getvalue()


def test_predict_with_torchvision_weights_by_name(tmp_path: Path, monkeypatch, capsys) -> None:
    """`--model torchvision:NAME` uses the torch hub cache: a cached file (here torchvision's own
    model with random weights, saved under the released file's name) runs with no network; an
    unknown name and an unreachable server are one clear line each."""
    import torchvision

    from deeplab_studio.ml import checkpoints

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = checkpoints.TORCHVISION_WEIGHTS["deeplabv3_mobilenet_v3_large"]
    cached = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    torch.manual_seed(0)
    tv = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, aux_loss=True)
    torch.save(tv.state_dict(), cached)
    src = _image(tmp_path / "x.png")
    rc = main(["predict", "--model", "torchvision:deeplabv3_mobilenet_v3_large", "--device", "cpu", "--quiet",
               str(src), "--out", str(tmp_path / "out")])
    assert rc == 0 and "downloading" not in capsys.readouterr().err
    with Image.open(tmp_path / "out" / "x.png") as im:
        assert im.mode == "P" and im.size == (40, 32) and np.array(im).max() <= 20

    rc = main(["predict", "--model", "torchvision:fcn_resnet50", str(src), "--out", str(tmp_path / "o2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "fcn_resnet50" in err[0] and "known: deeplabv3_resnet50" in err[0]
    monkeypatch.setitem(checkpoints.TORCHVISION_WEIGHTS, "deeplabv3_resnet50",
                        "http://127.0.0.1:9/deeplabv3_resnet50_coco-cd0a2569.pth")  # closed port: fails at once
    rc = main(["predict", "--model", "torchvision:deeplabv3_resnet50", str(src), "--out", str(tmp_path / "o2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot download" in err[0] and "offline" in err[0]
    monkeypatch.setitem(checkpoints.TORCHVISION_WEIGHTS, "deeplabv3_resnet101",
                        "https://weights.invalid/deeplabv3_resnet101_coco-586e9e4e.pth")  # .invalid never resolves
    rc = main(["predict", "--model", "torchvision:deeplabv3_resnet101", str(src), "--out", str(tmp_path / "o2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot resolve weights.invalid" in err[0]
    assert f"put it at {cached.parent / 'deeplabv3_resnet101_coco-586e9e4e.pth'}" in err[0]
