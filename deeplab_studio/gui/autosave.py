"""Debounced autosave: each change is written atomically through `Project.save_annotation`
at most `delay_ms` after the last edit; `flush()` saves at once (image switch, close, export).

The undo stack's clean state is the "saved" marker: a successful save calls `setClean()`.
A failed save (read-only folder, disk full) leaves the state dirty, reports `failed(message)`
and is retried on the next change or flush.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QUndoStack

from deeplab_studio.gui.document import AnnotationDocument

DELAY_MS = 800


class AutoSaver(QObject):
    saved = Signal(object)  # the record that was written
    failed = Signal(str)  # one line naming the file and the reason

    def __init__(self, parent=None, *, delay_ms: int = DELAY_MS) -> None:
        super().__init__(parent)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(delay_ms)
        self.timer.timeout.connect(self.flush)
        self.project = self.record = self.document = None
        self.stack: QUndoStack | None = None
        self._forced = False
        self.pending_status = None  # status for the next save (e.g. auto after a model run)

    def attach(self, project, record, document: AnnotationDocument | None, stack: QUndoStack | None) -> None:
        """Follow another image (call `flush()` first)."""
        self.timer.stop()
        self.project, self.record, self.document, self.stack = project, record, document, stack
        self._forced = False
        self.pending_status = None

    def detach(self) -> None:
        self.attach(None, None, None, None)

    def dirty(self) -> bool:
        if self.document is None:
            return False
        return self._forced or (self.stack is not None and not self.stack.isClean())

    def schedule(self, *, force: bool = False) -> None:
        """A change happened: save after the debounce delay. `force` marks changes outside the
        undo stack (e.g. a class deletion remap) as unsaved."""
        self._forced = self._forced or force
        if self.dirty():
            self.timer.start()

    def flush(self) -> bool:
        """Save now if anything is unsaved. True when the file on disk is up to date."""
        self.timer.stop()
        if not self.dirty():
            return True
        rec, doc = self.record, self.document
        try:
            status = None if self.pending_status is None or doc.edit_mask.any() else self.pending_status
            self.project.save_annotation(rec, doc.labels, doc.edit_mask, status=status)
        except Exception as exc:  # noqa: BLE001 - any failure must end as a message, never a crash
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.failed.emit(f"Could not save the annotation of {rec.path}: {reason}")
            return False
        self._forced = False
        self.pending_status = None
        if self.stack is not None:
            self.stack.setClean()
        self.saved.emit(rec)
        return True
