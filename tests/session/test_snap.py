"""Snap after a stroke: a brush stroke refined by the dense CRF in a band around it, one undo step."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from deeplab_studio.core.labels import voc_colormap
from deeplab_studio.ml.crf import refine
from deeplab_studio.session.document import AnnotationDocument
from deeplab_studio.session.history import PatchHistory
from deeplab_studio.session.snap import StrokeSnapper, stroke_core
from deeplab_studio.session.tools import Mods, ToolBox, ToolContext

VOC = Path(__file__).resolve().parents[1] / "data" / "voc_real"


class Workspace:
    """A document, its real tools and a Qt-free undo history (what the session wires up)."""

    def __init__(self, image: np.ndarray, labels: np.ndarray | None = None, *, snap: bool = True) -> None:
        self.doc = AnnotationDocument(image, labels)
        self.history = PatchHistory(lambda: self.doc)
        self.history.stack_for("img")
        self.texts: list[str] = []
        self.box = ToolBox(ToolContext(document=lambda: self.doc, commit=self.commit))
        self.box.ctx.snap = StrokeSnapper(refine) if snap else None

    def commit(self, text, lp, ep) -> None:
        self.texts.append(text)
        self.history.push(text, lp, ep)

    def stroke(self, points, cls: int, radius: int, tool: str = "brush") -> None:
        self.box.ctx.active_class, self.box.ctx.brush_size = cls, 2 * radius + 1
        self.box.select(tool)
        t = self.box.tool_for(Mods())
        t.press(points[0], Mods())
        for p in points[1:]:
            t.move(p, Mods())
        t.release(points[-1], Mods())


def square_scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy bright 30×30 square on a dark noisy background: (image, square mask)."""
    rng = np.random.default_rng(seed)
    img = np.full((120, 160, 3), 50, np.int16)
    img[40:70, 60:90] = 200
    img += rng.integers(-8, 9, img.shape, dtype=np.int16)
    sq = np.zeros((120, 160), bool)
    sq[40:70, 60:90] = True
    return np.clip(img, 0, 255).astype(np.uint8), sq


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def test_a_stroke_that_overshoots_a_square_snaps_to_it_in_one_undo_step():
    img, sq = square_scene()
    raw = Workspace(img, snap=False)
    raw.stroke([(70.5, 52.5), (78.5, 52.5)], 2, 9)  # crosses the top edge by 3 px
    ws = Workspace(img)
    ws.stroke([(70.5, 52.5), (78.5, 52.5)], 2, 9)
    assert iou(raw.doc.labels == 2, sq) < 0.6
    assert iou(ws.doc.labels == 2, sq) > 0.95  # measured: 1.0
    assert np.array_equal(ws.doc.edit_mask, ws.doc.labels == 2)  # the snapped stroke is human
    assert ws.texts == ["Brush stroke (snapped)"] and ws.history.active.index() == 1
    snapped = ws.doc.labels.copy()
    ws.history.undo()
    assert not ws.doc.labels.any() and not ws.doc.edit_mask.any()
    ws.history.redo()
    assert np.array_equal(ws.doc.labels, snapped)


def test_human_pixels_stay_the_core_stays_and_only_the_strokes_extent_moves():
    img, sq = square_scene(1)
    before = np.zeros(sq.shape, np.uint8)
    before[sq] = 5  # a (wrong) proposal: the model said class 5 on the square
    ws = Workspace(img, before.copy(), snap=False)
    ws.stroke([(85.5, 45.5), (85.5, 65.5)], 3, 3)  # a human stroke of class 3 first (not snapped)
    human_before = ws.doc.edit_mask.copy()
    labels_before = ws.doc.labels.copy()
    ws.box.ctx.snap = StrokeSnapper(refine)
    ws.stroke([(66.5, 50.5), (72.5, 58.5)], 2, 8)
    labels, edit = ws.doc.labels, ws.doc.edit_mask
    assert np.array_equal(labels[human_before], labels_before[human_before])  # earlier human pixels kept
    painted = np.zeros(sq.shape, np.uint8)
    cv2.line(painted, (66, 50), (72, 58), 1, 17)
    core = stroke_core(painted.astype(bool) & (labels_before != 2), 8)
    assert core.sum() > 50 and (labels[core] == 2).all()  # the stroke's core is kept
    moved = labels != labels_before
    assert moved.any() and (labels[moved] == 2).all()  # pixels change only to the stroke's class
    assert np.array_equal(edit, human_before | (labels == 2))
    assert (labels[sq & ~human_before] == 2).mean() > 0.95  # and it took the square (the model's 5)


