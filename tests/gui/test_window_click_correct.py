"""Click to correct the model in the real window, with the bundled VOC model on real VOC images:
Ctrl+click with the active class, one undo step, human pixels kept, stale answers dropped."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt

from deeplab_studio.core.brush import paint_disk
from tests.gui.conftest import click

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOC = Path(__file__).resolve().parents[1] / "data" / "voc_real"
BUS_AND_CARS, BOTTLE_IN_HAND = "2011_000025", "2011_000003"
CAR, BUS = 7, 6


@pytest.fixture
def folder(tmp_path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    for i, stem in enumerate((BUS_AND_CARS, BOTTLE_IN_HAND)):  # the bus first
        shutil.copy(VOC / "images" / f"{stem}.jpg", d / f"{i}_{stem}.jpg")
    return d


@pytest.fixture
def controller(voc_controller):
    return voc_controller  # the window is conftest's `window`, over this module's `folder`


def gt_of(key: str) -> np.ndarray:
    return np.asarray(Image.open(VOC / "masks" / f"{Path(key).stem[2:]}.png"))


def iou(gt: np.ndarray, labels: np.ndarray, cls: int) -> float:
    valid = gt != 255
    return float(((gt == cls) & (labels == cls) & valid).sum() / (((gt == cls) | (labels == cls)) & valid).sum())


def test_ctrl_click_with_the_car_class_fixes_the_cars_in_one_undo_step(qtbot, window, controller) -> None:
    doc = window.document
    assert Path(doc.key).stem == f"0_{BUS_AND_CARS}"
    gt = gt_of(doc.key)
    with qtbot.waitSignal(controller.proposalApplied, timeout=120000):
        controller.auto_segment()
    proposal = doc.labels.copy()
    paint_disk(doc.labels, (30.0, 30.0), 8, BUS, edit_mask=doc.edit_mask)  # a human stroke: kept
    doc.notify((0, 0, doc.width, doc.height))
    human, painted = doc.edit_mask.copy(), doc.labels.copy()
    steps = window.undo.active.count()

    window.session.set_active_class(CAR)
    with qtbot.waitSignal(controller.click_correct.applied, timeout=120000):
        click(qtbot, window, 455, 227, Qt.KeyboardModifier.ControlModifier)  # inside the larger car
    assert controller.click_correct.clicks == [(455, 227, CAR)]
    assert doc.labels[227, 455] == CAR
    assert iou(gt, doc.labels, CAR) > iou(gt, proposal, CAR) + 0.3  # measured 0.11 -> 0.69
    np.testing.assert_array_equal(doc.labels[human], painted[human])
    np.testing.assert_array_equal(doc.edit_mask, human)  # a correction paints no human pixel
    assert window.undo.active.count() == steps + 1
    assert "Corrected with 1 click" in window.statusBar().currentMessage()
    window.undo.active.undo()
    np.testing.assert_array_equal(doc.labels, painted)

    assert window.step(1)  # the clicks belong to the image they were made on
    assert controller.click_correct.clicks == []


def test_plain_clicks_correct_while_the_mode_is_on_and_a_newer_click_supersedes(qtbot, window, controller) -> None:
    doc = window.document
    window.session.set_active_class(CAR)
    controller.click_correct.act_mode.setChecked(True)
    applied = []
    controller.click_correct.applied.connect(applied.append)
    click(qtbot, window, 455, 227)  # the first click: queued, or computing the image's features
    first = controller.click_correct.rid
    second = controller.click_correct.add_click(20, 20, 0)  # a background click right after
    qtbot.waitUntil(lambda: bool(applied), timeout=120000)
    qtbot.waitUntil(lambda: not controller.client.busy, timeout=120000)
    assert applied == [doc.key] and window.undo.active.count() == 1  # only the answer to both clicks lands
    assert controller.click_correct.clicks == [(455, 227, CAR), (20, 20, 0)] and second != first
    assert doc.labels[227, 455] == CAR and doc.labels[20, 20] == 0
    assert not doc.edit_mask.any()
    controller.click_correct.act_mode.setChecked(False)
    before = doc.labels.copy()
    window.session.set_active_class(BUS)
    window.registry["tool_brush"].trigger()
    click(qtbot, window, 100, 100)  # mode off: a plain click is the brush's again
    assert doc.edit_mask[100, 100] and not controller.client.busy
    assert (doc.labels != before).any()


def test_an_answer_for_an_image_the_user_left_is_dropped(qtbot, window, controller) -> None:
    dropped = []
    controller.client.dropped.connect(dropped.append)
    applied = []
    controller.click_correct.applied.connect(applied.append)
    window.session.set_active_class(CAR)
    controller.click_correct.add_click(455, 227)
    assert window.step(1)
    qtbot.waitUntil(lambda: not controller.client.busy, timeout=120000)
    assert applied == [] and controller.click_correct.clicks == []
    assert not window.document.labels.any() and window.undo.active.count() == 0


def test_a_class_the_model_does_not_know_is_refused_without_a_request(qtbot, window, controller) -> None:
    window.session.add_class("crack")  # a project class no VOC model class maps to
    crack = len(window.project.labels.names) - 1
    controller.update_mapping()
    assert controller.click_correct.add_click(10, 10, crack) is None
    assert "no class" in window.statusBar().currentMessage()
    assert not controller.client.busy and controller.click_correct.clicks == []
