"""Raster layers for the canvas: the image, the label overlay, edited-pixel outline, confidence.

Each layer is a `QGraphicsItem` that paints only the exposed part of its `QImage` straight from
source pixels (no smoothing when zoomed in). Label changes copy just the touched box into the
overlay's indexed image and repaint just that rectangle.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRect, QRectF
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget

from deeplab_studio.core.labels import BACKGROUND, IGNORE

BBox = tuple[int, int, int, int]


def qimage_array(img: QImage) -> np.ndarray:
    """A writable H×W uint8 numpy view of an 8-bit QImage's pixels (stride removed)."""
    h, w, bpl = img.height(), img.width(), img.bytesPerLine()
    return np.frombuffer(img.bits(), dtype=np.uint8, count=h * bpl).reshape(h, bpl)[:, :w]


class RasterLayer(QGraphicsItem):
    """Paints a QImage at scene pixel coordinates; only the exposed rectangle is drawn."""

    def __init__(self, *, smooth_when_small: bool = False) -> None:
        super().__init__()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)
        self.qimage: QImage | None = None
        self.smooth_when_small = smooth_when_small
        self._keep: np.ndarray | None = None  # numpy buffer a QImage borrows

    def boundingRect(self) -> QRectF:
        if self.qimage is None:
            return QRectF()
        return QRectF(0, 0, self.qimage.width(), self.qimage.height())

    def clear(self) -> None:
        self.prepareGeometryChange()
        self.qimage, self._keep = None, None

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        img = self.qimage
        if img is None:
            return
        r = option.exposedRect.toAlignedRect().intersected(QRect(0, 0, img.width(), img.height()))
        if r.isEmpty():
            return
        scale = painter.worldTransform().m11()
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform,
                              self.smooth_when_small and scale < 1.0)
        painter.drawImage(QRectF(r), img, QRectF(r))


class ImageLayer(RasterLayer):
    """The photograph: borrows the document's RGB array (no copy)."""

    def __init__(self) -> None:
        super().__init__(smooth_when_small=True)
        self.setZValue(0)

    def set_rgb(self, rgb: np.ndarray | None) -> None:
        if rgb is None:
            self.clear()
            return
        self.prepareGeometryChange()
        h, w = rgb.shape[:2]
        self._keep = np.ascontiguousarray(rgb)
        self.qimage = QImage(self._keep.data, w, h, 3 * w, QImage.Format.Format_RGB888)
        self.update()


class IndexedLayer(RasterLayer):
    """An owned 8-bit indexed QImage with a colour table (alpha per entry)."""

    def set_size(self, w: int, h: int) -> np.ndarray:
        """Allocate the image; returns its numpy view."""
        self.prepareGeometryChange()
        self.qimage = QImage(w, h, QImage.Format.Format_Indexed8)
        self.set_table(self.table())
        return qimage_array(self.qimage)

    def table(self) -> list[int]:
        return [0] * 256

    def set_table(self, table: list[int]) -> None:
        if self.qimage is not None:
            self.qimage.setColorTable(table)
            self.update()

    def pixels(self) -> np.ndarray:
        return qimage_array(self.qimage)

    def update_box(self, bbox: BBox) -> None:
        x0, y0, x1, y1 = bbox
        self.update(QRectF(x0, y0, x1 - x0, y1 - y0))


class LabelOverlay(IndexedLayer):
    """Class colours over the image; background and hidden classes are transparent."""

    def __init__(self) -> None:
        super().__init__()
        self.setZValue(1)
        self.palette = np.zeros((256, 3), np.uint8)
        self.hidden: set[int] = set()

    def table(self) -> list[int]:
        out = []
        for i, (r, g, b) in enumerate(self.palette.tolist()):
            visible = i != BACKGROUND and i not in self.hidden
            out.append(QColor(r, g, b, 255 if visible else 0).rgba())
        return out

    def set_colors(self, palette: np.ndarray, hidden: set[int] | None = None) -> None:
        self.palette = np.asarray(palette, np.uint8)
        if hidden is not None:
            self.hidden = set(hidden)
        self.set_table(self.table())

    def set_labels(self, labels: np.ndarray | None) -> None:
        if labels is None:
            self.clear()
            return
        self.set_size(labels.shape[1], labels.shape[0])[...] = labels
        self.update()

    def refresh(self, labels: np.ndarray, bbox: BBox) -> None:
        """Copy the label pixels of `bbox` into the overlay and repaint just that rectangle."""
        if self.qimage is None:
            return
        x0, y0, x1, y1 = bbox
        self.pixels()[y0:y1, x0:x1] = labels[y0:y1, x0:x1]
        self.update_box(bbox)


class EditOutline(IndexedLayer):
    """The outline of the human-edited pixels (edit mask boundary), drawn as one bright colour."""

    def __init__(self) -> None:
        super().__init__()
        self.setZValue(2)

    def table(self) -> list[int]:
        return [0, QColor(255, 255, 255, 230).rgba()] + [0] * 254

    def set_mask(self, mask: np.ndarray | None) -> None:
        if mask is None:
            self.clear()
            return
        self.set_size(mask.shape[1], mask.shape[0])[...] = 0
        self.refresh(mask, (0, 0, mask.shape[1], mask.shape[0]))

    def refresh(self, mask: np.ndarray, bbox: BBox) -> None:
        if self.qimage is None:
            return
        h, w = mask.shape
        x0, y0, x1, y1 = max(bbox[0] - 1, 0), max(bbox[1] - 1, 0), min(bbox[2] + 1, w), min(bbox[3] + 1, h)
        m = np.pad(mask[y0:y1, x0:x1], 1, mode="edge")
        inner = m[1:-1, 1:-1]
        edge = inner & ~(m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:])
        self.pixels()[y0:y1, x0:x1] = edge
        self.update_box((x0, y0, x1, y1))


class RgbaLayer(RasterLayer):
    """A free RGBA image over the labels (uncertainty, CRF preview, model confidence).

    Extension point for the model-in-the-loop work; `set_rgba(None)` removes it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setZValue(3)

    def set_rgba(self, rgba: np.ndarray | None) -> None:
        if rgba is None:
            self.clear()
            return
        if rgba.ndim != 3 or rgba.shape[2] != 4:
            raise ValueError(f"an RGBA overlay is H×W×4 uint8, got {rgba.shape}")
        self.prepareGeometryChange()
        h, w = rgba.shape[:2]
        self._keep = np.ascontiguousarray(rgba, dtype=np.uint8).copy()
        self.qimage = QImage(self._keep.data, w, h, 4 * w, QImage.Format.Format_RGBA8888)
        self.update()


__all__ = ["RgbaLayer", "EditOutline", "ImageLayer", "LabelOverlay", "IGNORE", "qimage_array"]
