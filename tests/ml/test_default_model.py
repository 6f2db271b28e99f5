"""`predict` and `evaluate` without `--model` use the bundled Pascal VOC model, on real VOC photos;
`--model NAME` names any bundled model; a bare unknown name is one line listing them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.cli import main
from deeplab_studio.core.metrics import ConfusionMatrix
from deeplab_studio.models import VOC_MODEL, bundled_models

VOC_REAL = Path(__file__).resolve().parents[1] / "data" / "voc_real"
pytestmark = pytest.mark.skipif(VOC_MODEL not in bundled_models(), reason="the VOC model is not bundled")


def _labels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "P"
        return np.asarray(im)


def _iou(gt: np.ndarray, pred: np.ndarray, k: int) -> float:
    cm = ConfusionMatrix(21)
    cm.update(gt, pred)
    return float(cm.iou()[k])


def test_predict_without_model_uses_the_voc_model(tmp_path: Path, capsys) -> None:
    """2007_000033 is an aeroplane (VOC class 1) on sky: the default model finds it."""
    image = VOC_REAL / "images" / "2007_000033.png"
    rc = main(["predict", "--device", "cpu", "--quiet", str(image), "--out", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    pred = _labels(tmp_path / "out" / "2007_000033.png")
    gt = _labels(VOC_REAL / "masks" / "2007_000033.png")
    assert pred.shape == gt.shape
    assert set(np.unique(pred).tolist()) <= {0, 1}  # background and aeroplane only
    assert 0.10 < np.mean(pred == 1) < 0.35  # the ground truth has 19.5 % aeroplane
    assert _iou(gt, pred, 1) > 0.7 and _iou(gt, pred, 0) > 0.9  # measured: 0.96 and 0.99


def test_model_by_bundled_name_is_the_default(tmp_path: Path) -> None:
    image = VOC_REAL / "images" / "2009_001314.png"  # a bird
    small = tmp_path / "bird.png"
    with Image.open(image) as im:
        im.resize((257, 257)).save(small)
    for out, extra in (("a", []), ("b", ["--model", VOC_MODEL])):
        assert main(["predict", "--device", "cpu", "--quiet", *extra, str(small), "--out", str(tmp_path / out)]) == 0
    a, b = _labels(tmp_path / "a" / "bird.png"), _labels(tmp_path / "b" / "bird.png")
    assert np.array_equal(a, b) and (a == 3).any()  # VOC class 3 = bird


def test_unknown_bare_name_lists_the_bundled_models(tmp_path: Path, capsys) -> None:
    image = VOC_REAL / "images" / "2009_001314.png"
    rc = main(["predict", "--model", "deeplabv3_nosuch", str(image), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "deeplabv3_nosuch" in err[0] and VOC_MODEL in err[0] and "not a bundled model" in err[0]
    assert not (tmp_path / "o").exists()


def test_help_names_the_default_model(capsys) -> None:
    for command in ("predict", "evaluate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert f"default: {VOC_MODEL}" in text and "Hugging Face" in text and "torchvision:NAME" in text


def _voc_folder(base: Path, ids: list[str]) -> Path:
    """A VOCdevkit/VOC2012 folder with the given real val crops (PNG images, as evaluate allows)."""
    root = base / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    for image_id in ids:
        shutil.copy(VOC_REAL / "images" / f"{image_id}.png", root / "JPEGImages" / f"{image_id}.png")
        shutil.copy(VOC_REAL / "masks" / f"{image_id}.png", root / "SegmentationClass" / f"{image_id}.png")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def test_evaluate_without_model_uses_the_voc_model(tmp_path: Path, capsys) -> None:
    _voc_folder(tmp_path, ["2007_000033", "2007_000332"])  # an aeroplane, a horse
    rc = main(["evaluate", "--device", "cpu", "--json", "--quiet", str(tmp_path)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads(captured.out)
    assert result["model"] == VOC_MODEL and result["images"] == 2 and not result["warnings"]
    iou = result["per_class_iou"]
    assert iou["aeroplane"] > 0.7 and iou["horse"] > 0.6 and iou["background"] > 0.9  # measured 0.96 / 0.89 / 0.98
    assert result["miou"] > 0.6
