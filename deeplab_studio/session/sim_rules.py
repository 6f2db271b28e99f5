"""The simulated annotator's fixed rules (the yardstick of issue 14), numpy + OpenCV only.

- The score of a label map is its mIoU over the classes in the image's ground truth (void 255
  ignored): for each such class c, |label = c and truth = c| / |label = c or truth = c| over the
  non-void pixels, averaged.
- The next action goes where the user sees the biggest mistake: error pixels (label ≠ truth,
  truth not void) are split by their true class into 4-connected regions; the largest region is
  taken, and in it the pixel farthest from any pixel outside it (Euclidean distance transform,
  the image border counting as outside; the first such pixel in row order on ties). The action
  uses the true class there. The radius of the largest disk that fits the region at that pixel
  is the distance rounded up, minus one.
- An object is an 8-connected component of one non-background class with at least
  `MIN_OBJECT` pixels (specks below that still count in the mIoU, not as objects).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

VOID = 255
MIN_OBJECT = 100


@dataclass(frozen=True)
class Click:
    """Where and with what the simulated user acts next."""

    x: int
    y: int
    cls: int
    fit: int  # radius of the largest disk that fits the error region there
    area: int  # pixels of that error region

    @property
    def point(self) -> tuple[float, float]:
        """The pixel's centre as an image point."""
        return (self.x + 0.5, self.y + 0.5)


def gt_classes(gt: np.ndarray) -> np.ndarray:
    """The classes in a ground truth (void left out)."""
    present = np.flatnonzero(np.bincount(gt.ravel(), minlength=256))
    return present[present != VOID]


def confusion(labels: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """256×256 pixel counts [truth, label] over the non-void pixels."""
    valid = gt != VOID
    joint = gt[valid].astype(np.int64) * 256 + labels[valid]
    return np.bincount(joint, minlength=65536).reshape(256, 256)


def miou_from_confusion(cm: np.ndarray, classes: np.ndarray) -> float:
    """mIoU over `classes` from a [truth, label] confusion matrix."""
    if classes.size == 0:
        return 1.0
    inter = cm[classes, classes].astype(np.float64)
    union = cm[classes, :].sum(axis=1) + cm[:, classes].sum(axis=0) - inter
    return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


def image_miou(labels: np.ndarray, gt: np.ndarray) -> float:
    """The image's mIoU over the classes of its ground truth."""
    return miou_from_confusion(confusion(labels, gt), gt_classes(gt))


def interior(region: np.ndarray) -> tuple[int, int, float]:
    """(x, y, distance) of the pixel of `region` farthest from outside it (the border is outside)."""
    padded = np.pad(region, 1).astype(np.uint8)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    k = int(np.argmax(dist))
    y, x = divmod(k, region.shape[1])
    return x, y, float(dist[y, x])


def next_click(labels: np.ndarray, gt: np.ndarray, *, max_radius: int = 50) -> Click | None:
    """The next action's pixel, class and fitting disk (capped at `max_radius`); None when no
    pixel is wrong."""
    wrong = (labels != gt) & (gt != VOID)
    if not wrong.any():
        return None
    best: tuple[int, np.ndarray, int] | None = None
    for cls in np.flatnonzero(np.bincount(gt[wrong], minlength=256)):
        n, comp, stats, _ = cv2.connectedComponentsWithStats((wrong & (gt == cls)).astype(np.uint8), connectivity=4)
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = int(stats[k, cv2.CC_STAT_AREA])
        if best is None or area > best[0]:
            best = (area, comp == k, int(cls))
    area, region, cls = best
    x, y, dist = interior(region)
    return Click(x, y, cls, min(max_radius, max(0, int(np.ceil(dist)) - 1)), area)


def objects(gt: np.ndarray, min_area: int = MIN_OBJECT) -> list[tuple[int, np.ndarray]]:
    """(class, mask) of each object, largest first (see the module docstring)."""
    out = []
    for cls in gt_classes(gt):
        if cls == 0:
            continue
        n, comp, stats, _ = cv2.connectedComponentsWithStats((gt == cls).astype(np.uint8), connectivity=8)
        out += [(int(cls), comp == k) for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] >= min_area]
    return sorted(out, key=lambda o: -int(o[1].sum()))
