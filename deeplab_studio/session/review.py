"""Review: find likely label errors by how strongly the model disagrees with the human labels.

Qt-free and torch-free: numpy and OpenCV on the model's per-pixel class probabilities (computed
elsewhere, e.g. the window's inference worker) and the human label map.

The score, step by step (`score_labels`):

1. `P(x)`: the model's probability of the class the human gave pixel x (summed over the model
   classes that map to that label value, `lut`). Ignore pixels (255) and label values no model
   class maps to are not scored.
2. The disagreement map `D = 1 − P` (0 where not scored): what the overlay shows.
3. Regions: the 8-connected parts of each label value. Pixels closer than `border` pixels to a change
   of label are left out of a region's score (every model is unsure on boundaries); a region
   thinner than that is scored on all its pixels.
4. A region's disagreement is `1 − softmin(P)`, with the soft minimum
   `softmin_τ(P) = −τ · log(mean(exp(−P / τ)))` over its scored pixels: ≈ 1 − mean(P) when the
   model is unsure everywhere, near 1 when a part of the region (a fraction f) gets P ≈ 0 (it is
   about 1 + τ·log f), so a whole object given the wrong class and an object painted over as
   background both stand out.
5. The image's score is its worst region weighted by size: `max(d_R · |R| / (|R| + a·H·W))`,
   `a` = `size_scale` (0.5 % of the image by default), so a speck counts little and a region of
   a few percent of the image counts nearly fully.

`rank` sorts image scores, most suspicious first; `ReviewQueue` steps through a ranking.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from deeplab_studio.core.labels import IGNORE

TAU = 0.1
BORDER = 3
SIZE_SCALE = 0.005


@dataclass(frozen=True)
class RegionScore:
    """One region of a label value: its disagreement, its size and where it is."""

    value: int
    pixels: int
    disagreement: float  # 1 − soft minimum of P over its scored pixels, in [0, 1]
    weighted: float  # disagreement × its size weight: what the image score is the maximum of
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (end excluded)


@dataclass(frozen=True)
class ImageReview:
    """The review score of one image and its most suspicious region."""

    key: str
    score: float
    worst: RegionScore | None
    scored_pixels: int
    mean_disagreement: float


def label_probability(probs: np.ndarray, labels: np.ndarray, lut: np.ndarray | None = None) -> np.ndarray:
    """H×W float32: the model's probability of each pixel's label; NaN where not scored (ignore,
    or a label value no model class maps to). `probs` is C×H×W over model classes."""
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    if probs.ndim != 3 or probs.shape[1:] != labels.shape:
        raise ValueError(f"probabilities {probs.shape} do not match the label map {labels.shape}")
    num = probs.shape[0]
    table = np.arange(num) if lut is None else np.asarray(lut)[:num].astype(np.int64)
    out = np.full(labels.shape, np.nan, np.float32)
    for value in np.unique(labels):
        if value == IGNORE:
            continue
        models = np.flatnonzero(table == int(value))
        if models.size == 0:
            continue
        where = labels == value
        out[where] = probs[models].sum(axis=0, dtype=np.float32)[where]
    return out


def disagreement_map(prob_of_label: np.ndarray) -> np.ndarray:
    """H×W float32 in [0, 1]: 1 − P where scored, 0 elsewhere."""
    return np.where(np.isnan(prob_of_label), 0.0, 1.0 - np.clip(prob_of_label, 0.0, 1.0)).astype(np.float32)


def boundary_distance(labels: np.ndarray) -> np.ndarray:
    """H×W float32: distance (pixels) of each pixel to the nearest change of label."""
    change = np.zeros(labels.shape, bool)
    dy = labels[1:] != labels[:-1]
    dx = labels[:, 1:] != labels[:, :-1]
    change[1:] |= dy
    change[:-1] |= dy
    change[:, 1:] |= dx
    change[:, :-1] |= dx
    if not change.any():
        return np.full(labels.shape, np.inf, np.float32)
    return cv2.distanceTransform((~change).astype(np.uint8), cv2.DIST_L2, 3)


def region_scores(labels: np.ndarray, prob_of_label: np.ndarray, *, tau: float = TAU, border: float = BORDER,
                  size_scale: float = SIZE_SCALE) -> list[RegionScore]:
    """Every scored region's disagreement (see the module docstring), most suspicious first."""
    scored = ~np.isnan(prob_of_label)
    far = boundary_distance(labels) >= border
    area = labels.size
    out: list[RegionScore] = []
    for value in np.unique(labels[scored]):
        mask = (labels == value) & scored
        n, comp, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        if n <= 1:
            continue
        ids = comp[mask]
        weight = np.exp(-np.clip(prob_of_label[mask], 0.0, 1.0) / tau)
        core = far[mask]
        core_sum = np.bincount(ids[core], weights=weight[core], minlength=n)
        core_n = np.bincount(ids[core], minlength=n)
        all_sum = np.bincount(ids, weights=weight, minlength=n)
        all_n = np.bincount(ids, minlength=n)
        for i in range(1, n):
            total, count = (core_sum[i], core_n[i]) if core_n[i] else (all_sum[i], all_n[i])
            softmin = -tau * np.log(total / count)
            d = float(np.clip(1.0 - softmin, 0.0, 1.0))
            pixels = int(stats[i, cv2.CC_STAT_AREA])
            x, y, w, h = (int(stats[i, k]) for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH,
                                                      cv2.CC_STAT_HEIGHT))
            out.append(RegionScore(int(value), pixels, d, d * pixels / (pixels + size_scale * area),
                                   (x, y, x + w, y + h)))
    out.sort(key=lambda r: -r.weighted)
    return out


