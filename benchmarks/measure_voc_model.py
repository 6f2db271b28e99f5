"""Measure the bundled VOC model on tests/data/voc_real and write the figures into its model card.

    .venv/bin/python benchmarks/measure_voc_model.py [--no-write] [--crf-search]

1. LiteRT parity, the 7 val crops at 513×513: per-image argmax agreement of the bundled model
   (float16-stored, run in float32 through the Predictor on the CPU) with the source int8 TFLite
   file in LiteRT, and mIoU against the ground truth for both (per image; pooled over the 7 with
   pixel accuracy). Skipped with a message when ai_edge_litert is missing.
2. All 10 images (7 crops, 3 train images at native size) through the Predictor, without and with
   the CRF this model's card asks for (`ml.crf.model_crf`): per-image and pooled mIoU.
3. `--crf-search` (runs first; about 12 minutes on 2 cores): the 168 CRF settings of `GRID` (hard
   labels and soft probabilities) on this model's real proposals. The rule: the best mean gain
   among the settings that lower no image by more than 0.5 points (else the best worst case).
   Its honest score is leave-one-out: for each image, the setting the rule picks on the other 9,
   scored on that image. The rule applied to all 10 is the setting written as the card's "crf"
   (used by section 2). Also the DeepLab v3+ R101 predictions (vainf_r101_pred) under the chosen
   setting and under the module defaults: whether one setting serves both.

mIoU: per image, the mean IoU over the classes in its ground truth or prediction; pooled, one
confusion matrix over the images. Void (255) is ignored. Figures are percent.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
from typing import Any

import numpy as np
from PIL import Image

from deeplab_studio.core.metrics import ConfusionMatrix
from deeplab_studio.ml.checkpoints import load_checkpoint
from deeplab_studio.ml.crf import CRFParams, ProposalCRF, model_crf
from deeplab_studio.ml.predictor import Predictor
from deeplab_studio.models import VOC_MODEL, bundled_model_path

from _common import NUM_CLASSES, ROOT, VOC, colours_to_indices, voc_scenes

TFLITE = ROOT / "tests" / "data" / "coral_deeplabv3_mnv2_pascal" / "deeplabv3_mnv2_pascal_quant.tflite"
CARD = ROOT / "deeplab_studio" / "models" / f"{VOC_MODEL}.json"
MAX_LOSS = 0.5  # points: a setting may lower no image by more than this
CRF_NOTE = ("chosen by benchmarks/measure_voc_model.py --crf-search on this model's proposals for "
            "tests/data/voc_real; see measured.crf_search and measured.native_with_crf")
#: the CRF settings searched (10 iterations each): hard labels from the module defaults' region to
#: weaker unaries, wider and stronger appearance kernels, a wider band; soft probabilities likewise.
GRID: list[tuple[str, dict[str, float]]] = (
    [("labels", dict(hard_confidence=hc, bilateral_compat=bc, bilateral_sxy=sxy, bilateral_srgb=srgb, margin=m))
     for hc, bc, sxy, srgb, m in itertools.product((0.7, 0.8, 0.9, 0.95), (2, 3, 4), (40, 80, 120), (5, 20), (16, 32))]
    + [("probs", dict(bilateral_compat=bc, bilateral_sxy=sxy, bilateral_srgb=srgb, margin=m))
       for bc, sxy, srgb, m in itertools.product((3, 5), (20, 40, 80), (5, 13), (16, 32))])


def scores(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """(mIoU, pixel accuracy) in percent of (ground truth, labels) pairs in one confusion matrix."""
    cm = ConfusionMatrix(NUM_CLASSES)
    for gt, labels in pairs:
        cm.update(gt, labels)
    return round(100 * cm.miou(), 2), round(100 * cm.pixel_accuracy(), 2)


def miou(gt: np.ndarray, labels: np.ndarray) -> float:
    return scores([(gt, labels)])[0]


def litert_labels(images: list[np.ndarray]) -> list[np.ndarray] | None:
    """The int8 TFLite model's argmax for each 513×513 image, or None without LiteRT."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    it = Interpreter(model_path=str(TFLITE))
    it.allocate_tensors()
    out = []
    for image in images:
        it.set_tensor(it.get_input_details()[0]["index"], image[None])
        it.invoke()
        out.append(it.get_tensor(it.get_output_details()[0]["index"])[0].astype(np.uint8))
    return out


