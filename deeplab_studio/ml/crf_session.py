"""`CRFSession`: one image refined many times (the window's snaps and slider previews) reuses its
CRF kernels instead of rebuilding them on every call.

What is kept, per image (the session holds the image), in least-recently-used order within a byte
budget:

- the appearance kernel's permutohedral lattice per kernel width (`bilateral_sxy`, `bilateral_srgb`)
  and tile region: first built over the call's pixels; a later call on pixels it does not cover
  builds it once over the whole region, after which every band is a sub-lattice of it;
- the normalised kernels per set of pixels, and each label's message parts per set of candidate
  pixels: a preview that changes only weights, iterations or confidence reuses all of them.

A session's answers equal the one-shot functions' (`ml.crf.refine`, `refine_labels`), bit for bit
(tests/ml/test_crf_session.py); only the time differs.
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from .crf_engine import features
from .crf_inputs import check_image
from .crf_lattice import Lattice
from .crf_meanfield import GaussianStencil, LatticeKernel, digest
from .crf_params import Cancel, CRFParams

DEFAULT_BUDGET = 256 * 2**20  # bytes of kept kernels per session


class CRFSession:
    """Refine one image repeatedly, keeping its CRF kernels (see the module docstring).

    Hold one per open image and call `refine_labels` / `refine` (the same arguments as the module
    functions in `ml.crf`, less the image). The image must not change while the session is used;
    `session_for(image, old)` returns `old` when it still matches the image, else a new session.
    Not thread-safe: one call at a time.
    """

    def __init__(self, image: np.ndarray, *, budget: int = DEFAULT_BUDGET) -> None:
        self.image = np.ascontiguousarray(check_image(image))
        self.fingerprint = _fingerprint(self.image)
        self.budget = int(budget)
        self._kept: OrderedDict[tuple, tuple[object, int]] = OrderedDict()
        self.hits = self.misses = 0

    # --- the public calls ------------------------------------------------------------------------
    def refine(self, probs: np.ndarray, *, protect: np.ndarray | None = None, params: CRFParams | None = None,
               labels: np.ndarray | None = None, cancel: Cancel = None) -> np.ndarray:
        """`ml.crf.refine` on this session's image."""
        from .crf import _refine

        return _refine(self.image, probs, protect, params, labels, cancel, self)

    def refine_labels(self, labels: np.ndarray, *, protect: np.ndarray | None = None,
                      params: CRFParams | None = None, cancel: Cancel = None) -> np.ndarray:
        """`ml.crf.refine_labels` on this session's image."""
        from .crf import _refine_labels

        return _refine_labels(self.image, labels, protect, params, cancel, self)

    def prepare(self, params: CRFParams | None = None, cancel: Cancel = None) -> int:
        """Build the appearance kernel's lattice of every tile region ahead of the first call (e.g.
        on a worker thread when the image opens), as far as the budget allows. Returns the number
        of regions built."""
        params = CRFParams() if params is None else params
        if params.bilateral_compat <= 0:
            return 0
        from .crf_engine import splits
        from .crf_params import check_cancel

        height, width = self.image.shape[:2]
        context, size = int(params.margin), int(params.tile_size)
        scale = (float(params.bilateral_sxy), float(params.bilateral_srgb))
        built = 0
        for ty0, ty1 in splits(height, size):
            for tx0, tx1 in splits(width, size):
                check_cancel(cancel)
                region = (max(ty0 - context, 0), min(ty1 + context, height), max(tx0 - context, 0),
                          min(tx1 + context, width))
                if self.nbytes + (region[1] - region[0]) * (region[3] - region[2]) * 60 > self.budget:
                    return built
                ys, xs = (a.ravel() for a in np.indices((region[1] - region[0], region[3] - region[2])))
                self._lattice(scale, region, ys + region[0], xs + region[2])
                built += 1
        return built

    def matches(self, image: np.ndarray) -> bool:
        """Whether `image` has this session's pixels (shape and content)."""
        try:
            other = check_image(image)
        except ValueError:
            return False
        return other.shape == self.image.shape and _fingerprint(np.ascontiguousarray(other)) == self.fingerprint

    @property
    def nbytes(self) -> int:
        """Bytes of kernels kept now."""
        return sum(size for _, size in self._kept.values())

    def clear(self) -> None:
        """Drop every kept kernel."""
        self._kept.clear()

    # --- the engine's kernel source (crf_engine.OneShot's interface) ---------------------------
    def kernel(self, image: np.ndarray, ys: np.ndarray, xs: np.ndarray, scale: tuple[float, float] | float,
               region: tuple[int, int, int, int]) -> LatticeKernel:
        """The lattice kernel over the pixels (ys, xs), from what is kept when possible."""
        key = ("kernel", scale, region, digest(ys, xs))
        kernel = self._get(key)
        if kernel is None:
            lattice, index = self._lattice(scale, region, ys, xs)
            kernel = LatticeKernel(lattice, index[ys - region[0], xs - region[2]])
            kernel.keep = True
            self._put(key, kernel, kernel.whole.n * 64 + kernel.whole.m * 160)
        return kernel

    def stencil(self, shape: tuple[int, int], points: np.ndarray, sxy: float, origin: tuple[int, int]) -> GaussianStencil:
        """The smoothness stencil over `points` of a crop of `shape` at `origin`, kept."""
        key = ("stencil", shape, origin, sxy, digest(points))
        stencil = self._get(key)
        if stencil is None:
            stencil = GaussianStencil(shape, points, sxy)
            stencil.keep = True
            self._put(key, stencil, points.size * 48)
        return stencil

    def _lattice(self, scale: tuple[float, float] | float, region: tuple[int, int, int, int], ys: np.ndarray,
                 xs: np.ndarray) -> tuple[Lattice, np.ndarray]:
        """A kept lattice of `region` covering (ys, xs) and its point id per region pixel (-1: none)."""
        y0, y1, x0, x1 = region
        key = ("lattice", scale, region)
        kept = self._get(key)
        if kept is not None and (kept[1][ys - y0, xs - x0] >= 0).all():
            return kept
        if kept is None:  # first use: the call's pixels only
            py, px = ys, xs
        else:  # the band moved: the whole region, once
            py, px = (a.ravel() for a in np.indices((y1 - y0, x1 - x0)))
            py, px = py + y0, px + x0
        index = np.full((y1 - y0, x1 - x0), -1, dtype=np.int32)
        index[py - y0, px - x0] = np.arange(py.size, dtype=np.int32)
        lattice = Lattice(features(self.image, py, px, scale))
        entry = (lattice, index)
        self._put(key, entry, lattice.nbytes + index.nbytes)
        return entry

    def _get(self, key: tuple):
        entry = self._kept.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._kept.move_to_end(key)
        return entry[0]

    def _put(self, key: tuple, value: object, size: int) -> None:
        self._kept[key] = (value, size)
        self._kept.move_to_end(key)
        while len(self._kept) > 1 and self.nbytes > self.budget:
            self._kept.popitem(last=False)


def session_for(image: np.ndarray, session: CRFSession | None) -> CRFSession:
    """`session` when it holds `image`'s pixels, else a new session for `image`."""
    if session is not None and session.matches(image):
        return session
    return CRFSession(image)


class SessionLender:
    """A home for the warm session of the image being worked on, shared by callers in several
    threads (the window's slider previews and Snap to edges): `with lender.lend(image) as s:`.
    The kept session is lent to one caller at a time; a caller that finds it lent out, or kept for
    another image, gets a new one. The session handed back last is kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: CRFSession | None = None

    @contextmanager
    def lend(self, image: np.ndarray) -> Iterator[CRFSession]:
        with self._lock:
            session, self._kept = self._kept, None
        session = session_for(image, session)
        try:
            yield session
        finally:
            with self._lock:
                self._kept = session

    def clear(self) -> None:
        """Drop the kept session (its memory goes with it)."""
        with self._lock:
            self._kept = None


def _fingerprint(image: np.ndarray) -> int:
    return zlib.crc32(image.reshape(-1).view(np.uint8))
