"""The class panel dock: swatches, pixel counts, active class, visibility, class editing."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import (QColorDialog, QComboBox, QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout,
                               QInputDialog, QLabel, QListWidget, QListWidgetItem, QSizePolicy, QStyle,
                               QStyledItemDelegate, QToolButton, QVBoxLayout, QWidget)

from deeplab_studio.core.labels import BACKGROUND, IGNORE, IGNORE_COLOR, LabelSet


def swatch(color: tuple[int, int, int], size: int = 14) -> QIcon:
    """The class colour with a thin grey frame, the same when its row is selected (Qt would tint
    the selected row's icon with the highlight colour and show the active class in a wrong colour)."""
    pm = QPixmap(size, size)
    pm.fill(QColor(*color))
    p = QPainter(pm)
    p.setPen(QColor(96, 96, 96))
    p.drawRect(0, 0, size - 1, size - 1)
    p.end()
    icon = QIcon()
    for mode in (QIcon.Mode.Normal, QIcon.Mode.Selected, QIcon.Mode.Active):
        icon.addPixmap(pm, mode)
    return icon


def _fmt_count(n: int) -> str:
    if n >= 10_000_000:
        return f"{n / 1e6:.0f} M"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} M"
    if n >= 10_000:
        return f"{n / 1e3:.0f} k"
    return str(n)


COUNT_ROLE = Qt.ItemDataRole.UserRole + 2  # the pixel count text, drawn right-aligned by CountDelegate


class CountDelegate(QStyledItemDelegate):
    """Draws a row as usual plus its pixel count right-aligned, so the counts line up."""

    def paint(self, painter, option, index) -> None:
        super().paint(painter, option, index)
        text = index.data(COUNT_ROLE)
        if not text:
            return
        painter.save()
        selected = option.state & QStyle.StateFlag.State_Selected
        role = QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        painter.setPen(option.palette.color(role))
        painter.drawText(option.rect.adjusted(0, 0, -8, 0),
                         int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), text)
        painter.restore()


