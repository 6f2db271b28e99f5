"""Writes labelme_voc/: labelme JSON files for three real VOC images (in ../voc_real/images/), with
polygons traced from the official ground truth the way a person clicks them (corners simplified
to about a pixel, sub-pixel click positions), and one file using every labelme shape type.

Run from the repository root: `.venv/bin/python tests/data/formats/make_labelme_voc.py`.
Deterministic (seeded); the tests compare what our reader makes of these files with labelme's own
`shapes_to_label` (labelme2voc).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from deeplab_studio.core.labels import VOC_CLASSES

HERE = Path(__file__).parent
OUT = HERE / "labelme_voc"
VOC = HERE.parent / "voc_real"
IDS = ("2011_000003", "2011_000006", "2011_000025")
LABELS = ["__ignore__", "_background_", *VOC_CLASSES[1:]]


def clicks(contour: np.ndarray, rng: np.random.Generator) -> list[list[float]]:
    pts = cv2.approxPolyDP(contour, 1.0, True).reshape(-1, 2).astype(float)
    pts += rng.uniform(-0.45, 0.45, pts.shape)
    return [[round(float(x), 2), round(float(y), 2)] for x, y in pts]


def shape(label: str, points: list, kind: str = "polygon", **extra) -> dict:
    return {"label": label, "points": points, "group_id": extra.pop("group_id", None), "description": "",
            "shape_type": kind, "flags": {}, "mask": extra.pop("mask", None), **extra}


def object_shapes(gt: np.ndarray, rng: np.random.Generator) -> list[dict]:
    """One polygon per object outline, larger objects first (as a person would draw them)."""
    found = []
    for v in np.unique(gt):
        if v in (0, 255):
            continue
        contours, _ = cv2.findContours((gt == v).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        found += [(cv2.contourArea(c), VOC_CLASSES[v], c) for c in contours if len(c) >= 6]
    found.sort(key=lambda t: -t[0])
    polygons = [(name, clicks(c, rng)) for _, name, c in found]
    return [shape(name, pts, group_id=i) for i, (name, pts) in enumerate(polygons) if len(pts) >= 3]


def every_kind(gt: np.ndarray) -> list[dict]:
    """One shape of each kind labelme draws, X-AnyLabeling's extra keys on some."""
    blob = np.zeros((21, 31), np.uint8)
    cv2.ellipse(blob, (15, 10), (14, 9), 20, 0, 360, 1, -1)
    buf = io.BytesIO()
    Image.fromarray(blob.astype(bool)).save(buf, format="PNG")
    return [
        shape("sofa", [[12.3, 250.6], [80.8, 300.2]], "rectangle", difficult=False, score=0.87),
        shape("chair", [[440.5, 40.2], [462.0, 51.7]], "circle", attributes={"colour": "red"}),
        shape("bottle", [[300.2, 20.7], [380.9, 60.1]], "line", description="a cable"),
        shape("bottle", [[200.0, 300.0], [230.4, 320.6], [260.8, 301.1], [290.0, 330.0]], "linestrip"),
        shape("cat", [[480.6, 300.4]], "point"),
        shape("dog", [[100, 20], [130, 40]], "mask", mask=base64.b64encode(buf.getvalue()).decode()),
        shape("horse", [[150.5, 200.5], [190.2, 180.4], [200.3, 200.8], [160.4, 220.9]], "oriented_rectangle"),
        shape("__ignore__", [[5.5, 5.5], [60.2, 8.1], [40.7, 30.3]]),
        shape("_background_", [[20.0, 260.0], [40.0, 260.0], [40.0, 280.0], [20.0, 280.0]]),  # a hole in the sofa
    ]


def main() -> None:
    OUT.mkdir(exist_ok=True)
    rng = np.random.default_rng(13)
    for k, voc_id in enumerate(IDS):
        gt = np.asarray(Image.open(VOC / "masks" / f"{voc_id}.png"))
        shapes = object_shapes(gt, rng) + (every_kind(gt) if k == 0 else [])
        doc = {"version": "5.5.0", "flags": {}, "shapes": shapes,
               "imagePath": f"../../voc_real/images/{voc_id}.jpg", "imageData": None,
               "imageHeight": int(gt.shape[0]), "imageWidth": int(gt.shape[1])}
        (OUT / f"{voc_id}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (OUT / "labels.txt").write_text("".join(f"{n}\n" for n in LABELS))


if __name__ == "__main__":
    main()
