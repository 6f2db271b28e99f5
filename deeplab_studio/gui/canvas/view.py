"""The canvas: a `QGraphicsView` of the image and its label overlay that routes pointer input to tools.

Wheel zooms at the cursor (Shift+wheel with the wand: coarser/finer superpixels); middle-drag or
Space+drag pans; Alt+click picks a class; the brush
outline follows the cursor at the brush's true size. Pixel writes happen in the tools (core);
the canvas only repaints the touched rectangle when the document reports a change.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QPoint, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QKeyEvent, QMouseEvent, QPainter, QPainterPath, QPen, QWheelEvent
from PySide6.QtWidgets import (QAbstractSpinBox, QApplication, QComboBox, QFrame, QGraphicsItem, QGraphicsPathItem,
                               QGraphicsScene, QGraphicsView, QLabel, QLineEdit, QPlainTextEdit, QTextEdit)

from deeplab_studio.session.document import AnnotationDocument
from deeplab_studio.session.superpixels import SCALES
from deeplab_studio.gui.canvas.layers import EditOutline, ImageLayer, LabelOverlay, RgbaLayer
from deeplab_studio.session.tools import Mods, ToolBox

MIN_ZOOM, MAX_ZOOM = 0.01, 64.0
_TEXT_INPUTS = (QLineEdit, QAbstractSpinBox, QTextEdit, QPlainTextEdit, QComboBox)
#: shown in the empty canvas before an image is open
EMPTY_HINT = ("Open a folder of images to start annotating\n\n"
              "File → Open Folder… (Ctrl+O), File → Open Recent, or drop a folder here")


class BrushOutline(QGraphicsItem):
    """A two-tone circle (black + white dashes) of the brush's true size, centred on a pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.radius = 10
        self.setZValue(10)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)

    def boundingRect(self) -> QRectF:
        r = self.radius + 0.5 + 2.0
        return QRectF(-r, -r, 2 * r, 2 * r)

    def set_radius(self, radius: int) -> None:
        self.prepareGeometryChange()
        self.radius = int(radius)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        r = self.radius + 0.5
        rect = QRectF(-r, -r, 2 * r, 2 * r)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        for color, style in ((QColor(0, 0, 0, 200), Qt.PenStyle.SolidLine), (QColor(255, 255, 255), Qt.PenStyle.DashLine)):
            pen = QPen(color, 1.0, style)
            pen.setCosmetic(True)
            painter.setPen(pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawEllipse(rect)


class CanvasView(QGraphicsView):
    """Image + overlay view; emits the cursor position in image pixels and the zoom factor."""

    cursorMoved = Signal(float, float)  # image point under the cursor (may be outside the image)
    cursorLeft = Signal()
    zoomChanged = Signal(float)
    wandScaleChanged = Signal(int)  # Shift+wheel with the wand: the superpixel scale asked for

    def __init__(self, toolbox: ToolBox, parent=None) -> None:
        super().__init__(parent)
        self.toolbox = toolbox
        self.document: AnnotationDocument | None = None
        self.setScene(QGraphicsScene(self))
        self.image_layer = ImageLayer()
        self.overlay = LabelOverlay()
        self.edit_outline = EditOutline()
        self.extra = RgbaLayer()
        self.brush = BrushOutline()
        self.polygon_preview = QGraphicsPathItem()
        pen = QPen(QColor(255, 255, 0), 1.5)
        pen.setCosmetic(True)
        self.polygon_preview.setPen(pen)
        self.polygon_preview.setBrush(QBrush(QColor(255, 255, 0, 50)))
        self.polygon_preview.setZValue(11)
        for item in (self.image_layer, self.overlay, self.edit_outline, self.extra, self.brush,
                     self.polygon_preview):
            self.scene().addItem(item)
        self.edit_outline.setVisible(False)
        self.brush.setVisible(False)
        self.setBackgroundBrush(QColor(38, 40, 44))
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setMouseTracking(True)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)  # zoom_by anchors itself
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.MinimalViewportUpdate)
        self.setOptimizationFlag(QGraphicsView.OptimizationFlag.DontAdjustForAntialiasing, True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAcceptDrops(False)  # the main window takes folder drops
        self.image_rect = QRectF()
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # pan: middle/Space+drag
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._pan_from: QPointF | None = None
        self._space = False
        self._stroke_tool = None
        self._fitted = True
        self.placeholder = EMPTY_HINT  # drawn while no image is shown; the window sets its text
        # a badge over the view's corner (a child of the view, not the viewport: never scrolled along)
        self.notice = QLabel(self)
        self.notice.setObjectName("canvasNotice")
        self.notice.setStyleSheet("QLabel#canvasNotice {background: rgba(20, 22, 26, 200); color: #f0f0f0;"
                                  " padding: 4px 8px; border-radius: 4px;}")
        self.notice.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.notice.hide()
        self._notice_text = ""

    def set_notice(self, text: str) -> None:
        """A short note in the top-left corner while an image is shown ("" removes it)."""
        self._notice_text = text
        self._sync_notice()

    def _sync_notice(self) -> None:
        show = bool(self._notice_text) and self.document is not None
        if show:
            self.notice.setText(self._notice_text)
            self.notice.adjustSize()
            self.notice.move(10, 10)
            self.notice.raise_()
        self.notice.setVisible(show)

    def set_placeholder(self, text: str) -> None:
        self.placeholder = text
        self.viewport().update()

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:
        super().drawForeground(painter, rect)
        if self.document is not None or not self.placeholder:
            return
        painter.save()
        painter.resetTransform()  # viewport coordinates
        font = painter.font()
        font.setPointSizeF(font.pointSizeF() * 1.25)
        painter.setFont(font)
        painter.setPen(QColor(190, 194, 202))
        area = self.viewport().rect().adjusted(40, 40, -40, -40)
        painter.drawText(area, int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap), self.placeholder)
        painter.restore()

    # --- document ---------------------------------------------------------------------------
    def set_document(self, doc: AnnotationDocument | None) -> None:
        if self.document is not None:
            self.document.changed.disconnect(self._on_changed)
            self.document.reset.disconnect(self._on_reset)
        self.document = doc
        self._stroke_tool = None
        self.extra.set_rgba(None)
        if doc is None:
            for layer in (self.image_layer, self.overlay, self.edit_outline):
                layer.clear()
            self.image_rect = QRectF()
            self.scene().setSceneRect(QRectF())
            self.viewport().update()
            self._sync_notice()
            return
        doc.changed.connect(self._on_changed)
        doc.reset.connect(self._on_reset)
        self.image_layer.set_rgb(doc.image)
        self.overlay.set_colors(doc.labelset.palette())
        self.overlay.set_labels(doc.labels)
        self.edit_outline.set_mask(doc.edit_mask if self.edit_outline.isVisible() else None)
        self.image_rect = QRectF(0, 0, doc.width, doc.height)
        # room around the image so any pixel can be zoomed about or panned to the view centre
        m = max(doc.width, doc.height)
        self.scene().setSceneRect(self.image_rect.adjusted(-m, -m, m, m))
        self.fit()
        self._sync_notice()

    def _on_changed(self, bbox) -> None:
        doc = self.document
        self.overlay.refresh(doc.labels, bbox)
        if self.edit_outline.isVisible():
            self.edit_outline.refresh(doc.edit_mask, bbox)

    def _on_reset(self) -> None:
        doc = self.document
        self.overlay.set_colors(doc.labelset.palette())
        self.overlay.set_labels(doc.labels)
        self.edit_outline.set_mask(doc.edit_mask if self.edit_outline.isVisible() else None)

    def set_extra_overlay(self, rgba) -> None:
        """An RGBA (H×W×4 uint8) layer over the labels, or None to remove it."""
        doc = self.document
        if rgba is not None and (doc is None or rgba.shape[:2] != doc.labels.shape):
            return
        self.extra.set_rgba(rgba)

    def set_edit_outline_visible(self, on: bool) -> None:
        if on and self.document is not None:
            self.edit_outline.set_mask(self.document.edit_mask)
        self.edit_outline.setVisible(on)

    # --- zoom -------------------------------------------------------------------------------
    def zoom(self) -> float:
        return self.transform().m11()

    def fit(self) -> None:
        """Fit the whole image in the view (Ctrl+0)."""
        rect = self.image_rect
        if rect.isEmpty():
            return
        self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
        self._fitted = True
        self.zoomChanged.emit(self.zoom())

    def actual_size(self) -> None:
        """One image pixel per screen pixel (Ctrl+1), keeping the view centre."""
        centre = self.mapToScene(self.viewport().rect().center())
        self.resetTransform()
        self.centerOn(centre)
        self._fitted = False
        self.zoomChanged.emit(self.zoom())

    def zoom_by(self, factor: float, anchor: QPoint | None = None) -> None:
        """Zoom by `factor` (within MIN_ZOOM..MAX_ZOOM) keeping the scene point under the
        viewport position `anchor` (default: the view centre) where it is."""
        z = self.zoom()
        factor = max(MIN_ZOOM / z, min(MAX_ZOOM / z, factor))
        if abs(factor - 1.0) < 1e-9:
            return
        if anchor is None:
            anchor = self.viewport().rect().center()
        target = self.mapToScene(anchor)
        offset = self.mapToScene(anchor) - self.mapToScene(self.viewport().rect().center())
        self.scale(factor, factor)
        # put `target` back under `anchor`: centre the view on target minus the scaled offset
        self.centerOn(target - offset / factor)
        self._fitted = False
        self.zoomChanged.emit(self.zoom())

    def wheelEvent(self, event: QWheelEvent) -> None:
        delta = event.angleDelta().y() or event.angleDelta().x()  # Shift turns y into x on some systems
        shift = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if delta and shift and self.toolbox.active.name == "wand":
            scale = max(0, min(len(SCALES) - 1, self.toolbox.ctx.wand_scale + (1 if delta > 0 else -1)))
            if scale != self.toolbox.ctx.wand_scale:
                self.toolbox.ctx.wand_scale = scale
                self.wandScaleChanged.emit(scale)
        elif delta:
            self.zoom_by(math.pow(1.0015, delta), event.position().toPoint())
        event.accept()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._fitted:
            self.fit()

    # --- pointer ----------------------------------------------------------------------------
    def image_point(self, pos) -> tuple[float, float]:
        p = self.mapToScene(pos.toPoint() if hasattr(pos, "toPoint") else pos)
        return (p.x(), p.y())

    @staticmethod
    def _mods(event) -> Mods:
        m = event.modifiers()
        return Mods(shift=bool(m & Qt.KeyboardModifier.ShiftModifier),
                    ctrl=bool(m & Qt.KeyboardModifier.ControlModifier),
                    alt=bool(m & Qt.KeyboardModifier.AltModifier))

    def mousePressEvent(self, event: QMouseEvent) -> None:
        button = event.button()
        if button == Qt.MouseButton.MiddleButton or (button == Qt.MouseButton.LeftButton and self._space):
            self._pan_from = event.position()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            event.accept()
            return
        if button != Qt.MouseButton.LeftButton or self.document is None:
            super().mousePressEvent(event)
            return
        mods = self._mods(event)
        tool = self.toolbox.tool_for(mods)
        if tool is None:
            event.accept()  # a read-only project: no stroke starts (the banner says why)
            return
        self._stroke_tool = tool
        tool.press(self.image_point(event.position()), mods)
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        pos = event.position()
        if self._pan_from is not None:
            d = pos - self._pan_from
            self._pan_from = pos
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - round(d.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - round(d.y()))
            event.accept()
            return
        p = self.image_point(pos)
        self._move_brush(p)
        self.cursorMoved.emit(*p)
        tool = self._stroke_tool or self.toolbox.active
        tool.move(p, self._mods(event))
        event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._pan_from is not None and event.button() in (Qt.MouseButton.MiddleButton, Qt.MouseButton.LeftButton):
            self._pan_from = None
            self._update_cursor()
            event.accept()
            return
        if event.button() == Qt.MouseButton.LeftButton and self._stroke_tool is not None:
            tool, self._stroke_tool = self._stroke_tool, None
            tool.release(self.image_point(event.position()), self._mods(event))
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self.document is not None:
            self.toolbox.active.double_click(self.image_point(event.position()), self._mods(event))
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def enterEvent(self, event) -> None:
        """Take the keyboard focus when the pointer comes in (Space+drag pans and Enter closes a
        polygon even right after a click in the class or image list), but never from a text field
        or another window."""
        focus = QApplication.focusWidget()
        if focus is not self and (focus is None or (focus.window() is self.window()
                                                    and not isinstance(focus, _TEXT_INPUTS))):
            self.setFocus(Qt.FocusReason.MouseFocusReason)
        super().enterEvent(event)

    def leaveEvent(self, event) -> None:
        self.brush.setVisible(False)
        self.cursorLeft.emit()
        super().leaveEvent(event)

    def _move_brush(self, p: tuple[float, float]) -> None:
        tool = self.toolbox.active
        show = tool.shows_brush and self.document is not None and self._pan_from is None
        if show:
            self.brush.setPos(math.floor(p[0]) + 0.5, math.floor(p[1]) + 0.5)
        if self.brush.isVisible() != show:
            self.brush.setVisible(show)

    def update_brush(self) -> None:
        """Call after the brush size or tool changed."""
        self.brush.set_radius(self.toolbox.ctx.radius)
        if not self.toolbox.active.shows_brush:
            self.brush.setVisible(False)
        self._update_cursor()

    def _update_cursor(self) -> None:
        if self._space:
            shape = Qt.CursorShape.OpenHandCursor
        elif self.toolbox.active.shows_brush:
            shape = Qt.CursorShape.BlankCursor if self.brush.radius >= 2 else Qt.CursorShape.CrossCursor
        else:
            shape = Qt.CursorShape.CrossCursor
        self.viewport().setCursor(shape)

    def update_polygon_preview(self) -> None:
        tool = self.toolbox.tools["polygon"]
        path = QPainterPath()
        pts = list(tool.points) + ([tool.hover] if tool.hover is not None else [])
        if pts:
            path.moveTo(*pts[0])
            for p in pts[1:]:
                path.lineTo(*p)
            if len(pts) > 2:
                path.closeSubpath()
        self.polygon_preview.setPath(path)

    # --- keys -------------------------------------------------------------------------------
    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = True
            self._update_cursor()
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not event.modifiers():
            if not self.toolbox.active.finish():
                super().keyPressEvent(event)
                return
        elif key == Qt.Key.Key_Escape:
            if not self.toolbox.active.cancel():
                super().keyPressEvent(event)
                return
        else:
            super().keyPressEvent(event)
            return
        event.accept()

    def keyReleaseEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            self._pan_from = None
            self._update_cursor()
            event.accept()
            return
        super().keyReleaseEvent(event)
