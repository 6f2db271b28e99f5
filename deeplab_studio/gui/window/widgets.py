"""Small window parts: the non-modal message banner, status bar fields, the shortcuts help."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFrame, QHBoxLayout, QHeaderView, QLabel, QStatusBar,
                               QTableWidget, QTableWidgetItem, QToolButton, QVBoxLayout, QWidget)

_BANNER_STYLE = {
    "error": "background:#5c1f24; color:#ffe3e3; border-bottom:1px solid #a8323d;",
    "warning": "background:#5a4a16; color:#fff4d0; border-bottom:1px solid #b8962a;",
    "info": "background:#1f3d5c; color:#e3f0ff; border-bottom:1px solid #3a6ea8;",
}


def dismiss_button(tooltip: str, slot) -> QToolButton:
    """The flat ✕ button that closes a banner or notice."""
    button = QToolButton()
    button.setText("✕")
    button.setAutoRaise(True)
    button.setToolTip(tooltip)
    button.clicked.connect(slot)
    return button


class Banner(QFrame):
    """A dismissable one-line message above the canvas (never modal)."""

    closed = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = dismiss_button("Dismiss", self.dismiss)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(10, 6, 6, 6)
        lay.addWidget(self.label, 1)
        lay.addWidget(close)
        self.level = "info"
        self.hide()

    def show_message(self, text: str, level: str = "error") -> None:
        self.level = level
        self.setStyleSheet(f"Banner {{{_BANNER_STYLE.get(level, _BANNER_STYLE['info'])}}} QLabel {{background:transparent;}}")
        self.label.setText(text)
        self.show()

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""

    def dismiss(self) -> None:
        self.hide()
        self.closed.emit()


class StatusFields:
    """Permanent status-bar fields: cursor, class under cursor, zoom, image size, save state."""

    def __init__(self, bar: QStatusBar) -> None:
        self.bar = bar
        self.position = QLabel()
        self.klass = QLabel()
        self.zoom = QLabel()
        self.size = QLabel()
        self.save_state = QLabel()
        widths = (110, 170, 70, 100, 120)
        self.fields = (self.position, self.klass, self.zoom, self.size, self.save_state)
        for label, w in zip(self.fields, widths):
            label.setMinimumWidth(w)
            bar.addPermanentWidget(label)

    def elided(self, text: str) -> str:
        """`text` shortened with … to the room the permanent fields leave (the banner has it all)."""
        used = sum(w.width() for w in self.bar.findChildren(QWidget) if w.isVisible() and w.parent() is self.bar
                   and w not in (self.bar,))
        room = max(160, self.bar.width() - used - 40)
        return self.bar.fontMetrics().elidedText(text, Qt.TextElideMode.ElideRight, room)

    def set_cursor(self, x: int | None, y: int | None, class_text: str = "") -> None:
        self.position.setText("" if x is None else f"x {x}  y {y}")
        self.klass.setText(class_text)

    def set_zoom(self, z: float) -> None:
        self.zoom.setText(f"{z * 100:.0f} %" if z >= 0.1 else f"{z * 100:.1f} %")

    def set_size(self, w: int | None, h: int | None) -> None:
        self.size.setText("" if w is None else f"{w} × {h}")

    def set_save_state(self, text: str, ok: bool = True) -> None:
        self.save_state.setText(text)
        self.save_state.setStyleSheet("" if ok else "color:#ff6b6b; font-weight:bold;")

    def clear_image(self) -> None:
        """No image shown: empty every field that describes one (cursor, class, zoom, size, save)."""
        self.set_cursor(None, None)
        self.zoom.setText("")
        self.set_size(None, None)
        self.set_save_state("")


class ShortcutsDialog(QDialog):
    """Help → Keyboard shortcuts: (where, what, keys) rows from the action registry."""

    def __init__(self, rows: list[tuple[str, str, str]], parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        table = QTableWidget(len(rows), 3)
        table.setHorizontalHeaderLabels(["Where", "What", "Keys"])
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                table.setItem(r, c, QTableWidgetItem(text))
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        table.verticalHeader().setDefaultSectionSize(24)
        table.resizeColumnsToContents()
        self.table = table
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(table)
        lay.addWidget(buttons)
        self.resize(560, 640)
