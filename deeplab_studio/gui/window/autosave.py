"""Debounced autosave: each change is written atomically through `Project.save_annotation`
at most about `delay_ms` after it (the first unsaved change starts the timer; later ones do not
restart it, so steady painting is saved too); `flush()` saves at once (image switch, close, export).

Debounced saves run on a background thread from a snapshot of the label map and edit mask,
so encoding a large label map never freezes painting; `flush()` waits for them and saves
synchronously. The undo stack's clean state is the "saved" marker: a save whose snapshot is
still the current state calls `setClean()`. A failed save (read-only folder, disk full) leaves
the state dirty, reports `failed(message)` and is retried on the next change or flush.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QUndoStack

from deeplab_studio.session.document import AnnotationDocument
from deeplab_studio.session.history import SaveTarget, save_failure

DELAY_MS = 800


class AutoSaver(QObject, SaveTarget):
    saved = Signal(object)  # the record that was written
    failed = Signal(str)  # one line naming the file and the reason
    _finished = Signal(object, object, int, object)  # (record, document, stack index, error) from the thread

    def __init__(self, parent=None, *, delay_ms: int = DELAY_MS, background: bool = True) -> None:
        super().__init__(parent)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(delay_ms)
        self.timer.timeout.connect(self._save_in_background if background else self.flush)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="autosave")
        self._inflight: Future | None = None
        self._finished.connect(self._background_done)

    def attach(self, project, record, document: AnnotationDocument | None, stack: QUndoStack | None) -> None:
        """Follow another image (call `flush()` first)."""
        self.timer.stop()
        super().attach(project, record, document, stack)

    def schedule(self, *, force: bool = False) -> None:
        """A change happened: save after the debounce delay. `force` marks changes outside the
        undo stack (e.g. a class deletion remap) as unsaved."""
        self._forced = self._forced or force
        if self.dirty() and not self.timer.isActive():
            # not restarted by later changes: steady painting must not postpone the save forever
            self.timer.start()

    def wait(self) -> None:
        """Block until a background save in flight has finished (its result is then handled)."""
        fut, self._inflight = self._inflight, None
        if fut is not None:
            rec, doc, index, error = fut.result()
            self._background_done(rec, doc, index, error)

    def flush(self) -> bool:
        """Save now (in this thread) if anything is unsaved. True when the file on disk is up to date."""
        self.timer.stop()
        self.wait()
        return self._save_now()

    def _save_in_background(self) -> None:
        if not self.dirty():
            return
        if self._inflight is not None:  # one at a time: try again when it is done
            self.timer.start()
            return
        rec, doc, project = self.record, self.document, self.project
        labels, mask = doc.labels.copy(), doc.edit_mask.copy()
        seq = project.journal_last(rec)  # the journaled changes this snapshot contains
        status = self._status(mask)
        index = self.stack.index() if self.stack is not None else -1

        def work():
            try:
                project.save_annotation(rec, labels, mask, status=status, journal_seq=seq)
            except Exception as exc:  # noqa: BLE001
                return rec, doc, index, exc
            return rec, doc, index, None

        fut = self._pool.submit(work)
        self._inflight = fut
        fut.add_done_callback(lambda f: self._finished.emit(*f.result()) if self._inflight is f else None)

    def _background_done(self, rec, doc, index, error) -> None:
        if self._inflight is not None and self._inflight.done():
            self._inflight = None
        if doc is not self.document:
            return  # the user moved on; flush() already saved that image
        if error is not None:
            self.failed.emit(save_failure(rec, error))
            return
        if self.stack is None or self.stack.index() == index:
            self._mark_clean()
            self.saved.emit(rec)
        else:
            self.saved.emit(rec)  # written, but newer edits exist: stay dirty and save again
            self.schedule()

    def shutdown(self) -> None:
        self.wait()
        self._pool.shutdown(wait=True)
