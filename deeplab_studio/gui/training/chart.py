"""A small live chart of a training run: training loss per logged step and validation mIoU per epoch.

`TrainingCurves` is the Qt-free record of the points; `TrainingChart` draws it with QPainter
(QtCharts is not part of PySide6-Essentials). The x axis is the optimisation step; loss uses the
left axis (raw values thin, an exponential moving average bold), mIoU the right axis (0–1, one
marker per epoch, drawn at the step where that epoch ended).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

LOSS_COLOR = QColor(52, 101, 164)
LOSS_RAW_COLOR = QColor(52, 101, 164, 80)
MIOU_COLOR = QColor(204, 102, 0)
GRID_COLOR = QColor(0, 0, 0, 28)
EPOCH_COLOR = QColor(0, 0, 0, 45)


@dataclass
class TrainingCurves:
    """The points of one run. `smoothing` is the EMA weight of the previous value."""

    total_steps: int = 0
    epochs: int = 0
    smoothing: float = 0.8
    loss: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since last point)
    smoothed: list[tuple[int, float]] = field(default_factory=list)
    miou: list[tuple[int, int, float]] = field(default_factory=list)  # (step, epoch, val mIoU)
    epoch_ends: list[int] = field(default_factory=list)  # step at the end of each epoch

    def clear(self, total_steps: int = 0, epochs: int = 0) -> None:
        self.total_steps, self.epochs = int(total_steps), int(epochs)
        self.loss.clear()
        self.smoothed.clear()
        self.miou.clear()
        self.epoch_ends.clear()

    def add_loss(self, step: int, loss: float) -> None:
        if loss is None or not math.isfinite(loss):
            return
        prev = self.smoothed[-1][1] if self.smoothed else loss
        self.loss.append((int(step), float(loss)))
        self.smoothed.append((int(step), self.smoothing * prev + (1 - self.smoothing) * float(loss)))

    def add_epoch(self, step: int, epoch: int, miou: float | None) -> None:
        self.epoch_ends.append(int(step))
        if miou is not None and math.isfinite(miou):
            self.miou.append((int(step), int(epoch), float(miou)))

    def x_max(self) -> int:
        last = max([s for s, _ in self.loss] + self.epoch_ends + [1])
        return max(self.total_steps, last)

    def loss_max(self) -> float:
        """Top of the loss axis: 4 × a round tick step."""
        return 4 * nice_ceiling(max((v for _, v in self.loss), default=1.0) / 4)


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k that is ≥ value (axis top)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= value * 0.999999:
            return m * exp
    return 10 * exp


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """Evenly spaced tick values 0..top."""
    return [top * i / count for i in range(count + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


class TrainingChart(QWidget):
    """Draws `self.curves`; call `refresh()` (or the add_* helpers) after changing it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.curves = TrainingCurves()
        self.setMinimumSize(360, 200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)

    def sizeHint(self) -> QSize:
        return QSize(560, 260)

    # --- data --------------------------------------------------------------------------------
    def clear(self, total_steps: int = 0, epochs: int = 0) -> None:
        self.curves.clear(total_steps, epochs)
        self.update()

    def add_loss(self, step: int, loss: float | None, total_steps: int | None = None) -> None:
        if total_steps:
            self.curves.total_steps = int(total_steps)
        self.curves.add_loss(step, loss)
        self.update()

    def add_epoch(self, step: int, epoch: int, miou: float | None) -> None:
        self.curves.add_epoch(step, epoch, miou)
        self.update()

    # --- drawing -----------------------------------------------------------------------------
    def plot_rect(self) -> QRectF:
        fm = self.fontMetrics()
        left = fm.horizontalAdvance("0.000") + 14
        right = fm.horizontalAdvance("1.00") + 14
        top = fm.height() + 12
        bottom = fm.height() + 10
        return QRectF(left, top, max(10.0, self.width() - left - right), max(10.0, self.height() - top - bottom))

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        pal = self.palette()
        p.fillRect(self.rect(), pal.base())
        text_color = pal.text().color()
        rect = self.plot_rect()
        c = self.curves
        small = QFont(self.font())
        small.setPointSizeF(max(7.0, self.font().pointSizeF() * 0.9))
        p.setFont(small)
        fm = p.fontMetrics()

        x_max, loss_top = c.x_max(), c.loss_max()

        def x_of(step: float) -> float:
            return rect.left() + rect.width() * step / x_max

        def y_loss(v: float) -> float:
            return rect.bottom() - rect.height() * min(v, loss_top) / loss_top

        def y_miou(v: float) -> float:
            return rect.bottom() - rect.height() * max(0.0, min(1.0, v))

        # grid and axes
        p.setPen(QPen(GRID_COLOR, 1))
        for i, t in enumerate(nice_ticks(loss_top)):
            y = y_loss(t)
            p.drawLine(QPointF(rect.left(), y), QPointF(rect.right(), y))
            p.setPen(QPen(LOSS_COLOR))
            p.drawText(QRectF(0, y - fm.height() / 2, rect.left() - 5, fm.height()),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, _fmt(t))
            p.setPen(QPen(MIOU_COLOR))
            p.drawText(QRectF(rect.right() + 5, y - fm.height() / 2, 60, fm.height()),
                       Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, f"{i / 4:.2f}")
            p.setPen(QPen(GRID_COLOR, 1))
        p.setPen(QPen(EPOCH_COLOR, 1, Qt.PenStyle.DashLine))
        for s in c.epoch_ends[:-1] if len(c.epoch_ends) <= 60 else []:
            p.drawLine(QPointF(x_of(s), rect.top()), QPointF(x_of(s), rect.bottom()))
        p.setPen(QPen(text_color, 1))
        p.drawLine(rect.bottomLeft(), rect.bottomRight())
        p.drawText(QRectF(rect.left(), rect.bottom() + 3, rect.width(), fm.height()),
                   Qt.AlignmentFlag.AlignLeft, "0")
        p.drawText(QRectF(rect.left(), rect.bottom() + 3, rect.width(), fm.height()),
                   Qt.AlignmentFlag.AlignHCenter, "step")
        p.drawText(QRectF(rect.left(), rect.bottom() + 3, rect.width(), fm.height()),
                   Qt.AlignmentFlag.AlignRight, str(x_max))

        # legend
        lx, ly = rect.left(), 4.0 + fm.ascent() / 2 + 2
        for color, label, width in ((LOSS_COLOR, "training loss (smoothed)", 2.5), (MIOU_COLOR, "validation mIoU", 2.0)):
            p.setPen(QPen(color, width))
            p.drawLine(QPointF(lx, ly), QPointF(lx + 18, ly))
            p.setPen(QPen(text_color))
            p.drawText(QPointF(lx + 23, ly + fm.ascent() / 2 - 1), label)
            lx += 23 + fm.horizontalAdvance(label) + 18

        if not c.loss and not c.miou:
            p.setPen(QPen(pal.placeholderText().color()))
            p.drawText(rect, Qt.AlignmentFlag.AlignCenter, "Loss and validation mIoU appear here during training")
            p.end()
            return

        p.setClipRect(rect.adjusted(-4, -4, 4, 4))
        if len(c.loss) > 1:
            p.setPen(QPen(LOSS_RAW_COLOR, 1))
            p.drawPath(_polyline([(x_of(s), y_loss(v)) for s, v in c.loss]))
            p.setPen(QPen(LOSS_COLOR, 2.5, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin))
            p.drawPath(_polyline([(x_of(s), y_loss(v)) for s, v in c.smoothed]))
        elif c.loss:
            s, v = c.smoothed[0]
            p.setBrush(LOSS_COLOR)
            p.setPen(Qt.PenStyle.NoPen)
            p.drawEllipse(QPointF(x_of(s), y_loss(v)), 3, 3)
        if c.miou:
            pts = [(x_of(s), y_miou(v)) for s, _, v in c.miou]
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.setPen(QPen(MIOU_COLOR, 2))
            if len(pts) > 1:
                p.drawPath(_polyline(pts))
            p.setBrush(MIOU_COLOR)
            for x, y in pts:
                p.drawEllipse(QPointF(x, y), 3.5, 3.5)
            # the latest value next to its marker
            x, y = pts[-1]
            label = f"{c.miou[-1][2]:.3f}"
            w = fm.horizontalAdvance(label)
            tx = min(x + 6, rect.right() - w - 2)
            ty = y - 6 if y - 6 - fm.ascent() > rect.top() else y + fm.ascent() + 6
            p.setPen(QPen(MIOU_COLOR))
            p.drawText(QPointF(tx, ty), label)
        p.end()


def _polyline(points: list[tuple[float, float]]) -> QPainterPath:
    path = QPainterPath(QPointF(*points[0]))
    for x, y in points[1:]:
        path.lineTo(x, y)
    return path


__all__ = ["TrainingChart", "TrainingCurves", "nice_ceiling"]
