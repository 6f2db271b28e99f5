"""Find likely label errors in the real window, with the bundled VOC model on real VOC images whose
official masks were saved as human labels, one of them corrupted."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from scipy import ndimage

from deeplab_studio.gui.model.review import disagreement_overlay
from deeplab_studio.storage.project import Project, Status

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOC = Path(__file__).resolve().parents[1] / "data" / "voc_real"
STEMS = ("2007_000332", "2009_005189", "2011_000006", "2011_000025")  # the two hardest clean ones included
HORSE, COW = 13, 10


def horse(gt: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(gt == HORSE)
    return lab == 1 + int(np.argmax(ndimage.sum(gt == HORSE, lab, range(1, n + 1))))


@pytest.fixture
def folder(tmp_path) -> Path:
    """The images with their official masks saved as edited labels; the horse labelled a cow."""
    d = tmp_path / "images"
    d.mkdir()
    for stem in STEMS:
        src = next((VOC / "images").glob(f"{stem}.*"))
        shutil.copy(src, d / src.name)
    with Project.open(d) as project:
        for rec in project.records:
            gt = np.asarray(Image.open(VOC / "masks" / f"{Path(rec.path).stem}.png")).copy()
            if Path(rec.path).stem == STEMS[0]:
                gt[horse(gt)] = COW
            project.save_annotation(rec, gt, np.ones(gt.shape, bool))
    return d


@pytest.fixture
def controller(voc_controller):
    return voc_controller  # the window is conftest's `window`, over this module's `folder`


def overlay_alpha(window, x: int, y: int) -> int:
    image = window.canvas.extra.qimage
    return -1 if image is None else image.pixelColor(x, y).alpha()


def test_find_rank_step_show_and_accept(qtbot, window, controller) -> None:
    review = controller.review
    assert window.step(2)  # start somewhere else than the corrupted image
    with qtbot.waitSignal(review.ranked, timeout=300000) as got:
        window.registry["find_label_errors"].trigger()
    assert got.args == [len(STEMS)]
    ranked = [Path(r.key).stem for r in review.queue.ranked]
    assert ranked[0] == STEMS[0]  # the horse called a cow comes first
    assert review.queue.ranked[0].worst.value == COW

    qtbot.keyClick(window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    doc = window.document
    assert Path(doc.key).stem == STEMS[0]
    assert "Suspicious 1 of 4" in window.statusBar().currentMessage()
    gt = np.asarray(Image.open(VOC / "masks" / f"{STEMS[0]}.png"))
    ys, xs = np.nonzero(horse(gt))
    inside = ndimage.center_of_mass(horse(gt))
    assert overlay_alpha(window, int(inside[1]), int(inside[0])) > 0  # the cow-labelled horse glows
    assert overlay_alpha(window, 2, 2) == 0  # the sky, labelled background, does not
    assert len(ys) > 1000

    second = review.queue.ranked[1].key
    qtbot.keyClick(window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert window.project.record(doc.key).status == Status.REVIEWED  # accepted
    assert window.document.key == second  # and on to the next suspicious one

    window.registry["show_label_disagreement"].trigger()  # hide it
    controller.refresh_overlay()
    assert overlay_alpha(window, 2, 2) == -1


def test_stopping_keeps_what_was_scored_and_nothing_arrives_after(qtbot, window, controller) -> None:
    review = controller.review
    arrived = []
    controller.client.reviewReady.connect(arrived.append)
    with qtbot.waitSignal(controller.client.reviewReady, timeout=300000):
        batch = review.find()
    with qtbot.waitSignal(review.ranked, timeout=60000):
        review.stop()
    count = len(arrived)
    assert 1 <= count < len(STEMS) and len(review.queue.ranked) == count
    qtbot.waitUntil(lambda: not controller.client.busy, timeout=120000)
    assert len(arrived) == count and review.batch_id is None and batch is not None


def test_the_overlay_marks_strong_disagreement_only() -> None:
    d = np.array([[0, 100, 128, 200, 255]], np.uint8)
    rgba = disagreement_overlay(d, color=(0, 255, 0))
    assert rgba.shape == (1, 5, 4) and (rgba[..., :3] == (0, 255, 0)).all()
    assert list(rgba[0, :, 3]) == sorted(rgba[0, :, 3]) and rgba[0, 0, 3] == 0 and rgba[0, 1, 3] == 0
    assert rgba[0, 4, 3] == 200


def test_the_crf_panel_and_snap_start_at_the_models_card_setting(qtbot, window, controller) -> None:
    """The bundled VOC model's card asks for its own CRF setting: the panel's sliders start there
    (not at the module defaults) and Snap to edges uses it, until the panel applies its own."""
    from deeplab_studio.ml.crf import CRFParams
    from deeplab_studio.models import VOC_MODEL, model_card

    card = model_card(VOC_MODEL)["crf"]["params"]
    assert controller.client.model.crf_params == CRFParams(**card)
    controller.show_crf_panel()
    panel = controller.crf_panel
    assert panel.params() == CRFParams(**card) != CRFParams()
    assert controller.proposal_options().snap_params == CRFParams(**card)
    assert controller.proposal_options().crf_params is None  # proposals: the worker's own setting
    panel.sliders["iterations"].setValue(4)
    with qtbot.waitSignal(panel.previewReady, timeout=60000):
        panel.run_preview()
    assert panel.apply()
    assert controller.proposal_options().snap_params.iterations == 4  # the panel's, from the card's
    assert controller.proposal_options().snap_params.bilateral_sxy == card["bilateral_sxy"]
