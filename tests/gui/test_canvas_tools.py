"""Real mouse events on the canvas viewport: brush, eraser, fill, polygon, picker, undo."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPoint, Qt

from deeplab_studio.core.labels import IGNORE
from tests.gui.conftest import click, drag, view_pos


def disk_mask(shape, cx, cy, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_click_paints_a_disk_of_the_brush_size_and_marks_the_edit_mask(qtbot, window):
    window.set_brush_size(9)  # radius 4
    window.set_active_class(3)
    click(qtbot, window, 20, 15)
    doc = window.document
    expected = disk_mask(doc.labels.shape, 20, 15, 4)
    assert ((doc.labels == 3) == expected).all()
    assert (doc.edit_mask == expected).all()
    # the overlay image got the same bytes in the touched box
    from deeplab_studio.gui.canvas.layers import qimage_array
    assert (qimage_array(window.canvas.overlay.qimage) == doc.labels).all()


def test_stroke_is_one_undo_step_and_undo_restores_bytes(qtbot, window):
    doc = window.document
    doc.labels[:, :10] = 5  # pre-existing labels (as if loaded)
    window.canvas.overlay.set_labels(doc.labels)
    before_labels, before_mask = doc.labels.copy(), doc.edit_mask.copy()
    window.set_brush_size(5)
    window.set_active_class(2)
    drag(qtbot, window, [(5, 10), (15, 12), (30, 20), (40, 30)])
    after_labels, after_mask = doc.labels.copy(), doc.edit_mask.copy()
    assert (after_labels == 2).sum() > 50 and after_mask.sum() == (after_labels == 2).sum()
    stack = window.undo.active
    assert stack.count() == 1 and stack.text(0) == "Brush stroke"
    qtbot.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(doc.labels, before_labels) and np.array_equal(doc.edit_mask, before_mask)
    qtbot.keyClick(window, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(doc.labels, after_labels) and np.array_equal(doc.edit_mask, after_mask)
    window.undo.group.undo()
    qtbot.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert np.array_equal(doc.labels, after_labels)


def test_eraser_sets_background_and_shift_sets_ignore(qtbot, window):
    doc = window.document
    window.set_brush_size(7)
    window.set_active_class(4)
    click(qtbot, window, 30, 20)
    window.tool_controls.set_tool("eraser")
    click(qtbot, window, 30, 20)
    assert not doc.labels.any()
    click(qtbot, window, 10, 10, Qt.KeyboardModifier.ShiftModifier)
    assert (doc.labels == IGNORE).sum() == disk_mask(doc.labels.shape, 10, 10, 3).sum()
    assert doc.edit_mask[10, 10]


def test_background_only_leaves_labelled_pixels(qtbot, window):
    doc = window.document
    doc.labels[:, 32:] = 6
    window.canvas.overlay.set_labels(doc.labels)
    window.tool_controls.set_background_only(True)
    window.set_brush_size(21)
    window.set_active_class(1)
    click(qtbot, window, 32, 24)
    assert (doc.labels[:, 32:] == 6).all()
    assert (doc.labels[:, :32] == 1).sum() == disk_mask(doc.labels.shape, 32, 24, 10)[:, :32].sum()


def test_fill_fills_the_connected_region(qtbot, window):
    doc = window.document
    doc.labels[:, 20] = 9  # a wall splits the image
    window.canvas.overlay.set_labels(doc.labels)
    window.set_active_class(2)
    window.tool_controls.set_tool("fill")
    click(qtbot, window, 5, 5)
    assert (doc.labels[:, :20] == 2).all() and not doc.labels[:, 21:].any()
    assert doc.edit_mask[:, :20].all() and not doc.edit_mask[:, 20:].any()
    assert window.undo.active.text(0) == "Fill"
    window.undo.group.undo()
    assert not (doc.labels == 2).any()


def test_polygon_enter_closes_and_escape_cancels(qtbot, window):
    doc = window.document
    window.set_active_class(7)
    window.tool_controls.set_tool("polygon")
    for x, y in [(10, 10), (40, 10), (40, 30), (10, 30)]:
        click(qtbot, window, x, y)
    assert not doc.labels.any()  # nothing until closed
    window.canvas.setFocus()
    qtbot.keyClick(window.canvas, Qt.Key.Key_Return)
    assert (doc.labels[12:29, 12:39] == 7).all()
    assert not doc.labels[:9].any() and not doc.labels[:, :9].any()
    n = (doc.labels == 7).sum()
    for x, y in [(45, 5), (60, 5), (60, 40)]:
        click(qtbot, window, x, y)
    qtbot.keyClick(window.canvas, Qt.Key.Key_Escape)
    assert (doc.labels == 7).sum() == n and window.toolbox.tools["polygon"].points == []


def test_polygon_double_click_closes(qtbot, window):
    doc = window.document
    window.set_active_class(5)
    window.tool_controls.set_tool("polygon")
    for x, y in [(5, 5), (30, 5)]:
        click(qtbot, window, x, y)
    qtbot.mouseDClick(window.canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_pos(window, 30, 30))
    assert doc.labels[10, 20] == 5 and doc.edit_mask[10, 20]
    assert window.undo.active.count() == 1


def test_picker_tool_and_alt_click(qtbot, window):
    doc = window.document
    doc.labels[:, 40:] = 12
    window.set_active_class(1)
    window.tool_controls.set_tool("picker")
    click(qtbot, window, 50, 10)
    assert window.toolbox.ctx.active_class == 12 and window.class_panel.active == 12
    window.tool_controls.set_tool("brush")
    window.set_active_class(1)
    click(qtbot, window, 50, 10, Qt.KeyboardModifier.AltModifier)
    assert window.toolbox.ctx.active_class == 12
    assert window.undo.active.count() == 0  # picking never paints


def test_wheel_zoom_and_fit_shortcuts(qtbot, window):
    canvas = window.canvas
    z0 = canvas.zoom()
    qtbot.keyClick(window, Qt.Key.Key_1, Qt.KeyboardModifier.ControlModifier)
    assert canvas.zoom() == 1.0
    qtbot.keyClick(window, Qt.Key.Key_0, Qt.KeyboardModifier.ControlModifier)
    assert abs(canvas.zoom() - z0) < 1e-9
    canvas.zoom_by(2.0)
    assert abs(canvas.zoom() - 2 * z0) < 1e-9


def test_edited_outline_layer_follows_the_edit_mask(qtbot, window):
    from deeplab_studio.gui.canvas.layers import qimage_array

    qtbot.keyClick(window, Qt.Key.Key_T, Qt.KeyboardModifier.ShiftModifier)
    assert window.canvas.edit_outline.isVisible()
    window.set_brush_size(11)
    click(qtbot, window, 30, 20)
    edge = qimage_array(window.canvas.edit_outline.qimage).astype(bool)
    mask = window.document.edit_mask
    assert edge[20, 25] and not edge[20, 30]  # left rim of the disk (r = 5) vs its centre
    assert not (edge & ~mask).any() and edge.sum() < mask.sum()


def _wheel(canvas, pos, delta):
    from PySide6.QtCore import QPoint, QPointF
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    ev = QWheelEvent(QPointF(pos), QPointF(canvas.viewport().mapToGlobal(pos)), QPoint(0, 0), QPoint(0, delta),
                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(canvas.viewport(), ev)


def test_wheel_zooms_at_the_cursor_and_middle_drag_pans(qtbot, window):
    canvas = window.canvas
    pos = view_pos(window, 12, 9)
    qtbot.mouseMove(canvas.viewport(), pos)
    before = canvas.mapToScene(pos)
    z = canvas.zoom()
    _wheel(canvas, pos, 480)
    assert canvas.zoom() > 1.5 * z
    after = canvas.mapToScene(pos)
    assert abs(after.x() - before.x()) < 1.0 and abs(after.y() - before.y()) < 1.0  # same pixel under the cursor
    vp = canvas.viewport()
    start = canvas.mapToScene(vp.rect().center())
    qtbot.mousePress(vp, Qt.MouseButton.MiddleButton, pos=vp.rect().center())
    qtbot.mouseMove(vp, vp.rect().center() + QPoint(60, 0))
    qtbot.mouseRelease(vp, Qt.MouseButton.MiddleButton, pos=vp.rect().center() + QPoint(60, 0))
    moved = canvas.mapToScene(vp.rect().center())
    assert moved.x() < start.x() - 1  # content follows the mouse to the right
    assert window.undo.active.count() == 0  # panning never paints


def test_space_drag_pans_instead_of_painting(qtbot, window):
    canvas = window.canvas
    canvas.zoom_by(4.0)
    vp = canvas.viewport()
    canvas.setFocus()
    start = canvas.mapToScene(vp.rect().center())
    qtbot.keyPress(canvas, Qt.Key.Key_Space)
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=vp.rect().center())
    qtbot.mouseMove(vp, vp.rect().center() - QPoint(0, 50))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=vp.rect().center() - QPoint(0, 50))
    qtbot.keyRelease(canvas, Qt.Key.Key_Space)
    assert canvas.mapToScene(vp.rect().center()).y() > start.y() + 1  # dragged up: view moves down
    assert not window.document.labels.any()


def test_dropping_a_folder_opens_it(qtbot, window, tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    from tests.gui.conftest import make_folder

    other = make_folder(tmp_path / "other", n=2, size=(32, 24))
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(other))])
    ev = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                    Qt.KeyboardModifier.NoModifier)
    window.dropEvent(ev)  # Qt delivers drops only inside a real drag; call the handler with a real event
    assert window.project.folder == other.resolve() and window.document.labels.shape == (24, 32)


def test_undo_during_a_stroke_finishes_the_stroke_first(qtbot, window):
    doc = window.document
    window.set_brush_size(5)
    click(qtbot, window, 5, 5)
    first = doc.labels.copy()
    vp = window.canvas.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=view_pos(window, 20, 20))
    qtbot.mouseMove(vp, view_pos(window, 40, 20))
    qtbot.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # mouse still down
    qtbot.mouseMove(vp, view_pos(window, 50, 30))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=view_pos(window, 50, 30))
    assert np.array_equal(doc.labels, first)  # the unfinished stroke was committed, then undone
    assert window.undo.active.count() == 2 and window.undo.active.index() == 1
    window.undo.group.undo()
    assert not doc.labels.any() and not doc.edit_mask.any()


def test_status_bar_and_brush_outline_follow_the_cursor(qtbot, window):
    window.set_active_class(7)
    click(qtbot, window, 20, 20)
    window.set_brush_size(11)
    qtbot.mouseMove(window.canvas.viewport(), view_pos(window, 20, 21))
    st = window.status
    assert st.position.text() == "x 20  y 21"
    assert st.klass.text().startswith("7 car")  # the class under the cursor (and ✎: edited)
    assert st.size.text() == "64 × 48"
    assert st.zoom.text() == f"{window.canvas.zoom() * 100:.0f} %"
    outline = window.canvas.brush
    assert outline.isVisible() and outline.radius == window.toolbox.ctx.radius
    assert (outline.pos().x(), outline.pos().y()) == (20.5, 21.5)  # centred on the pixel the disk is
    qtbot.waitUntil(lambda: st.save_state.text() == "All changes saved")
    window.tool_controls.set_tool("fill")  # the class under a cursor that stays put follows the edit
    window.set_active_class(3)
    qtbot.mouseMove(window.canvas.viewport(), view_pos(window, 2, 2))
    assert st.klass.text() == "0 background"
    click(qtbot, window, 2, 2)
    qtbot.waitUntil(lambda: st.klass.text().startswith("3 bird"))


def test_zoomed_in_pixels_stay_sharp(qtbot, window):
    """At 8× each image pixel is an 8×8 block of one colour (no smoothing between pixels)."""
    window.tool_controls.set_overlay_visible(False)
    canvas = window.canvas
    qtbot.keyClick(window, Qt.Key.Key_1, Qt.KeyboardModifier.ControlModifier)
    canvas.zoom_by(8.0)
    canvas.centerOn(32.0, 24.0)
    shot = canvas.viewport().grab().toImage()
    rgb = window.document.image
    for x, y in ((30, 22), (31, 22), (33, 25)):
        top_left = canvas.mapFromScene(float(x), float(y))
        block = {shot.pixel(top_left.x() + dx, top_left.y() + dy) & 0xFFFFFF for dx in range(1, 7) for dy in range(1, 7)}
        assert block == {int(rgb[y, x, 0]) << 16 | int(rgb[y, x, 1]) << 8 | int(rgb[y, x, 2])}


def test_redo_shortcuts(qtbot, window):
    click(qtbot, window, 10, 10)
    painted = window.document.labels.copy()
    for redo in ((Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier),
                 (Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)):
        qtbot.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
        assert not window.document.labels.any()
        qtbot.keyClick(window, *redo)
        assert np.array_equal(window.document.labels, painted)


def test_rename_and_recolour_a_class(qtbot, window):
    from PySide6.QtGui import QColor

    assert window.session.rename_class(3, "gull")
    assert window.session.recolor_class(3, (10, 200, 30))
    assert window.project.labels.names[3] == "gull" and window.project.labels.colors[3] == (10, 200, 30)
    assert "gull" in window.class_panel.list.item(3).text()
    assert QColor.fromRgba(window.canvas.overlay.qimage.colorTable()[3]).getRgb()[:3] == (10, 200, 30)
    assert not window.session.rename_class(3, "dog")  # a duplicate name: a message, no change
    assert window.project.labels.names[3] == "gull" and "dog" in window.banner.text()


def test_undo_keeps_at_least_200_steps_per_image(qtbot, window):
    window.set_brush_size(1)
    start = window.document.labels.copy()
    for k in range(250):
        window.set_active_class(1 + k % 9)
        click(qtbot, window, k % 64, (k // 64) * 3)
    stack = window.undo.active
    assert stack.count() == 250
    for _ in range(250):
        window.session.undo()
    assert np.array_equal(window.document.labels, start) and not window.document.edit_mask.any()


def test_pointer_over_the_canvas_takes_focus_from_lists_but_not_text_fields(qtbot, window):
    canvas = window.canvas
    window.class_panel.list.setFocus()
    qtbot.waitUntil(window.class_panel.list.hasFocus)
    qtbot.mouseMove(window.image_panel.list.viewport())  # the pointer leaves the canvas, then comes back
    qtbot.mouseMove(canvas.viewport(), view_pos(window, 30, 20))
    qtbot.waitUntil(canvas.hasFocus)
    qtbot.keyPress(canvas, Qt.Key.Key_Space)  # Space+drag now pans instead of painting
    before = window.document.labels.copy()
    drag(qtbot, window, [(30, 20), (10, 10)])
    qtbot.keyRelease(canvas, Qt.Key.Key_Space)
    assert np.array_equal(window.document.labels, before)
    window.image_panel.text_filter.setFocus()
    qtbot.waitUntil(window.image_panel.text_filter.hasFocus)
    qtbot.mouseMove(window.image_panel.list.viewport())
    qtbot.mouseMove(canvas.viewport(), view_pos(window, 20, 20))
    assert window.image_panel.text_filter.hasFocus()  # typing a filter is not interrupted


def test_hidden_labels_are_announced_on_the_canvas(qtbot, window):
    notice = window.canvas.notice
    assert not notice.isVisible()
    qtbot.keyClick(window, Qt.Key.Key_T)
    assert notice.isVisible() and "press T" in notice.text()
    qtbot.keyClick(window, Qt.Key.Key_T)
    assert not notice.isVisible()
    window.tool_controls.set_opacity(0.0)
    assert notice.isVisible() and "opacity" in notice.text()
    window.tool_controls.set_opacity(0.5)
    assert not notice.isVisible()


def test_a_stroke_repaints_only_the_touched_rectangle(qtbot, window):
    from PySide6.QtCore import QEvent, QObject
    from PySide6.QtWidgets import QApplication

    from deeplab_studio.gui.canvas.layers import qimage_array

    class Regions(QObject):
        def __init__(self):
            super().__init__()
            self.rects = []

        def eventFilter(self, obj, event):
            if event.type() == QEvent.Type.Paint:
                self.rects.append(event.region().boundingRect())
            return False

    canvas = window.canvas
    canvas.brush.setVisible(False)
    qtbot.keyClick(window, Qt.Key.Key_1, Qt.KeyboardModifier.ControlModifier)
    canvas.zoom_by(8.0)  # the image fills the view; the disk is a small part of it
    canvas.centerOn(32.0, 24.0)
    window.set_brush_size(5)
    canvas.setFocus()
    click(qtbot, window, 10, 10)  # the first paint after a zoom may redraw the whole view; measure the next
    QApplication.processEvents()
    canvas.viewport().repaint()
    regions = Regions()
    canvas.viewport().installEventFilter(regions)
    click(qtbot, window, 30, 20)
    qtbot.waitUntil(lambda: len(regions.rects) > 0)
    canvas.viewport().removeEventFilter(regions)
    assert np.array_equal(qimage_array(canvas.overlay.qimage), window.document.labels)  # the overlay holds the labels
    box = regions.rects[-1]
    view = canvas.viewport().rect()
    assert box.width() * box.height() < view.width() * view.height() / 20  # a small box, not the view
    disk = canvas.mapFromScene(QPoint(30, 20).toPointF())
    assert box.contains(disk)
