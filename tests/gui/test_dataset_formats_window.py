"""File → Export Dataset… in every format, and File → Import Dataset… back into a window."""

from __future__ import annotations

import numpy as np
import pytest

from deeplab_studio.storage.formats import reader
from deeplab_studio.storage.formats.class_names import plan_classes
from tests.gui.conftest import click, make_folder, new_window


def _paint_three(qtbot, window) -> dict[str, np.ndarray]:
    window.set_brush_size(9)
    for i in range(3):
        window.set_active_class(i + 1)
        click(qtbot, window, 20 + 5 * i, 20)
        window.step(+1)
    window.session.close_image()
    return {r.path: window.project.load_annotation(r)[0] for r in window.project.records}


@pytest.mark.parametrize("fmt", ["labelme", "masks", "cvat-mask", "coco"])
def test_export_dialog_writes_each_format_and_its_reader_gives_the_maps_back(qtbot, window, tmp_path, fmt):
    painted = _paint_three(qtbot, window)
    dlg = window.export_voc()
    qtbot.addWidget(dlg)
    dlg.format.setCurrentIndex(dlg.format.findData(fmt))
    assert not dlg.val_fraction.isEnabled()  # VOC-only options are off for other formats
    dlg.destination.setText(str(tmp_path / fmt))
    with qtbot.waitSignal(dlg.exportFinished, timeout=60000) as sig:
        assert dlg.start_export()
    result = sig.args[0]
    assert result.format == fmt and len(result.keys) == 3
    assert "pixels per class" in dlg.status.report.toPlainText()
    back = reader(fmt).read(tmp_path / fmt)
    lut = plan_classes(back.class_names, back.colors, window.project.labels, adopt=False).lut  # by name
    got = {item.key: lut[item.read_labels()] for item in back.items}
    assert len(got) == 3
    for key, labels in painted.items():
        stem = key.rsplit(".", 1)[0]
        match = next(v for k, v in got.items() if k.rsplit(".", 1)[0].endswith(stem))
        assert np.array_equal(match, labels), key


def test_import_dialog_brings_a_dataset_into_the_open_project(qtbot, settings, tmp_path):
    source = new_window(qtbot, settings, make_folder(tmp_path / "labelled"))
    painted = _paint_three(qtbot, source)
    dlg = source.export_voc()
    qtbot.addWidget(dlg)
    dlg.format.setCurrentIndex(dlg.format.findData("masks"))
    dlg.destination.setText(str(tmp_path / "dataset"))
    with qtbot.waitSignal(dlg.exportFinished, timeout=60000):
        assert dlg.start_export()
    source.close()

    empty = tmp_path / "new_project"
    empty.mkdir()
    window = new_window(qtbot, settings, empty)
    imp = window.import_dataset()
    qtbot.addWidget(imp)
    imp.source.setText(str(tmp_path / "dataset"))  # format: detected
    with qtbot.waitSignal(imp.importFinished, timeout=60000) as sig:
        assert imp.start_import()
    assert "images/ + masks/" in imp.status.message.text() or sig.args[0].format == "masks"
    assert sig.args[0].imported == 3 and "imported: 3" in imp.status.report.toPlainText()
    # the window reopened its project: the images are listed, writable, with the imported maps
    assert len(window.project.records) == 3 and not window.project.read_only
    assert window.document is not None
    for rec in window.project.records:
        stem = rec.path.rsplit(".", 1)[0]
        want = next(v for k, v in painted.items() if k.rsplit(".", 1)[0] == stem)
        assert np.array_equal(window.project.load_annotation(rec)[0], want)
    window.close()


def test_a_failed_import_says_why_and_the_project_reopens_as_it_was(qtbot, window, tmp_path):
    before = [r.path for r in window.project.records]
    imp = window.import_dataset()
    qtbot.addWidget(imp)
    (tmp_path / "nothing").mkdir()
    imp.source.setText(str(tmp_path / "nothing"))
    with qtbot.waitSignal(imp.importFailed, timeout=10000) as sig:
        assert not imp.start_import()  # nothing to detect: refused before the project is released
    assert "dataset this app reads" in sig.args[0]
    imp.format.setCurrentIndex(imp.format.findData("voc"))
    with qtbot.waitSignal(imp.importFailed, timeout=30000):
        imp.start_import()
    assert [r.path for r in window.project.records] == before and not window.project.read_only
    assert window.document is not None