class ClassPanel(QWidget):
    """One row per class (checkbox = shown in the overlay) plus an `ignore` row.

    Emits `activeChanged(value)`, `hiddenChanged(set)` and edit requests the window carries out:
    `addRequested(name)`, `renameRequested(index, name)`, `recolorRequested(index, (r, g, b))`,
    `deleteRequested(index, replacement)`.
    """

    activeChanged = Signal(int)
    hiddenChanged = Signal(object)
    addRequested = Signal(str)
    renameRequested = Signal(int, str)
    recolorRequested = Signal(int, object)
    deleteRequested = Signal(int, int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.list = QListWidget()
        self.list.setIconSize(QSize(14, 14))
        self.list.setUniformItemSizes(True)
        self.list.setItemDelegate(CountDelegate(self.list))
        self.buttons = {}
        row = QHBoxLayout()
        for key, text, tip in (("add", "Add", "Add a class"), ("rename", "Rename", "Rename the selected class"),
                               ("recolor", "Colour", "Change the selected class's colour"),
                               ("delete", "Delete", "Delete the selected class; choose who takes its pixels")):
            b = QToolButton()
            b.setText(text)
            b.setToolTip(tip)
            b.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            row.addWidget(b)
            self.buttons[key] = b
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.list, 1)
        lay.addLayout(row)
        self.labelset = LabelSet.voc()
        self.hidden: set[int] = set()
        self.active = 1
        self._counts = np.zeros(256, np.int64)
        self.list.currentItemChanged.connect(self._current_changed)
        self.list.itemChanged.connect(self._item_changed)
        self.buttons["add"].clicked.connect(self._ask_add)
        self.buttons["rename"].clicked.connect(self._ask_rename)
        self.buttons["recolor"].clicked.connect(self._ask_recolor)
        self.buttons["delete"].clicked.connect(self._ask_delete)

    # --- content ----------------------------------------------------------------------------
    def set_labelset(self, labelset: LabelSet) -> None:
        self.labelset = labelset
        self.hidden = {h for h in self.hidden if h < len(labelset) or h == IGNORE}
        self.list.blockSignals(True)
        self.list.clear()
        entries = [(i, n, c) for i, (n, c) in enumerate(zip(labelset.names, labelset.colors))]
        entries.append((IGNORE, "ignore", IGNORE_COLOR))
        for value, name, color in entries:
            item = QListWidgetItem(swatch(color), "")
            item.setData(Qt.ItemDataRole.UserRole, value)
            item.setData(Qt.ItemDataRole.UserRole + 1, name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked if value in self.hidden else Qt.CheckState.Checked)
            self.list.addItem(item)
        self.list.blockSignals(False)
        if self.active != IGNORE and self.active >= len(labelset):
            self.active = min(1, len(labelset) - 1)
        self.set_counts(self._counts)
        self.select(self.active, emit=False)

    @property
    def counts(self) -> np.ndarray:
        """Pixels per label value the rows show (256 entries)."""
        return self._counts.copy()

    def set_counts(self, counts: np.ndarray) -> None:
        self._counts = np.asarray(counts)
        self.list.blockSignals(True)
        for row in range(self.list.count()):
            item = self.list.item(row)
            value = item.data(Qt.ItemDataRole.UserRole)
            name = item.data(Qt.ItemDataRole.UserRole + 1)
            key = f"{value}" if value != IGNORE else "–"
            count = int(self._counts[value]) if value < len(self._counts) else 0
            item.setText(f"{key:>3}  {name}")
            item.setData(COUNT_ROLE, f"{_fmt_count(count)} px" if count else "")
            what = "background (never drawn in the overlay)" if value == BACKGROUND else name
            item.setToolTip(f"{what}: {count:,} pixel{'' if count == 1 else 's'} in this image" if count else what)
        self.list.blockSignals(False)

    def select(self, value: int, *, emit: bool = True) -> bool:
        """Make class `value` active (False if there is no such class)."""
        for row in range(self.list.count()):
            if self.list.item(row).data(Qt.ItemDataRole.UserRole) == value:
                self.active = value
                self.list.blockSignals(True)
                self.list.setCurrentRow(row)
                self.list.blockSignals(False)
                if emit:
                    self.activeChanged.emit(value)
                return True
        return False

    def selected_class(self) -> int | None:
        item = self.list.currentItem()
        return None if item is None else int(item.data(Qt.ItemDataRole.UserRole))

    def _current_changed(self, current: QListWidgetItem | None, _previous=None) -> None:
        if current is not None:
            self.active = int(current.data(Qt.ItemDataRole.UserRole))
            self.activeChanged.emit(self.active)

    def _item_changed(self, item: QListWidgetItem) -> None:
        value = int(item.data(Qt.ItemDataRole.UserRole))
        if item.checkState() == Qt.CheckState.Checked:
            self.hidden.discard(value)
        else:
            self.hidden.add(value)
        self.hiddenChanged.emit(set(self.hidden))

    # --- dialogs (interactive only; the window's methods do the work) -------------------------
    def _editable_selection(self) -> int | None:
        value = self.selected_class()
        return None if value is None or value == IGNORE else value

    def _ask_add(self) -> None:
        name, ok = QInputDialog.getText(self, "Add class", "Name of the new class:")
        if ok and name.strip():
            self.addRequested.emit(name.strip())

    def _ask_rename(self) -> None:
        value = self._editable_selection()
        if value is None:
            return
        name, ok = QInputDialog.getText(self, "Rename class", "New name:", text=self.labelset.names[value])
        if ok and name.strip():
            self.renameRequested.emit(value, name.strip())

    def _ask_recolor(self) -> None:
        value = self._editable_selection()
        if value is None:
            return
        color = QColorDialog.getColor(QColor(*self.labelset.colors[value]), self, "Class colour")
        if color.isValid():
            self.recolorRequested.emit(value, (color.red(), color.green(), color.blue()))

    def _ask_delete(self) -> None:
        value = self._editable_selection()
        if value is None or value == BACKGROUND:
            return
        dlg = DeleteClassDialog(self.labelset, value, self)
        if dlg.exec() == QDialog.DialogCode.Accepted:
            self.deleteRequested.emit(value, dlg.replacement())


class DeleteClassDialog(QDialog):
    """Asks which class takes the pixels of the class being deleted."""

    def __init__(self, labelset: LabelSet, index: int, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Delete class “{labelset.names[index]}”")
        self.choice = QComboBox()
        for i, name in enumerate(labelset.names):
            if i != index:
                self.choice.addItem(f"{i}  {name}", i)
        self.choice.addItem("ignore (255)", IGNORE)
        form = QFormLayout(self)
        form.addRow(QLabel(f"Its pixels in every image of the project become:"))
        form.addRow("Replacement", self.choice)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def replacement(self) -> int:
        return int(self.choice.currentData())
