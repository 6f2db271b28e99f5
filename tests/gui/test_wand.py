"""The wand and "Snap strokes to edges" in the window: W, a click, Shift+wheel, the toggle, undo."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from deeplab_studio.session.snap import StrokeSnapper
from tests.gui.conftest import click, new_window, view_pos


def wheel(canvas, pos, delta, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    ev = QWheelEvent(QPointF(pos), QPointF(canvas.viewport().mapToGlobal(pos)), QPoint(0, 0), QPoint(0, delta),
                     Qt.MouseButton.NoButton, modifiers, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(canvas.viewport(), ev)


def superpixel_mask(window, scale, x, y):
    sp = window.session.superpixels.get(window.document.key)
    (x0, y0, x1, y1), crop = sp.region_at(scale, x + 0.5, y + 0.5)
    out = np.zeros(window.document.labels.shape, bool)
    out[y0:y1, x0:x1] = crop
    return out


def test_w_selects_the_wand_and_a_click_fills_one_superpixel_as_one_undo_step(qtbot, window):
    qtbot.keyClick(window, Qt.Key.Key_W)
    assert window.toolbox.active_name == "wand" and window.tool_controls.wand_scale.isVisible()
    window.set_active_class(4)
    click(qtbot, window, 30, 20)
    doc = window.document
    expected = superpixel_mask(window, window.toolbox.ctx.wand_scale, 30, 20)
    assert expected.sum() > 1 and np.array_equal(doc.labels == 4, expected)
    assert np.array_equal(doc.edit_mask, expected)
    assert window.undo.active.count() == 1 and window.undo.active.text(0) == "Wand"
    qtbot.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert not doc.labels.any() and not doc.edit_mask.any()


def test_shift_wheel_changes_the_wands_scale_and_plain_wheel_still_zooms(qtbot, window, settings):
    canvas = window.canvas
    window.tool_controls.set_tool("wand")
    window.tool_controls.set_wand_scale(0)
    pos = view_pos(window, 30, 20)
    zoom = canvas.zoom()
    wheel(canvas, pos, 120, Qt.KeyboardModifier.ShiftModifier)
    assert window.toolbox.ctx.wand_scale == 1 and canvas.zoom() == zoom
    assert "medium" in window.tool_controls.wand_scale.text() and int(settings.value("wand_scale")) == 1
    for _ in range(3):
        wheel(canvas, pos, 120, Qt.KeyboardModifier.ShiftModifier)
    assert window.toolbox.ctx.wand_scale == 2  # the coarsest; no further
    wheel(canvas, pos, -120, Qt.KeyboardModifier.ShiftModifier)
    assert window.toolbox.ctx.wand_scale == 1
    wheel(canvas, pos, 240)
    assert canvas.zoom() > zoom and window.toolbox.ctx.wand_scale == 1
    window.set_active_class(2)
    click(qtbot, window, 30, 20)
    assert np.array_equal(window.document.labels == 2, superpixel_mask(window, 1, 30, 20))
    window.tool_controls.set_tool("brush")
    zoom = canvas.zoom()
    wheel(canvas, pos, 120, Qt.KeyboardModifier.ShiftModifier)  # not the wand: the wheel zooms
    assert canvas.zoom() > zoom and window.toolbox.ctx.wand_scale == 1


def test_snap_strokes_toggles_the_snapper_and_is_remembered(qtbot, settings, folder):
    w = new_window(qtbot, settings, folder)
    act = w.registry["snap_strokes"]
    assert act.isCheckable() and not act.isChecked() and w.toolbox.ctx.snap is None
    act.trigger()
    assert isinstance(w.toolbox.ctx.snap, StrokeSnapper)
    w.set_brush_size(7)
    w.set_active_class(3)
    click(qtbot, w, 20, 15)
    assert w.undo.active.text(0) == "Brush stroke (snapped)"
    w.close()
    again = new_window(qtbot, settings, folder)
    assert again.registry["snap_strokes"].isChecked() and isinstance(again.toolbox.ctx.snap, StrokeSnapper)
    again.registry["snap_strokes"].trigger()
    assert again.toolbox.ctx.snap is None
    again.close()


def test_the_wand_and_its_gesture_are_in_the_shortcut_list(qtbot, window):
    rows = window.registry.rows()
    assert any("Wand" in what and keys == "W" for _, what, keys in rows)
    assert any(section == "Canvas" and keys.startswith("Shift+wheel") for section, _, keys in rows)
