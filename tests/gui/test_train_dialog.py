"""Model → Train on my labels… through the real window: runs, chart, activation, cancel, errors.

CPU, one torch thread, 64×64 generated scenes, 48-px crops, a couple of epochs: seconds per run.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QSettings

from deeplab_studio.core.scenes import SCENE_CLASSES, generate_scene, scene_labelset
from tests.gui.conftest import controller_with_model
from deeplab_studio.gui.model_tools import attach_training_tools
from deeplab_studio.gui.training.settings import INIT_ACTIVE
from deeplab_studio.gui.training.worker import training_counts
from deeplab_studio.gui.training.chart import TrainingChart, TrainingCurves, nice_ceiling
from deeplab_studio.ml.arch_names import ARCH_NAMES
from deeplab_studio.storage.project import Project, Status

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCH = "deeplabv3plus_mobilenet"
CLASSES = list(SCENE_CLASSES)
# 3 edited + 2 reviewed train; the auto proposal and the unlabeled image must never be used
STATUSES = ("edited", "reviewed", "auto", "edited", "unlabeled", "reviewed", "edited")
TIMEOUT = 180_000


def make_project(folder: Path, statuses=STATUSES) -> Path:
    folder.mkdir()
    truth = {}
    for i, _ in enumerate(statuses):
        image, labels = generate_scene(64, 64, seed=(31, i))
        Image.fromarray(image).save(folder / f"scene{i}.png")
        truth[f"scene{i}.png"] = labels
    project = Project.open(folder)
    project.set_labelset(scene_labelset())
    for i, status in enumerate(statuses):
        rec = project.record(f"scene{i}.png")
        labels = truth[rec.path]
        if status == "unlabeled":
            continue
        if status == "auto":  # a poor model proposal: all background, nothing painted
            project.save_annotation(rec, np.zeros_like(labels), np.zeros(labels.shape, bool), status=Status.AUTO)
        else:
            project.save_annotation(rec, labels, np.ones(labels.shape, bool), status=Status(status))
    project.close()  # the window opens it next
    return folder


def open_window(qtbot, tmp_path: Path, folder: Path):
    from deeplab_studio.gui.window.main_window import MainWindow

    w = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    w.resize(900, 700)
    w.show()
    assert w.open_folder(folder)
    return w


@pytest.fixture
def window(qtbot, tmp_path):
    w = open_window(qtbot, tmp_path, make_project(tmp_path / "images"))
    yield w
    w.close()


@pytest.fixture
def tools(qtbot, window, tiny_checkpoint):
    c = controller_with_model(qtbot, window, tiny_checkpoint)
    t = attach_training_tools(window)
    yield t
    t.shutdown()
    c.shutdown()


def small_run(dialog, *, epochs: int, start: str | None = None) -> None:
    if start is not None:
        dialog.settings.start_combo.setCurrentIndex(dialog.settings.start_combo.findData(start))
    dialog.settings.arch_combo.setCurrentText(ARCH)
    dialog.settings.epochs.setValue(epochs)
    dialog.settings.batch.setValue(2)
    dialog.settings.crop.setValue(48)
    dialog.settings.device.setCurrentText("cpu")


def run_cancelled_after_first_epoch(qtbot, tools, dialog):
    """Start the dialog's run, press Cancel once its first epoch ended; the TrainResult."""
    def cancel_after_first_epoch(ev) -> None:
        if ev.kind == "epoch" and not tools.run.cancel_requested:
            dialog.cancel_button.click()

    tools.run.progress.connect(cancel_after_first_epoch)
    try:
        with qtbot.waitSignal(tools.run.finished, timeout=TIMEOUT) as blocker:
            assert dialog.start()
    finally:
        tools.run.progress.disconnect(cancel_after_first_epoch)
    return blocker.args[0]


def test_attach_is_idempotent_and_menu_has_the_actions(tools, window) -> None:
    assert attach_training_tools(window) is tools
    texts = [a.text() for a in window.model_menu.actions()]
    assert texts.count("Train on my labels…") == 1
    assert "Re-propose unreviewed auto images" in texts
    assert texts.index("Train on my labels…") > texts.index("Open model…")  # after the controller's