def score_labels(labels: np.ndarray, probs: np.ndarray, *, lut: np.ndarray | None = None, key: str = "",
                 tau: float = TAU, border: float = BORDER, size_scale: float = SIZE_SCALE
                 ) -> tuple[ImageReview, np.ndarray]:
    """(the image's review score, its disagreement map H×W float32) for human `labels` (uint8
    H×W) against the model's `probs` (C×H×W over model classes; `lut` maps them to label values)."""
    p = label_probability(probs, labels, lut)
    dmap = disagreement_map(p)
    regions = region_scores(labels, p, tau=tau, border=border, size_scale=size_scale)
    scored = int((~np.isnan(p)).sum())
    worst = regions[0] if regions else None
    review = ImageReview(key, worst.weighted if worst else 0.0, worst, scored,
                         float(dmap.sum() / scored) if scored else 0.0)
    return review, dmap


def rank(reviews: list[ImageReview]) -> list[ImageReview]:
    """Most suspicious first (ties: the larger mean disagreement, then the key)."""
    return sorted(reviews, key=lambda r: (-r.score, -r.mean_disagreement, r.key))


@dataclass
class ReviewQueue:
    """A ranking to step through: `next_key` gives the most suspicious image not yet shown."""

    ranked: list[ImageReview] = field(default_factory=list)
    shown: set[str] = field(default_factory=set)

    def set(self, reviews: list[ImageReview]) -> None:
        self.ranked = rank(reviews)
        self.shown = set()

    def get(self, key: str) -> ImageReview | None:
        return next((r for r in self.ranked if r.key == key), None)

    def position(self, key: str) -> int | None:
        """1-based rank of `key` (None when not ranked)."""
        return next((i + 1 for i, r in enumerate(self.ranked) if r.key == key), None)

    def next_key(self, current: str | None = None, *, min_score: float = 0.0) -> str | None:
        """The most suspicious image not shown yet (not `current`) with a score above `min_score`;
        it counts as shown from now on."""
        for r in self.ranked:
            if r.key not in self.shown and r.key != current and r.score > min_score:
                self.shown.add(r.key)
                return r.key
        return None

    def remaining(self, min_score: float = 0.0) -> int:
        return sum(1 for r in self.ranked if r.key not in self.shown and r.score > min_score)


@dataclass(frozen=True)
class ReviewItem:
    """What the worker needs to score one saved image: its pixels and its saved label map."""

    key: str
    image_path: str
    labels_path: str
    remaps: tuple[np.ndarray, ...]  # the project's label revisions after the file was written

    def read_labels(self) -> np.ndarray:
        from deeplab_studio.storage.labelmaps import read_label_png_at_rev

        return read_label_png_at_rev(self.labels_path, list(self.remaps))


def review_items(project, statuses: tuple[str, ...] = ("edited", "reviewed")) -> list[ReviewItem]:
    """The saved images of `project` (a `storage.project.Project`) whose status is in `statuses`."""
    remaps = tuple(np.array(r) for r in project.label_remaps)
    out = []
    for rec in project.records:
        if str(rec.status) in statuses and project.has_annotation(rec):
            labels_path, _mask = project.annotation_files(rec)
            out.append(ReviewItem(rec.path, str(project.image_path(rec)), str(Path(labels_path)), remaps))
    return out


__all__ = ["BORDER", "SIZE_SCALE", "TAU", "ImageReview", "RegionScore", "ReviewItem", "ReviewQueue",
           "boundary_distance", "disagreement_map", "label_probability", "rank", "region_scores", "review_items",
           "score_labels"]
