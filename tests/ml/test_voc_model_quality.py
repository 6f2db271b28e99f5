"""The bundled VOC model on real VOC images: quality, parity with its int8 TFLite source, and the
CRF setting of its model card (figures: benchmarks/measure_voc_model.py, the card's "measured")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.core.metrics import ConfusionMatrix
from deeplab_studio.ml.crf import CRFParams, ProposalCRF, model_crf
from deeplab_studio.models import VOC_MODEL, bundled_model_path, model_card

DATA = Path(__file__).resolve().parents[1] / "data"
VOC = DATA / "voc_real"
TFLITE = DATA / "coral_deeplabv3_mnv2_pascal" / "deeplabv3_mnv2_pascal_quant.tflite"
#: pooled mIoU (%) of the 7 val crops: measured 95.47 (card "measured"), LiteRT int8 95.29; 3 points under
VAL_MIOU_BOUND = 92.5


def _miou(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    cm = ConfusionMatrix(21)
    for gt, labels in pairs:
        cm.update(gt, labels)
    return 100 * cm.miou()


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[np.ndarray, np.ndarray, object]]:
    """id -> (image, ground truth, Prediction) for the 10 voc_real images (7 val crops, 3 train)."""
    from deeplab_studio.ml.checkpoints import load_checkpoint
    from deeplab_studio.ml.predictor import Predictor

    with bundled_model_path(VOC_MODEL) as path:
        predictor = Predictor(load_checkpoint(path), device="cpu")
    out = {}
    for p in sorted((VOC / "images").iterdir()):
        image = np.array(Image.open(p).convert("RGB"))
        out[p.stem] = (image, np.array(Image.open(VOC / "masks" / f"{p.stem}.png")), predictor.predict(image))
    return out


def _val(runs: dict) -> dict:
    return {k: v for k, v in runs.items() if v[0].shape[:2] == (513, 513)}


def test_pooled_miou_on_val_crops(runs: dict) -> None:
    val = _val(runs)
    assert len(val) == 7
    assert _miou([(gt, pred.labels) for _, gt, pred in val.values()]) >= VAL_MIOU_BOUND


def test_agrees_with_litert_int8_per_image(runs: dict) -> None:
    pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) cannot be imported here")
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(TFLITE))
    it.allocate_tensors()
    for k, (image, _, pred) in _val(runs).items():
        it.set_tensor(it.get_input_details()[0]["index"], image[None])
        it.invoke()
        ref = it.get_tensor(it.get_output_details()[0]["index"])[0]
        assert (pred.labels == ref).mean() >= 0.98, k


def test_card_crf_setting_does_not_lower_miou(runs: dict) -> None:
    """The card's setting on all 10 images: pooled mIoU not lower, the mean per-image gain positive,
    no image more than a point lower (measured: none lower by more than 0.5)."""
    crf = model_crf(VOC_MODEL)
    assert crf == ProposalCRF.from_card(model_card(VOC_MODEL)) and crf != ProposalCRF()
    before, after, gains = [], [], []
    for image, gt, pred in runs.values():
        refined = crf(image, pred.probs, labels=pred.labels)
        before.append((gt, pred.labels))
        after.append((gt, refined))
        gains.append(_miou([(gt, refined)]) - _miou([(gt, pred.labels)]))
    assert _miou(after) >= _miou(before)
    assert np.mean(gains) > 0 and min(gains) > -1.0, gains


def test_model_crf_reads_the_card_beside_a_weights_file(tmp_path: Path) -> None:
    weights = tmp_path / "m.safetensors"
    assert model_crf(weights) == ProposalCRF()  # no card
    (tmp_path / "m.json").write_text("not json")
    assert model_crf(weights) == ProposalCRF()  # an unreadable card is no card
    setting = ProposalCRF(CRFParams(hard_confidence=0.9, margin=32), use_probs=False)
    (tmp_path / "m.json").write_text(json.dumps({"name": "m", "crf": setting.to_card()}))
    assert model_crf(weights) == setting and model_crf(str(weights)) == setting
    (tmp_path / "m.json").write_text(json.dumps({"crf": {"input": "logits"}}))
    with pytest.raises(ValueError, match="'crf' entry"):
        model_crf(weights)
    (tmp_path / "m.json").write_text(json.dumps({"crf": {"params": {"hard_confidence": 2}}}))
    with pytest.raises(ValueError, match="hard_confidence"):
        model_crf(weights)


def test_proposal_crf_from_labels_matches_refine_labels() -> None:
    from deeplab_studio.ml.crf import refine_labels

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    probs = rng.random((3, 40, 50)).astype(np.float32)
    probs /= probs.sum(axis=0)
    setting = ProposalCRF(CRFParams(hard_confidence=0.9), use_probs=False)
    expected = refine_labels(image, probs.argmax(axis=0).astype(np.uint8), params=setting.params)
    assert np.array_equal(setting(image, probs), expected)
