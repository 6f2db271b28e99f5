"""The session's background writer: proposals for images that are not open are merged into their
saved label maps (human pixels kept, `core.merge`) on one I/O thread, in order. Opening an image
first waits for its queued merges, so a read never sees a half-merged state."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from deeplab_studio.core.merge import merge_proposal


class MergeQueue:
    def __init__(self, call_soon: Callable[[Callable[[], None]], None]) -> None:
        """`call_soon(fn)` delivers completions on the owner's thread."""
        self._call_soon = call_soon
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="session-io")
        self._pending: dict[str, Future] = {}

    def merge(self, project, rec, proposal: np.ndarray, done: Callable[[BaseException | None], None]) -> Future:
        """Merge `proposal` into the saved map of `rec`; `done(error or None)` follows."""
        proposal = np.asarray(proposal, dtype=np.uint8)

        def work() -> None:
            labels, mask = project.load_annotation(rec)
            project.save_annotation(rec, merge_proposal(labels, mask, proposal), mask)

        def finished(fut: Future) -> None:
            if self._pending.get(rec.path) is fut:
                del self._pending[rec.path]
            done(fut.exception())

        fut = self._pool.submit(work)
        self._pending[rec.path] = fut
        fut.add_done_callback(lambda f: self._call_soon(lambda: finished(f)))
        return fut

    def wait(self, key: str | None = None) -> None:
        """Block until the queued merges of image `key` (or all) are written."""
        for k, fut in list(self._pending.items()):
            if key is None or k == key:
                try:
                    fut.result()
                except Exception:  # noqa: BLE001 - reported through its `done`
                    pass

    def shutdown(self) -> None:
        self.wait()
        self._pool.shutdown(wait=True)
