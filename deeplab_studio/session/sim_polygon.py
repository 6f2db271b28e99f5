"""The `polygon` toolset's plan: the fewest polygon vertices that reach the target, no model.

A labelme-style user outlines each object (here: every 8-connected component of a
non-background class with at least `MIN_OUTLINE` pixels) with one polygon along its outer
ground-truth contour (holes are not drawn); polygons are drawn largest first, each filled with
its class over the background-only start (later ones paint over earlier ones, as the polygon
tool does). Each outline has a ladder of Douglas–Peucker simplifications of its contour
(`cv2.approxPolyDP`, tolerances `TOLERANCES` px, vertices at pixel centres). The plan starts with
nothing drawn and repeatedly takes the step (one outline up to any finer rung, or drawn at all)
with the largest mIoU gain per added vertex until the target is reached, then drops rungs that
are not needed; a plan with one tolerance for every outline is also tried and the one with
fewer vertices wins. Rasterising is `core.fill.polygon_mask`, the polygon tool's own function.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from deeplab_studio.core.fill import polygon_mask
from deeplab_studio.session.sim_rules import confusion, gt_classes, miou_from_confusion

TOLERANCES = (64.0, 48.0, 32.0, 24.0, 16.0, 12.0, 8.0, 6.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.75, 0.5)
MIN_OUTLINE = 10


class Rung(NamedTuple):
    """One simplification of an outline: its tolerance, vertices (k×2) and mask over its box."""

    tol: float
    points: np.ndarray
    box: tuple[int, int, int, int]
    mask: np.ndarray


class Outline(NamedTuple):
    cls: int
    rungs: list[Rung]  # coarse to fine, each with more vertices than the one before


def outlines(gt: np.ndarray, min_area: int = MIN_OUTLINE) -> list[Outline]:
    """Every outline worth drawing, largest object first."""
    h, w = gt.shape
    found: list[tuple[int, Outline]] = []
    for cls in gt_classes(gt):
        if cls == 0:
            continue
        n, comp, stats, _ = cv2.connectedComponentsWithStats((gt == cls).astype(np.uint8), connectivity=8)
        for k in range(1, n):
            if stats[k, cv2.CC_STAT_AREA] < min_area:
                continue
            contours, _ = cv2.findContours((comp == k).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            contour = max(contours, key=len)
            rungs: list[Rung] = []
            for tol in TOLERANCES:
                pts = cv2.approxPolyDP(contour, tol, True).reshape(-1, 2).astype(np.float64) + 0.5
                if len(pts) < 3 or (rungs and len(pts) <= len(rungs[-1].points)):
                    continue
                x0, y0 = max(int(pts[:, 0].min()), 0), max(int(pts[:, 1].min()), 0)
                x1, y1 = min(int(pts[:, 0].max()) + 1, w), min(int(pts[:, 1].max()) + 1, h)
                rungs.append(Rung(tol, pts, (x0, y0, x1, y1), polygon_mask((h, w), pts)[y0:y1, x0:x1]))
            if rungs:
                found.append((int(stats[k, cv2.CC_STAT_AREA]), Outline(int(cls), rungs)))
    found.sort(key=lambda f: -f[0])
    return [o for _, o in found]


class Canvas:
    """The label map a plan draws, with its confusion matrix kept up to date box by box."""

    def __init__(self, gt: np.ndarray, shapes: list[Outline]) -> None:
        self.gt, self.shapes = gt, shapes
        self.classes = gt_classes(gt)
        self.levels = [-1] * len(shapes)  # rung per outline, -1 = not drawn
        self.labels = np.zeros(gt.shape, np.uint8)
        self.cm = confusion(self.labels, gt)

    def vertices(self, levels: list[int] | None = None) -> int:
        levels = self.levels if levels is None else levels
        return sum(len(o.rungs[lv].points) for o, lv in zip(self.shapes, levels) if lv >= 0)

    def miou(self) -> float:
        return miou_from_confusion(self.cm, self.classes)

    def set(self, i: int, level: int) -> None:
        """Draw outline `i` at rung `level` (-1: not at all); re-renders only the affected box."""
        boxes = [self.shapes[i].rungs[lv].box for lv in (self.levels[i], level) if lv >= 0]
        self.levels[i] = level
        if not boxes:
            return
        x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        sub = np.zeros((y1 - y0, x1 - x0), np.uint8)
        for o, lv in zip(self.shapes, self.levels):
            if lv < 0:
                continue
            (bx0, by0, bx1, by1), mask = o.rungs[lv].box, o.rungs[lv].mask
            ix0, iy0, ix1, iy1 = max(bx0, x0), max(by0, y0), min(bx1, x1), min(by1, y1)
            if ix1 > ix0 and iy1 > iy0:
                m = mask[iy0 - by0:iy1 - by0, ix0 - bx0:ix1 - bx0]
                sub[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0][m] = o.cls
        gt = self.gt[y0:y1, x0:x1]
        self.cm = self.cm - confusion(self.labels[y0:y1, x0:x1], gt) + confusion(sub, gt)
        self.labels[y0:y1, x0:x1] = sub

    def set_all(self, levels: list[int]) -> None:
        for i, lv in enumerate(levels):
            self.set(i, lv)

    def trial(self, i: int, level: int) -> float:
        old = self.levels[i]
        self.set(i, level)
        score = self.miou()
        self.set(i, old)
        return score


def _greedy(canvas: Canvas, target: float, max_vertices: int) -> list[int]:
    """Adds the rung with the best mIoU gain per vertex until the target; returns the last
    levels within `max_vertices` (the canvas ends at the greedy's final state)."""
    within = list(canvas.levels)
    while canvas.miou() < target:
        cur, best = canvas.miou(), None
        for i, o in enumerate(canvas.shapes):
            have = len(o.rungs[canvas.levels[i]].points) if canvas.levels[i] >= 0 else 0
            for lv in range(canvas.levels[i] + 1, len(o.rungs)):
                gain = canvas.trial(i, lv) - cur
                ratio = gain / (len(o.rungs[lv].points) - have)
                if gain > 1e-12 and (best is None or ratio > best[0]):
                    best = (ratio, i, lv)
        if best is None:
            break
        canvas.set(best[1], best[2])
        if canvas.vertices() <= max_vertices:
            within = list(canvas.levels)
    return within


def _trim(canvas: Canvas, target: float) -> None:
    """Coarsen outlines (the most vertices first) while the target stays reached."""
    order = sorted(range(len(canvas.shapes)), key=lambda i: -canvas.vertices(
        [lv if j == i else -1 for j, lv in enumerate(canvas.levels)]))
    for i in order:
        while canvas.levels[i] >= 0 and canvas.trial(i, canvas.levels[i] - 1) >= target:
            canvas.set(i, canvas.levels[i] - 1)


def _uniform(gt: np.ndarray, shapes: list[Outline], target: float) -> list[int] | None:
    """The fewest-vertex plan with one tolerance for every outline that reaches the target."""
    canvas, best = Canvas(gt, shapes), None
    for tol in TOLERANCES:
        levels = [max([k for k, r in enumerate(o.rungs) if r.tol >= tol], default=-1) for o in shapes]
        canvas.set_all(levels)
        if canvas.miou() >= target and (best is None or canvas.vertices() < canvas.vertices(best)):
            best = levels
    return best


def plan(gt: np.ndarray, target: float, max_vertices: int) -> tuple[list[tuple[int, np.ndarray]], float, bool]:
    """([(class, vertices)] in drawing order, the plan's mIoU, whether it reached the target
    within `max_vertices`). When it cannot, the plan is the greedy's last state within that many
    vertices."""
    shapes = outlines(gt)
    canvas = Canvas(gt, shapes)
    levels = _greedy(canvas, target, max_vertices)
    if canvas.miou() >= target:
        _trim(canvas, target)
        uniform = _uniform(gt, shapes, target)
        best = uniform if uniform is not None and canvas.vertices(uniform) < canvas.vertices() else canvas.levels
        if canvas.vertices(best) <= max_vertices:
            levels = list(best)
    final = Canvas(gt, shapes)
    final.set_all(levels)
    drawn = [(o.cls, o.rungs[lv].points) for o, lv in zip(shapes, levels) if lv >= 0]
    return drawn, final.miou(), final.miou() >= target
