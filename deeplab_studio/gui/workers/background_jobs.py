"""Short background jobs of one owner (CRF snap and preview, VOC export, weights download,
training) on superqt workers in a thread pool of the owner's own; joined when the window closes.

`JobPool.start(fn, *args, on_result=..., on_error=..., on_progress=...)` runs
``fn(task, *args)`` on a pool thread, where `task` (the `TaskWorker`) offers ``task.cancelled()``
to poll and ``task.report(value)`` to send progress; the callbacks run in the GUI thread.

Two ways to stop a job, both honoured at the job's next ``task.cancelled()`` check:

- ``task.cancel()``: the user's Cancel; the job's return value (e.g. a cancelled training run's
  result) is still reported through `on_result`.
- ``worker.quit()`` (superqt's abort, what `JobPool.shutdown` sends when the window closes): nothing
  is reported any more; `shutdown` then waits, bounded, for every pool thread to end.

A pool is private to its owner, so closing one window never stops another window's jobs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThreadPool, Signal
from superqt.utils import WorkerBase, create_worker
from superqt.utils._qthreading import WorkerBaseSignals

DEFAULT_TIMEOUT_MS = 30_000


class TaskSignals(WorkerBaseSignals):
    progress = Signal(object)  # whatever the job reports (emitted in the pool thread, queued)


class TaskWorker(WorkerBase):
    """A superqt worker that calls ``func(self, *args, **kwargs)``: the job polls `cancelled()`
    and reports progress with `report()`."""

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(SignalsClass=TaskSignals)
        self._func, self._args, self._kwargs = func, args, kwargs
        self._cancel = threading.Event()
        self._ended = threading.Event()

    def cancel(self) -> None:
        """Ask the job to stop at its next check; its result is still reported."""
        self._cancel.set()

    def cancelled(self) -> bool:
        """True once `cancel()` or `quit()` was asked (polled by the job, in its thread)."""
        return self._cancel.is_set() or self.abort_requested

    def report(self, value: Any) -> None:
        """Send `value` to the `on_progress` callback (from the job's thread)."""
        if not self.abort_requested:
            self.signals.progress.emit(value)

    @property
    def ended(self) -> bool:
        """True once the job function has returned or raised (thread-safe)."""
        return self._ended.is_set()

    def work(self) -> Any:
        try:
            if self.abort_requested:  # quit before it began: nothing to do, nothing to report
                return None
            try:
                return self._func(self, *self._args, **self._kwargs)
            except Exception:
                if self.abort_requested:  # stopped by quit(): nobody listens any more
                    return None
                raise
        finally:
            self._ended.set()


class JobPool(QObject):
    """The owner's short jobs on its own `QThreadPool`; `shutdown()` stops and joins them."""

    def __init__(self, parent: QObject | None = None, *, max_threads: int = 2) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads)
        self._live: set[TaskWorker] = set()  # started and not yet finished (kept until `finished`)
        self._closed = False

    def jobs(self) -> list[TaskWorker]:
        """The jobs started and not finished yet."""
        return [w for w in self._live if not w.ended]

    def start(self, func: Callable[..., Any], *args: Any, on_result: Callable[[Any], None] | None = None,
              on_error: Callable[[BaseException], None] | None = None,
              on_progress: Callable[[Any], None] | None = None, **kwargs: Any) -> TaskWorker | None:
        """Run ``func(task, *args, **kwargs)`` on the pool; None after `shutdown()`."""
        if self._closed:
            return None
        worker = create_worker(func, *args, _worker_class=TaskWorker, _start_thread=False, _ignore_errors=True,
                               **kwargs)
        if on_result is not None:
            worker.returned.connect(on_result)
        if on_error is not None:
            worker.errored.connect(on_error)
        if on_progress is not None:
            worker.signals.progress.connect(on_progress)
        worker.signals._finished.connect(self._discard)  # emitted with the worker itself
        self._live.add(worker)
        self._pool.start(worker)
        return worker

    def _discard(self, worker: TaskWorker) -> None:
        self._live.discard(worker)

    def shutdown(self, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> bool:
        """Abort every job (no more results) and wait up to `timeout_ms` for the pool's threads
        to end; True when they all did. No job starts after this."""
        self._closed = True
        for worker in list(self._live):
            worker.quit()
        return bool(self._pool.waitForDone(timeout_ms))


__all__ = ["DEFAULT_TIMEOUT_MS", "JobPool", "TaskWorker"]