def test_the_eraser_is_not_snapped():
    img, _ = square_scene()
    plain = Workspace(img, np.full((120, 160), 4, np.uint8), snap=False)
    snapped = Workspace(img, np.full((120, 160), 4, np.uint8))
    for ws in (plain, snapped):
        ws.stroke([(70.5, 52.5), (78.5, 52.5)], 0, 9, "eraser")
    assert np.array_equal(plain.doc.labels, snapped.doc.labels) and snapped.texts == ["Eraser stroke"]


def vainf_prediction(name: str) -> np.ndarray:
    """The R101 prediction of a voc_real val image as class indices (colours → VOC indices)."""
    rgb = np.asarray(Image.open(VOC / "vainf_r101_pred" / f"{name}.png").convert("RGB")).astype(np.int32)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    cmap = voc_colormap(256).astype(np.int32)
    lut = {int((c[0] << 16) | (c[1] << 8) | c[2]): k for k, c in enumerate(cmap[:21])}
    return np.vectorize(lambda v: lut.get(int(v), 0), otypes=[np.uint8])(code)


@pytest.mark.slow
def test_on_real_predictions_a_snapped_stroke_fixes_more_pixels_than_the_stroke():
    """The simulated annotator's first brush stamp on each real R101 prediction (largest error
    region, its most interior pixel, the largest disk that fits): snapped, it fixes more pixels."""
    gained = 0
    names = sorted(p.stem for p in (VOC / "vainf_r101_pred").glob("*.png"))
    assert len(names) == 7
    for name in names:
        img = np.asarray(Image.open(VOC / "images" / f"{name}.png").convert("RGB"))
        gt = np.asarray(Image.open(VOC / "masks" / f"{name}.png"))
        pred = vainf_prediction(name)
        err = ((pred != gt) & (gt != 255)).astype(np.uint8)
        n, comp, stats, _ = cv2.connectedComponentsWithStats(err, connectivity=4)
        region = comp == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        dist = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        radius = min(50, max(0, int(np.ceil(dist[y, x])) - 1))
        right = []
        for snap in (False, True):
            ws = Workspace(img, pred.copy(), snap=snap)
            ws.stroke([(x + 0.5, y + 0.5)], int(gt[y, x]), radius)
            right.append(int(((ws.doc.labels == gt) & (gt != 255)).sum()))
        gained += right[1] - right[0]
    assert gained > 0  # measured: +835 pixels over the 7 stamps (one of them -29)


def test_the_session_setting_turns_snapping_on_and_off(tmp_path):
    from deeplab_studio.session.annotation_session import AnnotationSession

    img, sq = square_scene()
    (tmp_path / "imgs").mkdir()
    Image.fromarray(img).save(tmp_path / "imgs" / "square.png")
    session = AnnotationSession()
    try:
        assert session.open_folder(tmp_path / "imgs")
        session.set_active_class(2)
        session.tools.ctx.brush_size = 19
        for refiner in (refine, None):
            session.set_snap_strokes(refiner)
            tool = session.tools.tool_for(Mods())
            tool.press((70.5, 52.5), Mods())
            tool.release((78.5, 52.5), Mods())
            snapped = iou(session.document.labels == 2, sq) > 0.95
            assert snapped == (refiner is not None)
            assert session.history.active.entries[-1][0] == ("Brush stroke (snapped)" if snapped else "Brush stroke")
            session.undo()
    finally:
        session.close_image()
        session.shutdown()
