"""The image list dock: every image with its status icon, status and text filters, counts."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem,
                               QVBoxLayout, QWidget)

STATUS_COLORS = {"unlabeled": "#8a8f98", "auto": "#4aa3ff", "edited": "#f0a030", "reviewed": "#3cc36b"}
FILTERS = ("all", "unlabeled", "auto", "edited", "reviewed", "not reviewed")


def status_icon(status: str, size: int = 12) -> QIcon:
    """A filled circle (hollow for unlabeled) in the status colour."""
    pm = QPixmap(size, size)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    color = QColor(STATUS_COLORS.get(status, "#888888"))
    p.setPen(color)
    p.setBrush(Qt.BrushStyle.NoBrush if status == "unlabeled" else color)
    p.drawEllipse(1, 1, size - 3, size - 3)
    p.end()
    return QIcon(pm)


class ImageListPanel(QWidget):
    """Lists (path, status) rows; emits `imageActivated(index)` with the record index."""

    imageActivated = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.status_filter = QComboBox()
        self.status_filter.addItems([f.capitalize() for f in FILTERS])
        self.status_filter.setToolTip("Show only images with this status")
        self.text_filter = QLineEdit()
        self.text_filter.setPlaceholderText("Filter by name…")
        self.text_filter.setClearButtonEnabled(True)
        self.counts = QLabel("no folder open")
        self.counts.setObjectName("imageCounts")
        self.list = QListWidget()
        self.list.setUniformItemSizes(True)
        self.list.setIconSize(QSize(12, 12))
        top = QHBoxLayout()
        top.addWidget(self.status_filter)
        top.addWidget(self.text_filter, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.list, 1)
        lay.addWidget(self.counts)
        self._statuses: list[str] = []
        self._icons = {s: status_icon(s) for s in STATUS_COLORS}
        self.status_filter.currentIndexChanged.connect(self._apply_filter)
        self.text_filter.textChanged.connect(self._apply_filter)
        self.list.itemClicked.connect(self._clicked)
        self.list.itemActivated.connect(self._clicked)
        # arrow keys / Home / End in the list open the image they move to (`set_current` blocks this)
        self.list.currentItemChanged.connect(lambda item, _prev: self._clicked(item) if item is not None else None)

    def set_images(self, names: list[str], statuses: list[str]) -> None:
        self.list.blockSignals(True)  # filling the list is not the user choosing an image
        self.list.clear()
        self._statuses = list(statuses)
        for i, (name, status) in enumerate(zip(names, statuses)):
            item = QListWidgetItem(self._icons.get(status, QIcon()), name)
            item.setData(Qt.ItemDataRole.UserRole, i)
            item.setToolTip(f"{name} — {status}")
            self.list.addItem(item)
        self.list.blockSignals(False)
        self._apply_filter()

    def set_status(self, index: int, status: str) -> None:
        if not 0 <= index < len(self._statuses):
            return
        self._statuses[index] = status
        item = self.list.item(index)
        item.setIcon(self._icons.get(status, QIcon()))
        item.setToolTip(f"{item.text()} — {status}")
        self._apply_filter()

    def set_current(self, index: int) -> None:
        item = self.list.item(index) if index >= 0 else None
        self.list.blockSignals(True)
        self.list.setCurrentItem(item)
        self.list.blockSignals(False)
        if item is not None:
            self.list.scrollToItem(item)

    def visible_indices(self) -> list[int]:
        return [i for i in range(self.list.count()) if not self.list.item(i).isHidden()]

    def _accepts(self, i: int) -> bool:
        f = FILTERS[self.status_filter.currentIndex()]
        status = self._statuses[i]
        if f == "not reviewed":
            ok = status != "reviewed"
        else:
            ok = f == "all" or status == f
        text = self.text_filter.text().strip().lower()
        return ok and (not text or text in self.list.item(i).text().lower())

    def _apply_filter(self) -> None:
        for i in range(self.list.count()):
            self.list.item(i).setHidden(not self._accepts(i))
        total = len(self._statuses)
        reviewed = sum(s == "reviewed" for s in self._statuses)
        shown = len(self.visible_indices())
        text = f"{reviewed} / {total} reviewed"
        if shown != total:
            text += f" · {shown} shown"
        self.counts.setText(text)

    def _clicked(self, item: QListWidgetItem) -> None:
        self.imageActivated.emit(int(item.data(Qt.ItemDataRole.UserRole)))
