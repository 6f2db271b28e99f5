"""The lower half of the import and export dialogs: a progress bar, a one-line message and a
report, for a job that runs in the background, and the row of buttons under them."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton, QVBoxLayout, QWidget


class JobStatus(QWidget):
    """Progress, message and report of one background job; hidden parts appear as it runs."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.report = QPlainTextEdit()
        self.report.setReadOnly(True)
        self.report.setVisible(False)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.progress)
        lay.addWidget(self.message)
        lay.addWidget(self.report, 1)

    def say(self, text: str) -> None:
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.setText(text)

    def busy(self, text: str | None = None) -> None:
        """A running job of unknown length."""
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        if text is not None:
            self.say(text)

    def step(self, done: int, total: int, what: str) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.say(f"{done} / {total}  {what}")

    def finished(self, text: str, report: str) -> None:
        """The bar full, the one-line result and the report shown."""
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.say(text)
        self.report.setPlainText(report)
        self.report.setVisible(True)

    def failed(self, text: str) -> None:
        """The bar hidden and `text` in red."""
        self.progress.setVisible(False)
        self.message.setTextFormat(Qt.TextFormat.RichText)
        self.message.setText(f"<span style='color:#d33'>{html.escape(text)}</span>")


def button_row(*buttons: QPushButton) -> QHBoxLayout:
    """`buttons` right-aligned in one row."""
    row = QHBoxLayout()
    row.addStretch(1)
    for b in buttons:
        row.addWidget(b)
    return row
