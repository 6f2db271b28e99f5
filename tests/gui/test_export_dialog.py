"""File → Export VOC… produces a dataset torchvision's VOCSegmentation loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtWidgets import QMessageBox

from deeplab_studio.gui.export.dialog import ExportDialog
from deeplab_studio.storage.project import Project
from tests.gui.conftest import click, make_folder


def test_export_dialog_writes_a_dataset_torchvision_loads(qtbot, window, tmp_path):
    window.set_brush_size(9)
    for i in range(3):
        window.set_active_class(i + 1)
        click(qtbot, window, 20 + 5 * i, 20)
        window.step(+1)
    window.export_voc()
    dlg = _shown_export_dialog(window)
    qtbot.addWidget(dlg)
    dlg.destination.setText(str(tmp_path / "export"))
    dlg.val_fraction.setValue(0.34)
    dlg.seed.setValue(3)
    with qtbot.waitSignal(dlg.exportFinished, timeout=30000) as sig:
        assert dlg.start_export()
    summary = sig.args[0]
    assert len(summary.ids) == 3 and len(summary.val) == 1
    assert "pixels per class" in dlg.status.report.toPlainText() and dlg.open_button.isEnabled()

    tv = pytest.importorskip("torchvision")
    ds = tv.datasets.VOCSegmentation(str(tmp_path / "export"), year="2012", image_set="trainval", download=False)
    assert len(ds) == 3
    img, target = ds[0]
    labels = np.asarray(target)
    assert img.size == (64, 48) and labels.shape == (48, 64)
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    assert len(tv.datasets.VOCSegmentation(str(tmp_path / "export"), year="2012", image_set="val")) == 1


def test_export_into_a_foreign_folder_fails_in_the_dialog(qtbot, window, tmp_path):
    click(qtbot, window, 10, 10)
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    window.export_voc()
    dlg = _shown_export_dialog(window)
    qtbot.addWidget(dlg)
    dlg.destination.setText(str(dest))
    dlg.devkit.setChecked(False)
    with qtbot.waitSignal(dlg.exportFailed, timeout=30000) as sig:
        dlg.start_export()
    assert "not empty" in sig.args[0] and "not empty" in dlg.status.message.text()
    assert (dest / "notes.txt").read_text() == "mine"


def _shown_export_dialog(window) -> ExportDialog:
    """The export dialog File → Export VOC… opened (a child of the window)."""
    dialogs = [d for d in window.findChildren(ExportDialog) if d.isVisible()]
    assert len(dialogs) == 1
    return dialogs[0]


def _annotated_project(folder: Path, n: int) -> Project:
    make_folder(folder, n=n)
    proj = Project.open(folder)
    for rec in proj.records:
        proj.save_annotation(rec, np.ones((rec.height, rec.width), np.uint8), np.ones((rec.height, rec.width), bool))
    return proj


def _export(qtbot, dlg: ExportDialog) -> object:
    with qtbot.waitSignal(dlg.exportFinished, timeout=30000) as sig:
        assert dlg.start_export()
    return sig.args[0]


def test_destination_is_remembered_per_project(qtbot, settings, tmp_path):
    a = _annotated_project(tmp_path / "a", 3)
    b = _annotated_project(tmp_path / "b", 1)
    dlg = ExportDialog(a, settings)
    qtbot.addWidget(dlg)
    assert dlg.destination.text() == str(tmp_path / "a_voc")
    dlg.destination.setText(str(tmp_path / "exports" / "shared"))
    _export(qtbot, dlg)
    dlg_b = ExportDialog(b, settings)  # another project: its own default, never a's folder
    qtbot.addWidget(dlg_b)
    assert dlg_b.destination.text() == str(tmp_path / "b_voc")
    dlg_a = ExportDialog(a, settings)
    qtbot.addWidget(dlg_a)
    assert dlg_a.destination.text() == str(tmp_path / "exports" / "shared")


def test_replacing_another_projects_export_asks_first(qtbot, settings, tmp_path, monkeypatch):
    a = _annotated_project(tmp_path / "a", 3)
    b = _annotated_project(tmp_path / "b", 1)
    dest = tmp_path / "shared"
    jpegs = dest / "VOCdevkit" / "VOC2012" / "JPEGImages"
    dlg = ExportDialog(a, settings)
    qtbot.addWidget(dlg)
    dlg.destination.setText(str(dest))
    assert len(_export(qtbot, dlg).ids) == 3
    asked = []

    def answer(button):
        def question(parent, title, text, *args, **kwargs):
            asked.append(text)
            return button
        return question

    dlg_b = ExportDialog(b, settings)
    qtbot.addWidget(dlg_b)
    dlg_b.destination.setText(str(dest))
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.No))
    assert not dlg_b.start_export() and dlg_b.job is None
    assert len(asked) == 1 and str(a.folder) in asked[0] and "another project" in asked[0]
    assert "cancelled" in dlg_b.status.message.text() and len(list(jpegs.iterdir())) == 3  # a's export kept
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Yes))
    assert _export(qtbot, dlg_b).ids == ["img_0"] and len(asked) == 2
    assert [p.name for p in jpegs.iterdir()] == ["img_0.jpg"]
    _export(qtbot, dlg_b)  # its own export now: replaced without a question
    assert len(asked) == 2
