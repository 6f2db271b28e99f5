"""The CRF's tiles in parallel processes (`refine_free_pixels(..., workers=N)`).

Each tile is independent (its own crop, band and labels), so N processes give each a tile's
arrays and get its labels back; the answers equal the sequential run's, bit for bit. The pool
is started per call ("spawn": safe beside Qt's threads), which costs about a second of start-up
(imports) on each worker: it pays for large images with many busy tiles, not for one tile
(benchmarks/bench_crf_scenes.py --large measures both).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

import numpy as np

from .crf_engine import OneShot, Tile, tile_labels
from .crf_params import Cancel, CRFParams, check_cancel


def run_tiles(image: np.ndarray, current: np.ndarray, protect: np.ndarray, void: np.ndarray,
              probs: np.ndarray | None, params: CRFParams, tiles: list[Tile], workers: int,
              cancel: Cancel = None) -> list[np.ndarray]:
    """Each tile's answer (as `tile_labels`), computed by `workers` processes; `cancel` is checked
    while waiting (a tile already running finishes first)."""
    results: list[np.ndarray | None] = [None] * len(tiles)
    order = sorted(range(len(tiles)), key=lambda i: -int(tiles[i].select.sum()))  # largest first
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(tiles)), mp_context=context) as pool:
        pending: dict[Future, int] = {}
        for i in order:
            t = tiles[i]
            crop = t.crop
            job = (image[crop], current[crop], protect[crop], void[crop],
                   None if probs is None else np.ascontiguousarray(probs[(slice(None),) + crop]), params,
                   Tile(t.origin, (slice(None), slice(None)), t.dst, t.select, t.labs, t.region))
            pending[pool.submit(_job, job)] = i
        try:
            while pending:
                check_cancel(cancel)
                done, _ = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                for future in done:
                    results[pending.pop(future)] = future.result()
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return results  # type: ignore[return-value]


def _job(job: tuple) -> np.ndarray:
    image, current, protect, void, probs, params, tile = job
    return tile_labels(image, current, protect, void, probs, params, tile, OneShot(offset=tile.origin))