def parity(data: dict, preds: dict) -> dict[str, Any] | None:
    """Section 1 (the val crops): agreement with LiteRT and mIoU of both."""
    ids = [k for k, (image, _) in data.items() if image.shape[:2] == (513, 513)]
    ref = litert_labels([data[k][0] for k in ids])
    if ref is None:
        print("LiteRT (ai_edge_litert) is not installed: no parity figures")
        return None
    rows = {k: {"agreement": round(100 * float((preds[k].labels == r).mean()), 2),
                "miou": miou(data[k][1], preds[k].labels), "miou_litert": miou(data[k][1], r)}
            for k, r in zip(ids, ref)}
    ours = scores([(data[k][1], preds[k].labels) for k in ids])
    theirs = scores([(data[k][1], r) for k, r in zip(ids, ref)])
    print(f"\n1. LiteRT parity, {len(ids)} val crops at 513×513 (bundled model through the Predictor vs int8 LiteRT)")
    print(f"{'image':14s} {'agree %':>8s} {'mIoU':>7s} {'LiteRT':>7s}")
    for k, r in rows.items():
        print(f"{k:14s} {r['agreement']:8.2f} {r['miou']:7.2f} {r['miou_litert']:7.2f}")
    print(f"{'pooled mIoU':14s} {'':8s} {ours[0]:7.2f} {theirs[0]:7.2f}")
    print(f"{'pixel acc.':14s} {'':8s} {ours[1]:7.2f} {theirs[1]:7.2f}")
    return {"images": rows, "min_agreement": min(r["agreement"] for r in rows.values()),
            "pooled": {"miou": ours[0], "pixel_accuracy": ours[1], "miou_litert": theirs[0],
                       "pixel_accuracy_litert": theirs[1]}}


def with_crf(data: dict, preds: dict, crf: ProposalCRF) -> dict[str, Any]:
    """Section 2: all images at native size, without and with the model's CRF."""
    refined = {k: crf(data[k][0], preds[k].probs, labels=preds[k].labels) for k in data}
    rows = {}
    for k, (image, gt) in data.items():
        before, after = miou(gt, preds[k].labels), miou(gt, refined[k])
        rows[k] = {"size": f"{image.shape[1]}x{image.shape[0]}", "miou": before, "miou_crf": after,
                   "gain": round(after - before, 2)}
    plain = scores([(gt, preds[k].labels) for k, (_, gt) in data.items()])
    crfd = scores([(gt, refined[k]) for k, (_, gt) in data.items()])
    gains = [r["gain"] for r in rows.values()]
    print(f"\n2. All {len(data)} images at native size, Predictor without / with the CRF ({crf.describe()})")
    print(f"{'image':14s} {'size':>8s} {'mIoU':>7s} {'+CRF':>7s} {'gain':>6s}")
    for k, r in rows.items():
        print(f"{k:14s} {r['size']:>8s} {r['miou']:7.2f} {r['miou_crf']:7.2f} {r['gain']:+6.2f}")
    print(f"{'pooled mIoU':14s} {'':8s} {plain[0]:7.2f} {crfd[0]:7.2f} {crfd[0] - plain[0]:+6.2f}")
    print(f"{'pixel acc.':14s} {'':8s} {plain[1]:7.2f} {crfd[1]:7.2f} {crfd[1] - plain[1]:+6.2f}")
    print(f"mean per-image gain {np.mean(gains):+.2f}, worst {min(gains):+.2f}")
    return {"crf": crf.describe(), "images": rows, "mean_gain": round(float(np.mean(gains)), 2),
            "worst_gain": round(min(gains), 2),
            "pooled": {"miou": plain[0], "miou_crf": crfd[0], "pixel_accuracy": plain[1],
                       "pixel_accuracy_crf": crfd[1]}}


def _gains(setting: ProposalCRF, data: dict, proposals: dict) -> np.ndarray:
    return np.array([miou(gt, setting(image, proposals[k][0], labels=proposals[k][1])) - miou(gt, proposals[k][1])
                     for k, (image, gt) in data.items()])


def _pick(gains: np.ndarray) -> int:
    """Row of `gains` (settings × images) with the best mean among those with no loss over MAX_LOSS."""
    ok = gains.min(axis=1) >= -MAX_LOSS
    if ok.any():
        return int(np.flatnonzero(ok)[gains[ok].mean(axis=1).argmax()])
    return int(gains.min(axis=1).argmax())


