"""One thread story: closing the window while an export, a CRF snap, a weights download and a
training run are in flight joins every thread and loses no file; a batch proposal crosses the
thread boundary as an array only and the session merges it (human pixels kept)."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtWidgets import QApplication

from deeplab_studio.gui.workers.jobs import Job
from deeplab_studio.gui.model_tools import model_tools
from deeplab_studio.storage.project import Project, Status
from tests.gui.conftest import controller_with_model
from tests.gui.test_train_dialog import TIMEOUT, make_project, open_window, small_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _python_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive() and not isinstance(t, threading._DummyThread)}


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_closing_joins_export_snap_download_and_training(qtbot, tmp_path, monkeypatch) -> None:
    import deeplab_studio.gui.export.dialog as export_dialog
    import deeplab_studio.ml.checkpoints as checkpoints
    import deeplab_studio.ml.crf as crf
    from deeplab_studio.gui.model.dialog import WeightsDownload

    before = _python_threads()
    window = open_window(qtbot, tmp_path, make_project(tmp_path / "images"))
    tools = model_tools(window)
    controller, training = tools.controller, tools.training
    project = window.project
    statuses = {r.path: r.status for r in project.records}

    # a finished export first: the one in flight at close must leave it exactly as it is
    dest = tmp_path / "export"
    dialog = window.export_voc()  # the window stops and joins it when it closes
    qtbot.addWidget(dialog)
    dialog.destination.setText(str(dest))
    with qtbot.waitSignal(dialog.exportFinished, timeout=TIMEOUT):
        assert dialog.start_export()
    exported = _tree(dest)
    started = {name: threading.Event() for name in ("export", "snap", "download")}

    real_export = export_dialog.export_voc

    def slow_export(project, destination, *, progress, **options):  # stays in its first image until cancelled
        def held(done, total, what):
            progress(done, total, what)
            started["export"].set()
            while True:
                time.sleep(0.01)
                progress(done, total, what)  # raises once the window closes

        return real_export(project, destination, progress=held, **options)

    def slow_refine(image, labels, *, protect=None, params=None, cancel=None):
        started["snap"].set()
        while not cancel():
            time.sleep(0.01)
        raise crf.CRFCancelled("cancelled")

    def slow_fetch(name, progress=None, **_):
        started["download"].set()
        while True:
            time.sleep(0.01)
            progress(1, 100)  # raises once the window closes

    monkeypatch.setattr(export_dialog, "export_voc", slow_export)
    monkeypatch.setattr(crf, "refine_labels", slow_refine)
    monkeypatch.setattr(crf.CRFSession, "refine_labels", lambda self, labels, **kw: slow_refine(self.image, labels, **kw))
    monkeypatch.setattr(checkpoints, "fetch_torchvision_weights", slow_fetch)

    assert dialog.start_export()
    controller.snap_to_edges()
    download = WeightsDownload("deeplabv3_resnet50", controller.jobs, controller)
    train_dialog = training.show_dialog()
    small_run(train_dialog, epochs=200, start="random")
    with qtbot.waitSignal(training.run.progress, timeout=TIMEOUT, check_params_cb=lambda ev: ev.kind == "step"):
        assert train_dialog.start()
    for name, event in started.items():
        assert event.wait(30), f"the {name} job never started"
    assert len(controller.jobs.jobs()) == 2 and dialog.jobs.jobs() and training.run.thread_alive

    ended = []
    download.done.connect(lambda path, error: ended.append(error))
    window.close()  # `closing`: every owner cancels and joins its threads before the session shuts down

    assert controller.jobs.jobs() == [] and dialog.jobs.jobs() == [] and not download.worker.is_running
    assert not training.run.running and not training.run.thread_alive
    assert not controller.client.running
    assert _python_threads() <= before  # no Python thread (export, session I/O, saver) is left
    QApplication.processEvents()  # anything the threads posted before they were joined is delivered now
    assert ended == []  # nothing is reported into the closed window
    assert _tree(dest) == exported  # the earlier export is untouched, no staging folder left
    with Project.open(project.folder) as reopened:  # the window released it; nothing to recover
        assert not reopened.notes
        assert {r.path: r.status for r in reopened.records} == statuses


def test_a_batch_proposal_is_merged_by_the_session_human_pixels_kept(qtbot, tmp_path, tiny_checkpoint,
                                                                      monkeypatch) -> None:
    from deeplab_studio.ml.checkpoints import load_checkpoint
    from deeplab_studio.ml.predictor import Predictor

    assert "project" not in {f.name for f in dataclasses.fields(Job)}  # a job carries arrays and paths only
    folder = make_project(tmp_path / "images", ("unlabeled", "auto", "unlabeled"))
    with Project.open(folder) as project:  # scene1: auto, with human pixels the model must not touch
        rec = project.record("scene1.png")
        labels = np.zeros((64, 64), np.uint8)
        painted = np.zeros((64, 64), bool)
        painted[10:30, 12:40] = True
        labels[painted] = 3
        project.save_annotation(rec, labels, painted, status=Status.AUTO)
    writers: list[str] = []
    real_save = Project.save_annotation

    def recording_save(self, rec, *args, **kwargs):
        writers.append(threading.current_thread().name)
        return real_save(self, rec, *args, **kwargs)

    monkeypatch.setattr(Project, "save_annotation", recording_save)
    window = open_window(qtbot, tmp_path, folder)
    try:
        controller = controller_with_model(qtbot, window, tiny_checkpoint)
        assert window.document.key == "scene0.png"
        stored = []
        controller.proposalApplied.connect(stored.append)
        with qtbot.waitSignal(controller.indexSaved, timeout=TIMEOUT):
            with qtbot.waitSignal(controller.client.batchFinished, timeout=TIMEOUT) as finished:
                controller.auto_segment_all()
        assert finished.args[1:] == [3, 0, False]
        assert sorted(stored) == ["scene0.png", "scene1.png", "scene2.png"]
        merged_by = [w for w in writers if w.startswith("session-io")]  # scene1, scene2
        assert len(merged_by) == 2 and all(w.startswith(("session-io", "autosave", "MainThread")) for w in writers)
        project = window.project
        predictor = Predictor(load_checkpoint(tiny_checkpoint), device="cpu")
        rec = project.record("scene1.png")
        saved, mask = project.load_annotation(rec)
        expected = predictor.predict(project.read_image(rec)).labels
        np.testing.assert_array_equal(mask, painted)
        assert (saved[painted] == 3).all()  # human pixels win
        np.testing.assert_array_equal(saved[~painted], expected[~painted])
        assert project.record("scene2.png").status == Status.AUTO
    finally:
        controller.shutdown()
        window.close()
