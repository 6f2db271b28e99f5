"""Image decoding ahead of the model: a small thread pool with a bounded, ordered queue."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np


def _try_read(read: Callable[[Path], np.ndarray], path: Path) -> np.ndarray | Exception:
    try:
        return read(path)
    except Exception as exc:  # reported per image by the caller; one bad file must not stop a batch
        return exc


def prefetch_images(
    paths: Iterable[str | Path],
    *,
    workers: int = 1,
    depth: int | None = None,
    read: Callable[[Path], np.ndarray],
) -> Iterator[tuple[Path, np.ndarray | Exception]]:
    """Yield `(path, image or the exception that reading raised)` in input order.

    `read` decodes one file (the caller supplies it, e.g. `storage.images.read_image`: `ml` does
    not depend on `storage`).

    With `workers >= 1`, up to `depth` (default `2 * workers`) images are decoded ahead on
    background threads while the caller works on the current one; memory stays bounded by
    `depth` decoded images. `workers=0` decodes on the calling thread (no prefetch).
    Closing the iterator early cancels the decodes not yet started.
    """
    items = (Path(p) for p in paths)
    if workers <= 0:
        for path in items:
            yield path, _try_read(read, path)
        return
    depth = max(1, depth if depth is not None else 2 * workers)
    pending: deque[tuple[Path, Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        try:
            for path in itertools.islice(items, depth):
                pending.append((path, pool.submit(_try_read, read, path)))
            while pending:
                path, future = pending.popleft()
                result = future.result()
                nxt = next(items, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(_try_read, read, nxt)))
                yield path, result
        finally:
            for _, future in pending:
                future.cancel()