def test_attaching_does_not_import_torch(tmp_path) -> None:
    code = ("import sys; from PySide6.QtWidgets import QApplication; app = QApplication([]); "
            "from deeplab_studio.gui.window.main_window import MainWindow; from deeplab_studio.gui.model_tools import "
            "attach_training_tools; w = MainWindow(); t = attach_training_tools(w); t.show_dialog(); "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_architectures_match_the_zoo() -> None:
    from deeplab_studio.ml.zoo import list_archs

    assert list(ARCH_NAMES) == list_archs()


def test_dialog_opens_while_the_worker_is_still_importing_the_zoo(qtbot, window, monkeypatch) -> None:
    """Found by opening Train… right after start-up: the inference worker thread was half-way
    through importing ml.zoo (no `list_archs` yet, registry half filled) and the dialog raised.
    The dialog lists the torch-free ml.arch_names, so a half-imported zoo is never asked."""
    import importlib.machinery
    import types

    half = types.ModuleType("deeplab_studio.ml.zoo")
    half.__spec__ = importlib.machinery.ModuleSpec("deeplab_studio.ml.zoo", None)
    half.__spec__._initializing = True  # what the import system sets while the module body runs
    monkeypatch.setitem(sys.modules, "deeplab_studio.ml.zoo", half)
    dialog = attach_training_tools(window).show_dialog()
    combo = dialog.settings.arch_combo
    assert [combo.itemText(i) for i in range(combo.count())] == list(ARCH_NAMES)


def test_only_edited_and_reviewed_images_are_counted(tools, window) -> None:
    counts = training_counts(window.project)
    assert counts["trainable"] == 5 and counts["auto"] == 1 and counts["unlabeled"] == 1
    dialog = tools.show_dialog()
    text = dialog.data_label.text()
    assert "<b>5</b> images will train: 3 edited, 2 reviewed" in text
    assert "1 unreviewed auto proposal" in text and "1 unlabeled" in text
    assert dialog.start_button.isEnabled()
    assert dialog.settings.start_combo.currentData() == INIT_ACTIVE  # fine-tune the active model by default
    assert not dialog.settings.arch_combo.isEnabled() and dialog.settings.arch_combo.currentText() == ARCH
    out = Path(dialog.settings.out_edit.text())
    assert out.parent == Path(window.project.data_dir) / "models" and out.suffix == ".safetensors"


def test_a_run_updates_the_chart_and_its_model_becomes_active(qtbot, tools, window, tiny_checkpoint) -> None:
    from deeplab_studio.ml.checkpoints import load_checkpoint
    from deeplab_studio.ml.predictor import Predictor

    controller = tools.controller
    with qtbot.waitSignal(controller.proposalApplied, timeout=TIMEOUT):  # a proposal of the previous model
        controller.auto_segment()
    assert window.document.key in controller.uncertainty.mean
    dialog = tools.show_dialog()
    small_run(dialog, epochs=2, start=INIT_ACTIVE)
    out = Path(dialog.settings.out_edit.text())
    events = []
    tools.run.progress.connect(events.append)
    with qtbot.waitSignal(tools.run.finished, timeout=TIMEOUT) as blocker:
        dialog.start_button.click()
        assert not dialog.settings.isEnabled() and dialog.cancel_button.isEnabled()
        assert tools.status_button.isVisible()  # the status bar shows the run while the dialog is hidden
    result = blocker.args[0]
    assert result.saved and not result.cancelled and result.epochs_done == 2
    kinds = [e.kind for e in events]
    assert kinds.count("epoch") == 2 and "step" in kinds and kinds[-1] == "done"
    curves = dialog.chart.curves
    assert len(curves.loss) == kinds.count("step") and all(math.isfinite(v) for _, v in curves.loss)
    assert [e for _, e, _ in curves.miou] == [1, 2] and len(curves.epoch_ends) == 2
    assert curves.total_steps == result.steps
    assert not tools.status_button.isVisible()
    assert dialog.progress.value() == result.steps
    assert "val mIoU" in dialog.status_label.text() or "Finished" in dialog.status_label.text()

    # the new model becomes the active one; the previous one stays selectable
    qtbot.waitUntil(lambda: controller.client.model is not None and controller.client.model.path == str(out),
                    timeout=60000)
    qtbot.waitUntil(lambda: dialog.repropose_button.isEnabled(), timeout=10000)
    assert tools.previous_model == str(tiny_checkpoint)
    assert controller.recent_models()[:2] == [str(out), str(tiny_checkpoint)]
    assert dialog.back_button.isEnabled() and "Active model" in dialog.result_label.text()
    assert "best val mIoU" in dialog.result_label.text()
    assert controller.uncertainty.mean == {}  # the previous model's uncertainty no longer ranks images
    assert dialog.start_button.isEnabled() and dialog.settings.isEnabled()
    summary = load_checkpoint(out).meta["training"]
    assert summary["train_images"] + summary["val_images"] == 5  # never the auto or unlabeled image
    assert not result.last_path.exists()  # a finished run leaves no resume state behind

    # one click re-proposes the unreviewed auto images with the new model; human labels stay
    project = window.project
    human = {r.path: project.load_annotation(r)[0].copy() for r in project.records if r.status in ("edited", "reviewed")}
    with qtbot.waitSignal(controller.indexSaved, timeout=TIMEOUT):  # the session has stored the proposal
        with qtbot.waitSignal(controller.client.batchFinished, timeout=TIMEOUT) as batch:
            dialog.repropose_button.click()
    assert batch.args[1] == 1 and batch.args[2] == 0  # the one auto image; not the unlabeled one
    for key, labels in human.items():
        assert np.array_equal(project.load_annotation(project.record(key))[0], labels)
    # "next most uncertain" ranks by the new model's confidence
    predictor = Predictor(load_checkpoint(out), device="cpu")
    rec = project.record("scene2.png")
    conf = np.clip(predictor.predict(project.read_image(rec)).confidence * 255.0 + 0.5, 0, 255).astype(np.uint8)
    assert controller.uncertainty.mean["scene2.png"] == pytest.approx(1 - conf.mean() / 255.0, abs=1e-6)
    assert controller.next_most_uncertain() == "scene2.png"

    # switching back to the previous model is one click
    dialog.back_button.click()
    qtbot.waitUntil(lambda: controller.client.model.path == str(tiny_checkpoint), timeout=60000)


def test_cancel_keeps_the_best_checkpoint(qtbot, tools, window, tiny_checkpoint) -> None:
    from deeplab_studio.ml.checkpoints import load_checkpoint

    controller = tools.controller
    dialog = tools.show_dialog()
    small_run(dialog, epochs=200, start="random")
    dialog.settings.painted_only.setChecked(True)
    assert dialog.request().edited_pixels_only and dialog.request().init == "random"
    assert dialog.settings.arch_combo.isEnabled()
    out = Path(dialog.settings.out_edit.text())
    result = run_cancelled_after_first_epoch(qtbot, tools, dialog)
    assert result.cancelled and result.saved and 1 <= result.epochs_done < 200
    assert out.is_file() and load_checkpoint(out).num_classes == len(CLASSES)
    assert result.last_path.is_file()  # the resume state of a cancelled run stays
    assert controller.client.model.path == str(tiny_checkpoint)  # not activated by itself
    assert "best model so far is kept" in dialog.result_label.text()
    assert dialog.use_button.isEnabled() and not dialog.cancel_button.isEnabled()
    dialog.use_button.click()
    qtbot.waitUntil(lambda: controller.client.model.path == str(out), timeout=60000)


def test_resume_continues_a_cancelled_run_to_its_end(qtbot, tools, window) -> None:
    dialog = tools.show_dialog()
    small_run(dialog, epochs=3, start="random")
    out = Path(dialog.settings.out_edit.text())
    assert not dialog.resume_button.isEnabled()  # nothing to resume yet
    first = run_cancelled_after_first_epoch(qtbot, tools, dialog)
    assert first.cancelled and first.epochs_done == 1 and first.last_path.is_file()
    assert dialog.resume_button.isEnabled()
    dialog.settings.epochs.setValue(50)  # the dialog's settings now: Resume keeps the cancelled run's
    steps = []
    tools.run.progress.connect(lambda ev: steps.append(ev.step) if ev.kind == "step" else None)
    with qtbot.waitSignal(tools.run.finished, timeout=TIMEOUT) as blocker:
        dialog.resume_button.click()
    done = blocker.args[0]
    assert not done.cancelled and done.epochs_done == 3 and done.out_path == out
    assert done.steps == 3 * first.steps and min(steps) > first.steps  # went on from the saved step
    assert not first.last_path.exists() and not dialog.resume_button.isEnabled()


def test_no_labelled_images_gives_a_message_and_the_app_goes_on(qtbot, tmp_path, tiny_checkpoint) -> None:
    w = open_window(qtbot, tmp_path, make_project(tmp_path / "only_auto", ("auto", "unlabeled", "auto")))
    try:
        t = attach_training_tools(w)
        dialog = t.show_dialog()
        assert "needs at least 2 edited or reviewed images" in dialog.data_label.text()
        assert not dialog.start_button.isEnabled()
        assert dialog.settings.start_combo.findData("active") < 0  # no model loaded: no "active" entry
        assert dialog.settings.start_combo.currentData() == "deeplabv3_mobilenetv2_voc"  # the bundled VOC model first
        dialog.settings.start_combo.setCurrentIndex(dialog.settings.start_combo.findData("random"))
        # forced anyway, the worker's error comes back as a message in the window
        shown = []
        w.messageShown.connect(shown.append)
        with qtbot.waitSignal(t.run.failed, timeout=TIMEOUT) as blocker:
            assert dialog.start()
        assert "at least 2 edited or reviewed images" in blocker.args[0]
        assert any("Training failed" in m and "at least 2" in m for m in shown)
        assert "Training failed" in dialog.result_label.text()
        assert not t.run.running and dialog.settings.isEnabled()
        assert w.step(+1) and w.document is not None  # the window still works
    finally:
        w.close()


def test_a_broken_start_checkpoint_fails_cleanly(qtbot, tools, window, tmp_path) -> None:
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a checkpoint")
    dialog = tools.show_dialog()
    small_run(dialog, epochs=1, start="random")
    req = dialog.request()
    req.init = str(bad)
    req.arch = None
    with qtbot.waitSignal(tools.run.failed, timeout=TIMEOUT) as blocker:
        assert tools.run.start(req)
    assert "broken.safetensors" in blocker.args[0]
    assert "broken.safetensors" in window.banner.label.text()


def test_closing_the_window_cancels_and_joins_the_run(qtbot, tools, window) -> None:
    dialog = tools.show_dialog()
    small_run(dialog, epochs=200, start="random")
    with qtbot.waitSignal(tools.run.progress, timeout=TIMEOUT, check_params_cb=lambda ev: ev.kind == "step"):
        assert dialog.start()
    assert tools.run.running
    key = window.document.key
    assert window.step(+1) and window.document.key != key  # the window works while it trains
    window.close()
    assert not tools.run.running


def test_chart_curves_and_drawing(qtbot) -> None:
    curves = TrainingCurves(smoothing=0.5)
    curves.clear(total_steps=10, epochs=2)
    curves.add_loss(1, 2.0)
    curves.add_loss(2, float("nan"))  # ignored
    curves.add_loss(3, 1.0)
    curves.add_epoch(5, 1, 0.4)
    curves.add_epoch(10, 2, None)  # no validation score: an epoch mark, no point
    assert curves.loss == [(1, 2.0), (3, 1.0)] and curves.smoothed == [(1, 2.0), (3, 1.5)]
    assert curves.miou == [(5, 1, 0.4)] and curves.epoch_ends == [5, 10] and curves.x_max() == 10
    assert nice_ceiling(1.7) == 2 and nice_ceiling(0.23) == 0.25 and nice_ceiling(3.0) == 5
    assert curves.loss_max() == 2.0  # 4 ticks of 0.5
    low = TrainingCurves()
    low.add_loss(1, 0.155)
    assert low.loss_max() == pytest.approx(0.2)  # 4 ticks of 0.05, not 0.0625

    chart = TrainingChart()
    qtbot.addWidget(chart)
    chart.resize(400, 220)
    empty = chart.grab().toImage()
    chart.curves = curves
    drawn = chart.grab().toImage()
    assert not empty.isNull() and drawn != empty


def test_opening_another_folder_cancels_the_run_and_the_dialog_follows(qtbot, tools, window, tmp_path) -> None:
    dialog = tools.show_dialog()
    small_run(dialog, epochs=200, start="random")
    with qtbot.waitSignal(tools.run.progress, timeout=TIMEOUT, check_params_cb=lambda ev: ev.kind == "step"):
        assert dialog.start()
    other = make_project(tmp_path / "other", ("edited", "reviewed", "auto"))
    with qtbot.waitSignal(tools.run.finished, timeout=TIMEOUT) as blocker:
        assert window.open_folder(other)
        assert "another folder was opened" in window.statusBar().currentMessage()
    assert blocker.args[0].cancelled and not tools.run.running
    qtbot.waitUntil(lambda: dialog.start_button.isEnabled(), timeout=10000)
    assert "<b>2</b> images will train: 1 edited, 1 reviewed" in dialog.data_label.text()
    assert Path(dialog.settings.out_edit.text()).parent == Path(window.project.data_dir) / "models"
