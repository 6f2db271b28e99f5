"""The window's work flow: shortcuts, image switching, autosave and reopen, errors, classes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from deeplab_studio.gui.window.shortcuts import ACTIONS, GESTURES
from deeplab_studio.storage.project import Project, Status
from tests.gui.conftest import click, drag, make_folder, new_window


def key(qtbot, window, k, mod=Qt.KeyboardModifier.NoModifier):
    qtbot.keyClick(window, k, mod)


def test_tool_shortcuts(qtbot, window):
    for k, name in ((Qt.Key.Key_E, "eraser"), (Qt.Key.Key_F, "fill"), (Qt.Key.Key_P, "polygon"),
                    (Qt.Key.Key_I, "picker"), (Qt.Key.Key_B, "brush")):
        key(qtbot, window, k)
        assert window.toolbox.active_name == name
        assert window.registry[f"tool_{name}"].isChecked()
    size = window.toolbox.ctx.brush_size
    key(qtbot, window, Qt.Key.Key_BracketRight)
    assert window.toolbox.ctx.brush_size > size and window.tool_controls.size_slider.value() == window.toolbox.ctx.brush_size
    key(qtbot, window, Qt.Key.Key_BracketLeft)
    key(qtbot, window, Qt.Key.Key_BracketLeft)
    assert window.toolbox.ctx.brush_size < size
    key(qtbot, window, Qt.Key.Key_4)
    assert window.toolbox.ctx.active_class == 4 and window.class_panel.active == 4
    key(qtbot, window, Qt.Key.Key_T)
    assert not window.canvas.overlay.isVisible()
    key(qtbot, window, Qt.Key.Key_T)
    assert window.canvas.overlay.isVisible()


def test_image_navigation_shortcuts(qtbot, window):
    assert window.index == 0
    key(qtbot, window, Qt.Key.Key_D)
    assert window.index == 1 and window.document.key == "img_1.png"
    key(qtbot, window, Qt.Key.Key_PageDown)
    assert window.index == 2
    key(qtbot, window, Qt.Key.Key_D)  # at the end: stays
    assert window.index == 2
    key(qtbot, window, Qt.Key.Key_A)
    key(qtbot, window, Qt.Key.Key_PageUp)
    assert window.index == 0


def test_mark_reviewed_moves_to_next_not_reviewed(qtbot, window):
    click(qtbot, window, 10, 10)
    key(qtbot, window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    proj = window.project
    assert proj.records[0].status == Status.REVIEWED and window.index == 1
    assert "1 / 3 reviewed" in window.image_panel.counts.text()
    key(qtbot, window, Qt.Key.Key_D, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert window.index == 2
    key(qtbot, window, Qt.Key.Key_D, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert window.index == 1  # wraps around, skipping the reviewed image 0
    window.image_panel.status_filter.setCurrentIndex(4)  # reviewed only
    assert window.image_panel.visible_indices() == [0]


def test_autosave_writes_and_a_new_window_reopens_the_work(qtbot, settings, folder, tmp_path):
    w = new_window(qtbot, settings, folder)
    w.set_brush_size(5)
    w.set_active_class(8)
    drag(qtbot, w, [(10, 10), (30, 20)])
    labels, mask = w.document.labels.copy(), w.document.edit_mask.copy()
    assert w.isWindowModified()
    with qtbot.waitSignal(w.autosave.saved, timeout=5000):
        pass  # the debounced save fires by itself
    assert not w.isWindowModified()
    proj = Project.open(folder, read_only=True)  # the window still has it
    saved_labels, saved_mask = proj.load_annotation(proj.records[0])
    assert np.array_equal(saved_labels, labels) and np.array_equal(saved_mask, mask)
    assert proj.records[0].status == Status.EDITED
    # a change, then closing at once: the close saves it
    click(qtbot, w, 50, 40)
    labels = w.document.labels.copy()
    w.close()
    w2 = new_window(qtbot, settings, folder)
    assert w2.document.key == "img_0.png"
    assert np.array_equal(w2.document.labels, labels)
    assert w2.image_panel.list.item(0).toolTip().endswith("edited")
    # switching images saves first, and the undo history survives the round trip
    click(qtbot, w2, 40, 5)
    w2.step(+1)
    w2.step(-1)
    assert w2.document.labels[5, 40] == w2.toolbox.ctx.active_class != labels[5, 40]
    w2.undo.group.undo()
    assert np.array_equal(w2.document.labels, labels)
    w2.close()


def test_unreadable_image_shows_a_message_and_the_app_goes_on(qtbot, settings, folder):
    bad = folder / "img_1.png"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])  # header intact (the folder scan accepts it), pixel data cut
    window = new_window(qtbot, settings, folder)
    assert not window.open_image(1)
    assert "img_1.png" in window.banner.text()
    assert window.document is None
    assert "Cannot open img_1.png" in window.canvas.placeholder
    window.step(+1)
    assert window.index == 2 and window.document is not None
    click(qtbot, window, 5, 5)
    assert window.document.labels[5, 5] == window.toolbox.ctx.active_class


def test_failed_save_is_reported_and_kept_dirty(qtbot, window, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(window.project, "save_annotation", disk_full)
    click(qtbot, window, 10, 10)
    assert not window.autosave.flush()
    assert "No space left on device" in window.banner.text()
    assert window.isWindowModified()
    monkeypatch.undo()
    assert window.autosave.flush() and not window.isWindowModified()


def test_read_only_folder_opens_with_a_notice(qtbot, settings, folder, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    folder.chmod(0o555)
    try:
        if (folder / "probe").exists() or _writable(folder):
            pytest.skip("permissions are not enforced for this user (root)")
        w = new_window(qtbot, settings, folder)
        assert "not writable" in w.banner.text()
        click(qtbot, w, 10, 10)
        assert w.autosave.flush()
        w.close()
    finally:
        folder.chmod(0o755)


def _writable(folder: Path) -> bool:
    try:
        (folder / ".w").write_bytes(b"")
        (folder / ".w").unlink()
        return True
    except OSError:
        return False


def test_delete_class_with_replacement(qtbot, window):
    doc = window.document
    doc.labels[:5] = 3
    doc.labels[5:10] = 4
    names = list(window.labelset.names)
    assert window.session.delete_class(3, replacement=15)
    assert window.labelset.names == names[:3] + names[4:]
    assert (doc.labels[:5] == 14).all()  # person moved down from 15 to 14
    assert (doc.labels[5:10] == 3).all()  # boat moved down from 4 to 3
    assert window.class_panel.list.count() == len(names)  # one fewer class + the ignore row
    assert window.autosave.flush()
    assert window.session.add_class("tree", (10, 200, 10))
    assert window.project.labels.names[-1] == "tree"
    assert not window.session.add_class("tree")  # duplicate: a message, no change
    assert "tree" in window.banner.text()


def test_hidden_class_is_transparent_in_the_overlay(qtbot, window):
    from PySide6.QtGui import QColor

    item = window.class_panel.list.item(5)
    item.setCheckState(Qt.CheckState.Unchecked)
    table = window.canvas.overlay.qimage.colorTable()
    assert QColor.fromRgba(table[5]).alpha() == 0 and QColor.fromRgba(table[6]).alpha() == 255
    assert QColor.fromRgba(table[0]).alpha() == 0


def test_active_class_swatch_keeps_the_class_colour(qtbot, window):
    from PySide6.QtGui import QColor, QIcon

    window.set_active_class(2)
    item = window.class_panel.list.currentItem()
    assert item.data(Qt.ItemDataRole.UserRole) == 2
    shown = item.icon().pixmap(14, 14, QIcon.Mode.Selected).toImage().pixelColor(7, 7)
    assert shown == QColor(*window.labelset.colors[2])


def test_help_lists_every_shortcut(qtbot, window):
    dlg = window.show_shortcuts()
    qtbot.addWidget(dlg)
    cells = {dlg.table.item(r, 2).text() for r in range(dlg.table.rowCount())}
    for spec in ACTIONS:
        if spec.keys and not spec.id.startswith("class_"):
            assert ", ".join(spec.keys) in cells, spec.id
    for keys, _ in GESTURES:
        assert keys in cells


def test_settings_remember_brush_opacity_tool_and_recent(qtbot, settings, folder):
    w = new_window(qtbot, settings, folder)
    w.set_brush_size(77)
    w.tool_controls.set_opacity(0.3)
    w.tool_controls.set_tool("fill")
    w.close()
    w2 = new_window(qtbot, settings)
    assert w2.toolbox.ctx.brush_size == 77 and w2.toolbox.active_name == "fill"
    assert abs(w2.canvas.overlay.opacity() - 0.3) < 0.01
    assert [a.text() for a in w2.recent_menu.actions()] == [str(folder.resolve())]
    w2.close()


def test_proposal_is_one_undo_step_and_spares_human_pixels(qtbot, window):
    click(qtbot, window, 10, 10)
    doc = window.document
    human = doc.edit_mask.copy()
    painted = doc.labels.copy()
    proposal = np.full(doc.labels.shape, 9, np.uint8)
    assert window.apply_labels(proposal, text="Auto-segment", status=Status.AUTO)
    assert (doc.labels[human] == painted[human]).all() and (doc.labels[~human] == 9).all()
    window.undo.group.undo()
    assert np.array_equal(doc.labels, painted)


def test_window_start_does_not_import_torch(tmp_path):
    code = (
        "import sys\n"
        "from PySide6.QtCore import QSettings\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from deeplab_studio.gui.window.main_window import MainWindow\n"
        f"w = MainWindow(QSettings({str(tmp_path / 's.ini')!r}, QSettings.Format.IniFormat))\n"
        "from deeplab_studio.gui.model_tools import attach_model_tools\n"
        "attach_model_tools(w)  # as run_app does: Model menu, worker, training\n"
        "w.show(); app.processEvents()\n"
        "print('torch' in sys.modules, 'torchvision' in sys.modules, w.isVisible())\n"
    )
    env = {"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-3:] == ["False", "False", "True"]


def test_class_counts_follow_strokes_undo_and_proposals(qtbot, window):
    doc = window.document
    window.set_brush_size(7)
    window.set_active_class(6)
    drag(qtbot, window, [(10, 10), (30, 12)])
    window.apply_labels(np.where(doc.labels == 0, 2, doc.labels).astype(np.uint8))
    window.tool_controls.set_tool("fill")
    click(qtbot, window, 60, 40)
    window.undo.group.undo()
    window.undo.group.undo()
    window.undo.group.redo()
    assert np.array_equal(doc.class_counts(), np.bincount(doc.labels.ravel(), minlength=256))


CRASH = r"""
import os, sys, time
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication
app = QApplication([])
from deeplab_studio.gui.window.main_window import MainWindow
from deeplab_studio.session.tools import Mods
w = MainWindow(QSettings(sys.argv[2], QSettings.Format.IniFormat))
w.show()
w.open_folder(sys.argv[1])
saved = []
w.autosave.saved.connect(saved.append)
w.set_active_class(9)
w.set_brush_size(7)
tool = w.toolbox.tools["brush"]
tool.press((10.0, 10.0), Mods()); tool.move((40.0, 30.0), Mods()); tool.release((40.0, 30.0), Mods())
deadline = time.monotonic() + 30
while not saved and time.monotonic() < deadline:
    app.processEvents()
