"""Short jobs for Qt's global thread pool (CRF refinement, writing the project index), answered
in the GUI thread: `run_async(owner, token, fn, callback)` calls `callback(token, result)`, where
`result` is `fn()`'s return value or the exception it raised.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal


class _Task(QRunnable):
    """Runs `fn()` in the thread pool; answers `done(token, result or Exception)` in the GUI thread."""

    class Emitter(QObject):
        done = Signal(object, object)

    def __init__(self, token, fn) -> None:
        super().__init__()
        self.emitter = _Task.Emitter()
        self.token, self.fn = token, fn

    def run(self) -> None:
        try:
            out = self.fn()
        except Exception as exc:  # noqa: BLE001 - reported in the window
            out = exc
        try:
            self.emitter.done.emit(self.token, out)
        except RuntimeError:  # the app quit meanwhile and its objects are gone: nobody to tell
            pass


def run_async(owner: QObject, token, fn, callback) -> None:
    """Run `fn()` in the global thread pool, then `callback(token, result)` in the GUI thread."""
    task = _Task(token, fn)
    task.emitter.done.connect(callback)
    owner._tasks = getattr(owner, "_tasks", set()) | {task.emitter}  # keep the emitter alive until done
    task.emitter.done.connect(lambda *_: owner._tasks.discard(task.emitter))
    QThreadPool.globalInstance().start(task)


def run_crf_async(owner: QObject, token, image, labels, protect, params, callback) -> None:
    """Refine `labels` (human pixels in `protect` kept) in the thread pool; `callback(token, result)`."""
    labels, protect = labels.copy(), protect.copy()

    def work():
        from deeplab_studio.ml.crf import refine_labels

        return refine_labels(image, labels, protect=protect, params=params)

    run_async(owner, token, work, callback)