def crf_search(data: dict, preds: dict) -> dict[str, Any]:
    """Section 3: the GRID on this model's proposals, leave-one-out, and the R101 predictions."""
    settings = [ProposalCRF(CRFParams(**p), use_probs=kind == "probs") for kind, p in GRID]
    proposals = {k: (p.probs, p.labels) for k, p in preds.items()}
    print(f"\n3. CRF search: {len(settings)} settings × {len(data)} images", flush=True)
    gains = np.stack([_gains(s, data, proposals) for s in settings])
    ids = list(data)
    held = []
    for i, k in enumerate(ids):
        rest = np.delete(gains, i, axis=1)
        j = _pick(rest)
        held.append(float(gains[j, i]))
        print(f"  held out {k}: chose {settings[j].describe()}, gain there {gains[j, i]:+.2f}")
    best = _pick(gains)
    default = ProposalCRF()
    r101 = {p.stem: colours_to_indices(np.array(Image.open(p).convert("RGB")))
            for p in sorted((VOC / "vainf_r101_pred").iterdir())}
    r101_gains = {}
    for name, s in (("chosen", settings[best]), ("module_defaults", ProposalCRF(use_probs=False))):
        g = [miou(data[k][1], s(data[k][0], None, labels=lab)) - miou(data[k][1], lab) for k, lab in r101.items()]
        r101_gains[name] = {"mean": round(float(np.mean(g)), 2), "worst": round(min(g), 2)}
    default_gains = _gains(default, data, proposals)
    print(f"leave-one-out (honest) gain: mean {np.mean(held):+.2f}, worst {min(held):+.2f}: "
          + " ".join(f"{g:+.2f}" for g in held))
    print(f"chosen on all {len(ids)}: {settings[best].describe()}: mean {gains[best].mean():+.2f}, "
          f"worst {gains[best].min():+.2f}")
    top = int(gains.mean(axis=1).argmax())
    print(f"best mean of any setting, in hindsight: {settings[top].describe()}: mean {gains[top].mean():+.2f}, "
          f"worst {gains[top].min():+.2f}")
    print(f"module defaults (probs): mean {default_gains.mean():+.2f}, worst {default_gains.min():+.2f}")
    print(f"DeepLab v3+ R101 predictions (7 crops, hard labels): {r101_gains}")
    return {"settings_searched": len(settings), "rule": f"best mean gain with no image lower than -{MAX_LOSS}",
            "leave_one_out": {"gains": dict(zip(ids, [round(g, 2) for g in held])),
                              "mean": round(float(np.mean(held)), 2), "worst": round(min(held), 2)},
            "chosen": settings[best].to_card(),
            "best_mean_in_hindsight": {"crf": settings[top].to_card(), "mean": round(float(gains[top].mean()), 2),
                                       "worst": round(float(gains[top].min()), 2)},
            "module_defaults_probs": {
                "mean": round(float(default_gains.mean()), 2), "worst": round(float(default_gains.min()), 2)},
            "r101_hard_labels": r101_gains}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only; leave the model card as it is")
    parser.add_argument("--crf-search", action="store_true", help="also search CRF settings (about 10 minutes)")
    args = parser.parse_args()
    data = {stem: (image, gt) for stem, image, gt in voc_scenes()}  # the 10 images, sorted by id
    with bundled_model_path(VOC_MODEL) as path:
        predictor = Predictor(load_checkpoint(path), device="cpu")
    preds = {k: predictor.predict(image) for k, (image, _) in data.items()}
    card = json.loads(CARD.read_text(encoding="utf-8"))
    measured = dict(card.get("measured") or {})
    measured.update({
        "tool": "benchmarks/measure_voc_model.py", "date": datetime.date.today().isoformat(),
        "data": "tests/data/voc_real: 7 VOC 2012 val crops (513x513) and 3 train images (native size), "
                "official labels; Predictor on the CPU, float32",
        "metric": "percent; mIoU per image over the classes in its ground truth or prediction, pooled = one "
                  "confusion matrix over the images; void ignored",
    })
    crf = model_crf(VOC_MODEL)
    if args.crf_search:
        measured["crf_search"] = crf_search(data, preds)
        crf = ProposalCRF.from_card({"crf": measured["crf_search"]["chosen"]})
        card["crf"] = crf.to_card() | {"note": CRF_NOTE}
    litert = parity(data, preds)
    if litert is not None:
        measured["litert_parity_513"] = litert
    measured["native_with_crf"] = with_crf(data, preds, crf)
    if not args.no_write:
        card["measured"] = measured
        CARD.write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nwrote the 'measured' section of {CARD.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
