"""Two windows on one project, and a window killed right after a stroke: nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from deeplab_studio.storage.project import Project, Status

from tests.gui.conftest import drag, new_window

ROOT = Path(__file__).resolve().parents[2]


def test_a_second_window_opens_read_only_and_cannot_overwrite(qtbot, settings, folder: Path) -> None:
    w1 = new_window(qtbot, settings, folder)
    w2 = new_window(qtbot, settings, folder)
    assert not w1.project.read_only and w2.project.read_only
    assert "Read-only" in w2.banner.label.text() and f"pid {os.getpid()}" in w2.banner.label.text()
    assert "(read-only)" in w2.windowTitle()
    before = w2.document.labels.copy()
    drag(qtbot, w2, [(5, 5), (30, 20)])  # no stroke starts in a read-only window
    assert np.array_equal(w2.document.labels, before) and w2.undo.active.count() == 0
    assert not w2.apply_labels(np.ones_like(before), status=Status.AUTO)
    labels = w2.labelset
    from deeplab_studio.core.labels import LabelSet

    assert not w2.set_labelset(LabelSet(list(labels.names[:3]), list(labels.colors[:3])))  # refused, message shown
    assert "read-only" in w2.banner.label.text()
    # the writer goes on and its work is on disk; the reader's close writes nothing
    w1.set_active_class(7)
    drag(qtbot, w1, [(5, 5), (30, 20)])
    painted = w1.document.labels.copy()
    assert w1.autosave.flush()
    w2.close()
    w1.close()
    with Project.open(folder) as proj:  # both windows released it
        assert len(proj.labels) == 21
        np.testing.assert_array_equal(proj.load_annotation(proj.record("img_0.png"))[0], painted)


def test_a_window_killed_after_a_stroke_keeps_the_stroke(tmp_path: Path, folder: Path) -> None:
    """A real window in a child process paints one stroke and is SIGKILLed before its autosave."""
    code = textwrap.dedent(f"""
        import time
        from PySide6.QtCore import QPointF, QSettings, Qt
        from PySide6.QtTest import QTest
        from PySide6.QtWidgets import QApplication
        from deeplab_studio.gui.window.main_window import MainWindow
        app = QApplication([])
        w = MainWindow(QSettings({str(tmp_path / "s.ini")!r}, QSettings.Format.IniFormat))
        w.resize(900, 700)
        w.show()
        assert w.open_folder({str(folder)!r})
        w.set_active_class(5)
        vp = w.canvas.viewport()
        pos = lambda x, y: w.canvas.mapFromScene(QPointF(x + 0.5, y + 0.5))
        QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pos(10, 10))
        QTest.mouseMove(vp, pos(40, 12))
        QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pos(40, 12))
        assert w.autosave.dirty()  # not saved yet: the debounce has not fired
        print(int((w.document.labels == 5).sum()), flush=True)
        time.sleep(60)  # the event loop never runs again: no autosave
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), QT_QPA_PLATFORM="offscreen")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    painted = int(child.stdout.readline())
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert painted > 50
    with Project.open(folder) as proj:
        rec = proj.record("img_0.png")
        labels, mask = proj.load_annotation(rec)
        assert int((labels == 5).sum()) == painted and mask.sum() == painted
        assert rec.status == Status.EDITED and any("recovered" in n for n in proj.notes)


def test_a_file_name_that_is_not_utf8_opens_in_the_window(qtbot, settings, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.png")
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(folder / name)
    Image.fromarray(np.full((48, 64, 3), 10, np.uint8)).save(folder / "z.png")
    w = new_window(qtbot, settings, folder)
    assert w.document is not None and w.document.key == name
    drag(qtbot, w, [(5, 5), (30, 20)])
    assert w.autosave.flush()
    assert w.open_image(1) and w.open_image(0)
    assert w.document.edit_mask.any()
    w.close()
