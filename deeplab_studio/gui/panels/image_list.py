"""The image list dock: every image with its status icon, status and text filters, counts."""

from __future__ import annotations

from bisect import bisect_left

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
    """Lists (path, status) rows; emits `imageActivated(index)` with the record index.

    Switching images never walks the list: the shown rows are kept as a sorted index list,
    updated row by row on status changes and rebuilt only when a filter changes."""

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
        self._names: list[str] = []  # lower-case, for the text filter
        self._shown: list[bool] = []  # per record: does the filter show its row
        self._order: list[int] = []  # the shown record indices, ascending (kept in step, not rebuilt)
        self._reviewed = 0
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
        self._names = [n.lower() for n in names]
        self._statuses = list(statuses)
        self._shown = [True] * len(self._statuses)  # new items are shown
        self._order = list(range(len(self._statuses)))
        self._reviewed = sum(s == "reviewed" for s in self._statuses)
        for i, (name, status) in enumerate(zip(names, statuses)):
            item = QListWidgetItem(self._icons.get(status, QIcon()), name)
            item.setData(Qt.ItemDataRole.UserRole, i)
            item.setToolTip(f"{name} — {status}")
            self.list.addItem(item)
        self.list.blockSignals(False)
        self._apply_filter()

    def set_status(self, index: int, status: str) -> None:
        """Change one row's status; O(log n): only that row is touched, the filter kept current."""
        if not 0 <= index < len(self._statuses):
            return
        old, self._statuses[index] = self._statuses[index], status
        self._reviewed += (status == "reviewed") - (old == "reviewed")
        item = self.list.item(index)
        item.setIcon(self._icons.get(status, QIcon()))
        item.setToolTip(f"{item.text()} — {status}")
        self._show_row(index, self._accepts(index, *self._filter()))
        self._update_counts()

    def status(self, index: int) -> str:
        """The status row `index` shows."""
        return self._statuses[index]

    def set_current(self, index: int) -> None:
        item = self.list.item(index) if index >= 0 else None
        self.list.blockSignals(True)
        self.list.setCurrentItem(item)
        self.list.blockSignals(False)
        if item is not None:
            self.list.scrollToItem(item)

    def visible_indices(self) -> list[int]:
        """Record indices of the rows the filters show, in list order (a copy)."""
        return list(self._order)

    def shown_count(self) -> int:
        return len(self._order)

    def is_shown(self, index: int) -> bool:
        return 0 <= index < len(self._shown) and self._shown[index]

    def neighbour(self, index: int, delta: int) -> int | None:
        """The shown row `delta` rows away from record `index` (from a hidden `index`, +1/-1 are
        the first shown row after/before it); None past either end. O(log n), no row visited."""
        order = self._order
        pos = bisect_left(order, index)
        if pos < len(order) and order[pos] == index:
            pos += delta
        else:
            pos += delta if delta < 0 else delta - 1
        return order[pos] if delta and 0 <= pos < len(order) else None

    def _filter(self) -> tuple[str, str]:
        return FILTERS[self.status_filter.currentIndex()], self.text_filter.text().strip().lower()

    def _accepts(self, i: int, f: str, text: str) -> bool:
        status = self._statuses[i]
        if f == "not reviewed":
            ok = status != "reviewed"
        else:
            ok = f == "all" or status == f
        return ok and (not text or text in self._names[i])

    def _show_row(self, i: int, ok: bool) -> None:
        """Show or hide row `i`, keeping the sorted list of shown rows in step."""
        if ok == self._shown[i]:
            return
        self._shown[i] = ok
        self.list.item(i).setHidden(not ok)
        pos = bisect_left(self._order, i)
        if ok:
            self._order.insert(pos, i)
        else:
            del self._order[pos]

    def _apply_filter(self) -> None:
        """Re-filter every row (the filter changed): the only O(n) pass, never per image switch."""
        f, text = self._filter()
        for i in range(len(self._statuses)):
            ok = self._accepts(i, f, text)
            if ok != self._shown[i]:
                self._shown[i] = ok
                self.list.item(i).setHidden(not ok)
        self._order = [i for i, ok in enumerate(self._shown) if ok]
        self._update_counts()

    def _update_counts(self) -> None:
        total, shown = len(self._statuses), len(self._order)
        text = f"{self._reviewed} / {total} reviewed"
        if shown != total:
            text += f" · {shown} shown"
        self.counts.setText(text)

    def _clicked(self, item: QListWidgetItem) -> None:
        self.imageActivated.emit(int(item.data(Qt.ItemDataRole.UserRole)))
