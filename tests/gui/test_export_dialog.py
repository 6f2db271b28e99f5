"""File → Export VOC… produces a dataset torchvision's VOCSegmentation loads."""

from __future__ import annotations

import numpy as np
import pytest

from tests.gui.conftest import click


def test_export_dialog_writes_a_dataset_torchvision_loads(qtbot, window, tmp_path):
    window.set_brush_size(9)
    for i in range(3):
        window.set_active_class(i + 1)
        click(qtbot, window, 20 + 5 * i, 20)
        window.step(+1)
    window.export_voc()
    dlg = window._export_dialog
    qtbot.addWidget(dlg)
    dlg.destination.setText(str(tmp_path / "export"))
    dlg.val_fraction.setValue(0.34)
    dlg.seed.setValue(3)
    with qtbot.waitSignal(dlg.exportFinished, timeout=30000) as sig:
        assert dlg.start_export()
    summary = sig.args[0]
    assert len(summary.ids) == 3 and len(summary.val) == 1
    assert "pixels per class" in dlg.report.toPlainText() and dlg.open_button.isEnabled()

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
    dlg = window._export_dialog
    qtbot.addWidget(dlg)
    dlg.destination.setText(str(dest))
    dlg.devkit.setChecked(False)
    with qtbot.waitSignal(dlg.exportFailed, timeout=30000) as sig:
        dlg.start_export()
    assert "not empty" in sig.args[0] and "not empty" in dlg.message.text()
    assert (dest / "notes.txt").read_text() == "mine"