os._exit(0 if saved else 3)  # die without closing the window or saving anything else
"""


def test_work_survives_a_crash(qtbot, settings, folder, tmp_path):
    ini = str(tmp_path / "crash.ini")
    out = subprocess.run([sys.executable, "-c", CRASH, str(folder), ini], capture_output=True, text=True, timeout=120,
                         env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    w = new_window(qtbot, settings, folder)
    assert (w.document.labels == 9).sum() > 100
    assert w.document.edit_mask.sum() == (w.document.labels == 9).sum()
    assert w.project.records[0].status == Status.EDITED
    w.close()


def test_help_lists_the_actions_other_modules_register(qtbot, window):
    """One registry: an action added through the link is in its menu, fires by key with the menu
    closed, and is in the generated Help table."""
    from PySide6.QtGui import QAction, QKeySequence

    from deeplab_studio.gui.window.link import WindowLink

    act = QAction("Auto-segment", window)
    act.setShortcut(QKeySequence("Ctrl+R"))
    fired = []
    act.triggered.connect(lambda: fired.append(1))
    WindowLink(window).add_menu("Model", [act])
    assert act in window.model_menu.actions()
    window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    assert fired
    dlg = window.show_shortcuts()
    qtbot.addWidget(dlg)
    rows = {tuple(dlg.table.item(r, c).text() for c in range(3)) for r in range(dlg.table.rowCount())}
    assert ("Model", "Auto-segment", "Ctrl+R") in rows
    assert ("Tools", "Brush", "B") in rows  # the built-in table comes from the same registry


def test_annotation_saved_elsewhere_refreshes_status_and_drops_history(qtbot, window):
    click(qtbot, window, 5, 5)
    window.step(+1)
    proj = window.project
    rec = proj.records[0]
    labels, mask = proj.load_annotation(rec)
    proj.save_annotation(rec, np.full_like(labels, 2), np.zeros_like(mask), status=Status.AUTO)
    window.session.annotation_saved_elsewhere(rec.path)
    assert window.image_panel.list.item(0).toolTip().endswith("auto")
    window.step(-1)
    assert window.undo.active.count() == 0 and (window.document.labels == 2).all()


def test_unsavable_change_blocks_folder_switch_and_first_close(qtbot, window, monkeypatch, tmp_path):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(window.project, "save_annotation", disk_full)
    click(qtbot, window, 10, 10)
    other = tmp_path / "other"
    other.mkdir()
    assert not window.open_folder(other)
    assert window.document is not None and window.document.labels[10, 10] != 0
    window.close()
    assert window.isVisible() and "close again" in window.banner.text()
    monkeypatch.undo()
    window.close()
    assert not window.isVisible()


def test_neighbours_are_prefetched_and_memory_stays_bounded(qtbot, window):
    pf = window.session.prefetcher
    assert set(pf.held()) == {"img_1.png"}  # next only: img_0 is the first
    window.step(+1)
    assert set(pf.held()) == {"img_2.png", "img_0.png"}
    image = pf.peek("img_2.png")
    window.step(+1)
    assert image is not None and np.array_equal(window.document.image, image)
    assert len(pf.held()) <= pf.capacity


def test_text_filter_limits_the_list_and_navigation(qtbot, window):
    window.image_panel.text_filter.setText("img_2")
    assert window.image_panel.visible_indices() == [2]
    assert "1 shown" in window.image_panel.counts.text()
    assert window.step(+1) and window.index == 2  # next among the shown images
    window.image_panel.text_filter.clear()
    assert window.image_panel.visible_indices() == [0, 1, 2]
    lst = window.image_panel.list
    qtbot.mouseClick(lst.viewport(), Qt.MouseButton.LeftButton, pos=lst.visualItemRect(lst.item(1)).center())
    assert window.index == 1


def test_empty_canvas_says_how_to_start(qtbot, settings, tmp_path):
    window = new_window(qtbot, settings)
    assert "Ctrl+O" in window.canvas.placeholder
    shot = window.canvas.viewport().grab().toImage()
    background = window.canvas.backgroundBrush().color().rgb()
    h, w = shot.height(), shot.width()
    assert any(shot.pixel(x, y) != background  # the hint is drawn
               for y in range(h // 4, 3 * h // 4, 2) for x in range(0, w, 2))
    (tmp_path / "empty").mkdir()
    assert window.open_folder(tmp_path / "empty")
    assert "No images in" in window.canvas.placeholder and window.document is None
    assert window.open_folder(make_folder(tmp_path / "more", n=1))
    assert window.document is not None and "Ctrl+O" in window.canvas.placeholder
    window.close()


def test_long_message_is_whole_in_the_banner_and_elided_in_the_status_bar(qtbot, window):
    text = "Cannot open img_1.png: " + "a very long reason " * 40
    window.show_message(text)
    assert window.banner.text() == text
    shown = window.statusBar().currentMessage()
    assert shown.endswith("…") and text.startswith(shown[:-1])
    bar = window.statusBar()
    assert bar.fontMetrics().horizontalAdvance(shown) < bar.width()


def test_first_start_fits_the_window_on_the_screen(qtbot, settings):
    from deeplab_studio.gui.window.main_window import MainWindow

    w = MainWindow(settings)  # no saved geometry: the first start
    qtbot.addWidget(w)
    free = w.screen().availableGeometry()
    assert 0 < w.width() <= min(1400, free.width()) and 0 < w.height() <= min(900, free.height())
    w.close()


def test_steady_painting_is_saved_while_it_goes_on(qtbot, window):
    """Strokes coming faster than the autosave delay do not postpone the save indefinitely."""
    from PySide6.QtCore import QTimer

    from deeplab_studio.session.tools import Mods

    brush = window.toolbox.tools["brush"]
    n = [0]

    def stroke():
        n[0] += 1
        p = (float(n[0] % 60), float(n[0] % 40))
        brush.press(p, Mods())
        brush.release(p, Mods())

    painter = QTimer()
    painter.setInterval(window.autosave.timer.interval() // 8)
    painter.timeout.connect(stroke)
    painter.start()
    try:
        with qtbot.waitSignal(window.autosave.saved, timeout=10_000):
            pass
        assert painter.isActive() and n[0] > 0
    finally:
        painter.stop()


def test_opening_a_file_or_missing_folder_says_so_once(qtbot, window, folder, tmp_path):
    for target in (folder / "img_0.png", tmp_path / "missing"):
        assert not window.open_folder(target)
        text = window.banner.text()
        assert text.count(str(target)) == 1 and "not a folder" in text
        assert window.project.folder == folder.resolve() and window.document is not None  # still working
    assert not (tmp_path / "missing").exists()


def test_arrow_keys_in_the_image_list_open_the_image(qtbot, window):
    lst = window.image_panel.list
    lst.setFocus()
    qtbot.keyClick(lst, Qt.Key.Key_Down)
    assert window.index == 1 and window.document.key == "img_1.png"
    qtbot.keyClick(lst, Qt.Key.Key_End)
    assert window.index == 2
    window.step(-1)  # opening from elsewhere moves the list's current row without re-opening
    assert lst.currentRow() == 1 and window.index == 1


def test_class_rows_show_pixel_counts(qtbot, window):
    from deeplab_studio.gui.panels.class_panel import COUNT_ROLE

    window.set_brush_size(1)
    window.set_active_class(4)
    click(qtbot, window, 3, 3)
    row = window.class_panel.list.item(4)
    qtbot.waitUntil(lambda: row.data(COUNT_ROLE) == "1 px")
    assert row.text().split() == ["4", "boat"] and "1 pixel in" in row.toolTip()
    background = window.class_panel.list.item(0)
    assert background.data(COUNT_ROLE) == f"{64 * 48 - 1} px" and "never drawn" in background.toolTip()
