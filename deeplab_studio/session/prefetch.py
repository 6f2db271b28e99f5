"""Decode the images the user is likely to open next (the neighbours in the list) on a
background thread, so previous/next shows at once. At most `capacity` decoded images are
held, so memory stays flat however many images the folder has. Qt-free.
"""

from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np


class ImagePrefetcher:
    """`get(rec)` returns the decoded image (from a finished or running prefetch, else read now);
    `prefetch(recs)` starts decoding those records. Errors surface from `get`, as a direct read."""

    def __init__(self, project, *, capacity: int = 2) -> None:
        self.project = project
        self.capacity = capacity
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._cache: OrderedDict[str, Future] = OrderedDict()

    def get(self, rec) -> np.ndarray:
        fut = self._cache.pop(rec.path, None)
        if fut is not None and not fut.cancelled():
            return fut.result()
        return self.project.read_image(rec)

    def held(self) -> list[str]:
        """Keys of the images decoded or being decoded ahead, oldest first."""
        return list(self._cache)

    def peek(self, key: str) -> np.ndarray | None:
        """The prefetched image of `key` (waiting for its decode), or None; it stays held."""
        fut = self._cache.get(key)
        return None if fut is None or fut.cancelled() else fut.result()

    def prefetch(self, recs) -> None:
        wanted = [r for r in recs if r is not None]
        keys = {r.path for r in wanted}
        for key in [k for k in self._cache if k not in keys]:
            self._cache.pop(key).cancel()  # a running decode finishes; its result is dropped
        for rec in wanted[: self.capacity]:
            if rec.path not in self._cache:
                self._cache[rec.path] = self._pool.submit(self.project.read_image, rec)

    def clear(self) -> None:
        for fut in self._cache.values():
            fut.cancel()
        self._cache.clear()

    def shutdown(self) -> None:
        self.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
