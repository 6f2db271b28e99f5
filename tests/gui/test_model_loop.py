"""Model in the loop through the real main window: Ctrl+R, batches, CRF snap, undo, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt

from deeplab_studio.core.brush import paint_disk
from deeplab_studio.core.labels import IGNORE, LabelSet
from deeplab_studio.core.scenes import generate_scene
from deeplab_studio.gui.model.class_mapping import map_classes, unmatched_note
from deeplab_studio.gui.model_tools import attach_model_tools
from tests.gui.conftest import controller_with_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCH = "deeplabv3plus_mobilenet"
CLASSES = ["background", "disk", "square", "triangle"]


@pytest.fixture
def folder(tmp_path) -> Path:
    from PIL import Image

    d = tmp_path / "images"
    d.mkdir()
    for i in range(3):
        Image.fromarray(generate_scene(64, 64, seed=(7, i))[0]).save(d / f"scene{i}.png")
    return d


@pytest.fixture
def window(qtbot, tmp_path, folder):
    from deeplab_studio.gui.window.main_window import MainWindow

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings)
    qtbot.addWidget(w)
    w.show()
    assert w.open_folder(folder)
    yield w
    w.close()


@pytest.fixture
def controller(qtbot, window, tiny_checkpoint):
    c = controller_with_model(qtbot, window, tiny_checkpoint)
    yield c
    c.shutdown()


def _expected(tiny_checkpoint, image) -> np.ndarray:
    from deeplab_studio.ml.checkpoints import load_checkpoint
    from deeplab_studio.ml.predictor import Predictor

    return Predictor(load_checkpoint(tiny_checkpoint), device="cpu").predict(image).labels


def test_a_default_project_takes_the_model_classes(controller, window) -> None:
    assert window.project.labels.names == CLASSES
    assert controller.mapping.is_identity()
    text, tooltip = controller.model_status
    assert text == "tiny · CPU" and ARCH in tooltip


def test_ctrl_r_proposal_lands_on_the_canvas_and_undoes(qtbot, window, controller, tiny_checkpoint) -> None:
    doc = window.document
    before = doc.labels.copy()
    with qtbot.waitSignal(controller.proposalApplied, timeout=60000):
        qtbot.keyClick(window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    expected = _expected(tiny_checkpoint, doc.image)
    np.testing.assert_array_equal(doc.labels, expected)
    np.testing.assert_array_equal(window.canvas.overlay.pixels(), expected)
    assert controller.uncertainty.map(doc.key) is not None
    stack = window.undo.active
    assert stack.count() == 1
    stack.undo()
    np.testing.assert_array_equal(doc.labels, before)
    np.testing.assert_array_equal(window.canvas.overlay.pixels(), before)
    stack.redo()
    np.testing.assert_array_equal(doc.labels, expected)
    assert window.autosave.flush()
    assert window.project.record(doc.key).status.value == "auto"


def test_human_pixels_survive_a_rerun_and_a_crf_snap(qtbot, window, controller, tiny_checkpoint) -> None:
    doc = window.document
    expected = _expected(tiny_checkpoint, doc.image)
    human = int((np.bincount(expected.ravel(), minlength=4)[:4]).argmin())  # a class the model rarely says
    paint_disk(doc.labels, (32.0, 32.0), 9, human, edit_mask=doc.edit_mask)
    paint_disk(doc.labels, (8.0, 8.0), 4, IGNORE, edit_mask=doc.edit_mask)
    doc.notify((0, 0, 64, 64))
    painted, mask = doc.labels.copy(), doc.edit_mask.copy()
    assert mask.sum() > 200
    controller.act_crf.setChecked(True)  # proposals refined by the CRF, human pixels still kept
    with qtbot.waitSignal(controller.proposalApplied, timeout=60000):
        controller.auto_segment()
    np.testing.assert_array_equal(doc.labels[mask], painted[mask])
    assert (doc.labels[~mask] != painted[~mask]).any() or (expected[~mask] == painted[~mask]).all()
    with qtbot.waitSignal(controller.snapApplied, timeout=60000):
        qtbot.keyClick(window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert "Snap" in window.statusBar().currentMessage()
    np.testing.assert_array_equal(doc.labels[mask], painted[mask])
    np.testing.assert_array_equal(doc.edit_mask, mask)


def test_a_result_for_an_image_the_user_left_is_dropped(qtbot, window, controller) -> None:
    first = window.document.key
    dropped_or_cancelled = []
    controller.client.dropped.connect(dropped_or_cancelled.append)
    applied = []
    controller.proposalApplied.connect(applied.append)
    controller.auto_segment()
    assert window.step(1)  # move on before the answer
    qtbot.waitUntil(lambda: not controller.client.busy, timeout=60000)
    assert applied == []
    assert not window.document.labels.any() and not window.undo.active.count()
    rec = window.project.record(first)
    assert rec.status.value == "unlabeled"


def test_auto_segment_all_and_next_most_uncertain(qtbot, window, controller, tiny_checkpoint) -> None:
    assert controller.link.batch_items(("auto",)) == [] and len(controller.link.batch_items()) == 3
    with qtbot.waitSignal(controller.indexSaved, timeout=120000):
        with qtbot.waitSignal(controller.client.batchFinished, timeout=120000) as blocker:
            controller.act_segment_all.trigger()  # the menu's path: QAction.triggered(checked) must not leak in
    _, done, failed, cancelled = blocker.args
    assert (done, failed, cancelled) == (3, 0, False)
    assert window.autosave.flush()
    project = window.project
    for rec in project.records:
        assert rec.status.value == "auto"
        labels, mask = project.load_annotation(rec)
        np.testing.assert_array_equal(labels, _expected(tiny_checkpoint, project.read_image(rec)))
    from deeplab_studio.storage.project import Project

    reopened = Project.open(window.project.folder, read_only=True)  # the window still has it open
    assert [r.status.value for r in reopened.records] == ["auto"] * 3
    current = window.document.key
    means = controller.uncertainty.mean
    others = [k for k in means if k != current]
    target = max(others, key=lambda k: means[k])
    controller.act_next_uncertain.trigger()
    assert window.document.key == target and target in window.statusBar().currentMessage()
    controller.act_uncertainty.setChecked(True)
    from deeplab_studio.gui.model.uncertainty import OVERLAY_COLORS, contrasting_color

    colour = contrasting_color(window.project.labels.colors)
    assert OVERLAY_COLORS[colour] in window.statusBar().currentMessage()  # the user is told what it means
    assert window.canvas.extra.isVisible() or window.canvas.extra.qimage is not None
    assert len(controller.link.batch_items(("auto",))) == 3
    other = tiny_checkpoint.parent / "other.safetensors"
    other.write_bytes(tiny_checkpoint.read_bytes())
    with qtbot.waitSignal(controller.client.modelLoaded, timeout=60000):
        controller.load_model(str(other), "cpu")
    assert controller.next_most_uncertain() is None  # old model's scores are not ranked with the new one


def test_batch_status_is_throttled_but_shows_the_first_and_last_update(qtbot, window) -> None:
    from deeplab_studio.gui.model.batch_status import BatchStatus
    from deeplab_studio.gui.window.link import WindowLink

    said, cancelled = [], []
    status = BatchStatus(WindowLink(window), lambda: cancelled.append(1), said.append, min_interval_s=3600)
    status.start(10)
    assert status.bar.isVisible() and status.cancel_button.isVisible()
    shown = [status.update(i, 10, 5.0, (10 - i) / 5.0) for i in range(1, 11)]
    assert shown == [True] + [False] * 8 + [True]
    assert said == ["Batch: 5.0 images/s, ETA 2 s", "Batch: 5.0 images/s, ETA 0 s"]
    assert status.bar.value() == 10 and status.bar.text() == "10 / 10"
    status.cancel_button.click()
    assert cancelled == [1]
    status.finish()
    assert not status.bar.isVisible() and not status.cancel_button.isVisible()


def test_cancel_button_stops_a_tiled_ctrl_r(qtbot, window, tiny_checkpoint) -> None:
    """A large image (here: 64 px in 32-px tiles) shows Cancel; pressing it stops between tiles."""
    import threading

    c = attach_model_tools(window)
    c.act_crf.setChecked(False)
    with qtbot.waitSignal(c.client.modelLoaded, timeout=60000):
        c.client.load_model(str(tiny_checkpoint), "cpu", tile_size=32, tile_overlap=8)
    gate, tiles = threading.Event(), []

    def hold(rid, done, total):  # worker thread, between tiles: wait until the user has clicked
        tiles.append(done)
        if done == 1:
            gate.wait(30)

    c.client.worker.tileProgress.connect(hold, Qt.ConnectionType.DirectConnection)
    doc = window.document
    before = doc.labels.copy()
    try:
        with qtbot.waitSignal(c.client.tileProgress, timeout=60000):
            c.auto_segment()
        assert c.act_cancel.isEnabled() and c.batch_status.cancel_button.isVisible()
        assert "tile 2 of" in window.statusBar().currentMessage()
        with qtbot.waitSignal(c.client.requestCancelled, timeout=60000):
            c.batch_status.cancel_button.click()
            gate.set()
    finally:
        gate.set()
    qtbot.waitUntil(lambda: not c.client.busy, timeout=60000)
    assert tiles == [1] and window.undo.active.count() == 0
    np.testing.assert_array_equal(doc.labels, before)
    assert not c.act_cancel.isEnabled() and not c.batch_status.cancel_button.isVisible()
    with qtbot.waitSignal(c.proposalApplied, timeout=60000):  # and the next Ctrl+R runs to the end
        c.auto_segment()
    assert not c.batch_status.cancel_button.isVisible() and window.undo.active.count() == 1
    c.shutdown()


def test_a_corrupt_checkpoint_shows_a_message_and_the_app_goes_on(qtbot, window, tmp_path, tiny_checkpoint) -> None:
    c = attach_model_tools(window)
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    with qtbot.waitSignal(window.messageShown, timeout=60000) as blocker:
        c.load_model(str(bad), "cpu")
    assert "corrupt.pth" in blocker.args[0]
    assert c.client.model is None
    with qtbot.waitSignal(c.client.modelLoaded, timeout=60000):
        c.load_model(str(tiny_checkpoint), "cpu")
    with qtbot.waitSignal(c.proposalApplied, timeout=60000):
        c.auto_segment()
    c.shutdown()


def test_class_mapping_by_name() -> None:
    project = LabelSet(["background", "Triangle", "cat"])
    m = map_classes(CLASSES, project)
    assert m.targets == [0, 0, 0, 1] and m.unmatched == ["disk", "square"]
    lut = map_classes(CLASSES, project, unmatched=IGNORE).lut()
    np.testing.assert_array_equal(lut[[0, 1, 2, 3]], [0, IGNORE, IGNORE, 1])
    voc = map_classes(None, LabelSet.voc(), num_classes=21)
    assert voc.is_identity()
    aliased = map_classes(["background", "tv", "airplane"], LabelSet.voc())
    assert aliased.targets == [0, 20, 1]
    assert unmatched_note(voc) is None and unmatched_note(aliased) is None
    note = unmatched_note(map_classes(CLASSES, project, unmatched=IGNORE))
    assert "2 of the model's 4" in note and "disk, square" in note and "ignore (255)" in note


def test_proposals_follow_the_mapping_into_a_project_with_its_own_classes(qtbot, window, tiny_checkpoint) -> None:
    assert window.set_labelset(LabelSet(["background", "triangle", "square"]))
    c = attach_model_tools(window)
    c.act_crf.setChecked(False)
    with qtbot.waitSignal(c.client.modelLoaded, timeout=60000):
        c.load_model(str(tiny_checkpoint), "cpu")
    assert window.project.labels.names == ["background", "triangle", "square"]  # not replaced
    assert c.mapping.targets == [0, 0, 2, 1]
    assert window.banner.isVisible() and "disk" in window.banner.text() and "1 of the model's 4" in window.banner.text()
    doc = window.document
    with qtbot.waitSignal(c.proposalApplied, timeout=60000):
        c.auto_segment()
    expected = np.array([0, 0, 2, 1], np.uint8)[_expected(tiny_checkpoint, doc.image)]
    np.testing.assert_array_equal(doc.labels, expected)
    c.shutdown()


def test_crf_panel_preview_apply_revert(qtbot, window, controller) -> None:
    from deeplab_studio.gui.model.crf_panel import CRFPanel

    doc = window.document
    yy, xx = np.mgrid[:64, :64]
    blocky = np.where((xx // 16 + yy // 16) % 2 == 0, 1, 0).astype(np.uint8)  # blocky map vs. round scene objects
    assert window.apply_labels(blocky, text="test")
    panel = CRFPanel(controller)
    qtbot.addWidget(panel)
    with qtbot.waitSignal(panel.previewReady, timeout=60000) as blocker:
        panel.sliders["iterations"].setValue(3)
    assert blocker.args[0] == int((panel.preview != doc.labels).sum())
    np.testing.assert_array_equal(doc.labels, blocky)  # a preview changes nothing
    assert (window.canvas.extra.qimage is not None) == bool(blocker.args[0])  # changes shown on the canvas
    n = window.undo.active.count()
    assert blocker.args[0] > 0  # a blocky map on a real scene: the CRF moves its borders
    assert panel.apply()
    assert window.undo.active.count() == n + 1
    assert controller.crf_params.iterations == 3
    assert window.canvas.extra.qimage is None  # the preview layer is gone once applied
    panel.sliders["iterations"].setValue(9)
    panel.revert()
    assert panel.params().iterations == 3 and panel.preview is None


def test_crf_panel_previews_when_opened_and_follows_the_image(qtbot, window, controller) -> None:
    first = window.document.key
    controller.show_crf_panel()
    panel = controller.crf_panel
    with qtbot.waitSignal(panel.previewReady, timeout=60000):  # no slider moved: opening the panel is enough
        pass  # (the preview timer only runs once the event loop does, inside this wait)
    assert panel.preview_key == first
    with qtbot.waitSignal(panel.previewReady, timeout=60000):
        assert window.step(1)
        assert panel.preview is None and not panel.apply_button.isEnabled()  # the old preview is void
    assert panel.preview_key == window.document.key != first
    doc = window.document
    yy, xx = np.mgrid[:64, :64]
    blocky = np.where((xx // 16 + yy // 16) % 2 == 0, 1, 0).astype(np.uint8)
    with qtbot.waitSignal(panel.previewReady, timeout=60000) as blocker:  # live: new labels, new preview
        assert window.apply_labels(blocky, text="test")
        assert panel.preview is None and not panel.apply_button.isEnabled()  # the old one is stale
    np.testing.assert_array_equal(panel.preview_base, blocky)  # computed on the new labels
    assert blocker.args[0] > 0
    with controller.crf_sessions().lend(doc.image) as session:  # the image's kernels are kept...
        assert session.matches(doc.image)
        misses = session.misses
    with qtbot.waitSignal(panel.previewReady, timeout=60000):
        panel.sliders["iterations"].setValue(4)
    with controller.crf_sessions().lend(doc.image) as again:  # ...and serve a slider's preview
        assert again is session and session.misses == misses and session.hits > 0
    assert panel.apply()
    assert not panel.preview_pending() and "Applied" in panel.info.text()  # its own write starts no run
    panel.parentWidget().close()  # a hidden panel computes nothing on the next image change
    assert window.step(1) and panel.preview is None and not panel.preview_pending()


def test_the_next_image_is_precomputed_and_used_by_ctrl_r(qtbot, window, controller, tiny_checkpoint) -> None:
    controller.act_precompute.setChecked(True)
    with qtbot.waitSignal(controller.proposalApplied, timeout=60000):
        controller.auto_segment()
    qtbot.waitUntil(lambda: not controller.client.busy, timeout=60000)
    assert window.step(1)
    key = window.document.key
    assert key in controller.proposals.prefetched
    applied = []
    controller.proposalApplied.connect(applied.append)
    assert controller.auto_segment() is not None
    assert applied == [key]  # applied at once, no round trip to the worker
    np.testing.assert_array_equal(window.document.labels, _expected(tiny_checkpoint, window.document.image))


def test_closing_the_window_during_a_batch_cancels_and_joins(qtbot, window, controller) -> None:
    with qtbot.waitSignal(controller.client.batchProgress, timeout=60000):
        controller.auto_segment_all()
    assert controller.client.running
    project = window.project
    window.close()  # emits `closing`: the controller cancels the batch and joins the worker thread
    assert not controller.client.running
    from deeplab_studio.storage.project import Project

    with Project.open(project.folder) as reopened:  # the window released it; nothing to recover
        assert not reopened.notes
        saved = {r.path: r.status.value for r in reopened.records}
    for rec in project.records:
        assert saved[rec.path] == ("auto" if project.has_annotation(rec) else "unlabeled")
    assert any(v == "auto" for v in saved.values())
