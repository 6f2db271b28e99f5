"""Mean-field inference of the dense CRF on one crop, with candidate labels per pixel.

The model is pydensecrf's (Krähenbühl & Koltun 2011): Q ∝ exp(−U + Σ_k w_k · K̃_k Q) with Potts
compatibility and each kernel normalised symmetrically, K̃ = D^{-1/2} K D^{-1/2}, D = K·1 over the
crop's selected pixels. Two things make it cheap:

- each pixel carries only its candidate labels (those that can win there); a label's message is
  computed only over the pixels that hold it, so a five-class scene costs what its busy pixels
  cost, not five full-crop filters;
- the smoothness kernel (small `gaussian_sxy`) is an exact truncated Gaussian stencil (OpenCV's
  separable filter) instead of a 2-D permutohedral lattice; the appearance kernel filters on the
  image's permutohedral lattice (`crf_lattice`), restricted to the label's pixels.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from .crf_lattice import Lattice
from .crf_params import Cancel, CRFParams, check_cancel

STENCIL_MAX_SXY = 4.0  # wider smoothness kernels are filtered on a 2-D lattice instead


class _Parts:
    """Per-label message parts, kept (keyed by the label's pixels) when `keep` is set: a cached
    kernel serves repeated calls with the same candidates (slider previews) without rebuilding."""

    keep = False

    def label(self, support: np.ndarray, fixed: np.ndarray, live: np.ndarray):
        """Label messages over `support` (indices into the points): values change on `live` (positions
        in `support`), stay 1 on `fixed` (the other positions) and are read on `live`."""
        if not self.keep:
            return self._part(support, fixed, live)
        parts = self.__dict__.setdefault("_kept", {})
        key = digest(support, live)
        if key not in parts:
            if len(parts) >= 64:  # candidates that keep changing: keep the newest only
                parts.clear()
            parts[key] = self._part(support, fixed, live)
        return parts[key]

    def _part(self, support: np.ndarray, fixed: np.ndarray, live: np.ndarray):
        raise NotImplementedError


def digest(*arrays: np.ndarray) -> bytes:
    """A short hash of arrays' contents (cache keys)."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(np.ascontiguousarray(a).view(np.uint8).reshape(-1))
        h.update(str(a.shape).encode())
    return h.digest()


class GaussianStencil(_Parts):
    """Smoothness messages: a truncated Gaussian exp(-d²/2σ²) over the selected pixels of a grid."""

    def __init__(self, shape: tuple[int, int], points: np.ndarray, sxy: float) -> None:
        """`points`: the selected pixels as flat indices into a grid of `shape`."""
        radius = max(1, int(np.ceil(3 * sxy)))
        taps = np.arange(-radius, radius + 1, dtype=np.float64)
        self.taps = np.exp(-0.5 * (taps / sxy) ** 2).astype(np.float32)
        self.shape, self.points = shape, points
        mask = np.zeros(shape, dtype=np.float32)
        mask.flat[points] = 1.0
        self.norm = 1.0 / np.sqrt(self._filter(mask).ravel()[points] + 1e-20)
        self.ys, self.xs = np.divmod(points, shape[1])

    def _filter(self, grid: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(grid, -1, self.taps, self.taps, borderType=cv2.BORDER_CONSTANT)

    def _part(self, support: np.ndarray, fixed: np.ndarray, live: np.ndarray) -> "_StencilLabel":
        return _StencilLabel(self, support, fixed, live)


class _StencilLabel:
    def __init__(self, kernel: GaussianStencil, support: np.ndarray, fixed: np.ndarray, live: np.ndarray) -> None:
        ys, xs = kernel.ys[support], kernel.xs[support]
        y0, x0 = int(ys.min()), int(xs.min())
        self.box = (int(ys.max()) + 1 - y0, int(xs.max()) + 1 - x0)
        local = (ys - y0) * self.box[1] + (xs - x0)
        norm = kernel.norm[support]
        self.kernel, self.at, self.norm = kernel, local[live], norm[live]
        self.const = np.float32(0.0)  # the fixed pixels' share
        if fixed.size:
            grid = np.zeros(self.box, dtype=np.float32)
            grid.reshape(-1)[local[fixed]] = norm[fixed]
            self.const = kernel._filter(grid).reshape(-1)[self.at] * self.norm

    def message(self, q: np.ndarray) -> np.ndarray:
        grid = np.zeros(self.box, dtype=np.float32)
        grid.reshape(-1)[self.at] = q * self.norm
        return self.kernel._filter(grid).reshape(-1)[self.at] * self.norm + self.const


class LatticeKernel(_Parts):
    """Messages of a Gaussian kernel filtered on a permutohedral lattice, per label support."""

    def __init__(self, lattice: Lattice, points: np.ndarray | None) -> None:
        """`points`: the crop's selected pixels as lattice point ids (None: all the lattice's points)."""
        self.whole = lattice.sub(points)
        self.norm = 1.0 / np.sqrt(self.whole.filter(np.ones(self.whole.n, dtype=np.float32)) + 1e-20)

    def _part(self, support: np.ndarray, fixed: np.ndarray, live: np.ndarray) -> "_LatticeLabel":
        return _LatticeLabel(self, support, fixed, live)


class _LatticeLabel:
    def __init__(self, kernel: LatticeKernel, support: np.ndarray, fixed: np.ndarray, live: np.ndarray) -> None:
        self.sub = kernel.whole.sub(np.concatenate([support[live], support[fixed]]))  # live points first
        self.norm = kernel.norm[support[live]]
        self.slice = self.sub.rows(live.size)
        self.splat = self.slice.T
        self.const = np.float32(0.0)  # the fixed pixels' share
        if fixed.size:
            ones = np.zeros(support.size, dtype=np.float32)
            ones[live.size:] = kernel.norm[support[fixed]]
            self.const = self.sub.filter(ones)[:live.size] * self.norm

    def message(self, q: np.ndarray) -> np.ndarray:
        return self.sub.filter(q * self.norm, splat=self.splat, slice_=self.slice) * self.norm + self.const


Kernel = GaussianStencil | LatticeKernel


def solve(unary: np.ndarray, candidate: np.ndarray, params: CRFParams, *, gaussian: Kernel | None,
          bilateral: Kernel | None, cancel: Cancel = None) -> np.ndarray:
    """Mean-field over P pixels with n labels: `unary` energies n×P, `candidate` n×P (every pixel
    has at least one). Returns each pixel's best label index (int P).

    A pixel with one candidate keeps it (Q = 1): it only sends messages. The others are grouped by
    their number of candidates c into dense c×P_c blocks of one flat array (`at[k]`: the flat
    indices of label k's values), so the normalisation has no padding."""
    n, p = candidate.shape
    count = candidate.sum(axis=0, dtype=np.int16)
    best = candidate.argmax(axis=0)  # the answer of one-candidate pixels
    live_px = np.flatnonzero(count > 1)
    if live_px.size == 0:
        return best
    # flat layout: for each count c, a c×P_c block; slot j of a pixel = its j-th candidate
    order = live_px[np.argsort(count[live_px], kind="stable")]
    counts = count[order]
    sizes = np.bincount(counts, minlength=n + 1)
    starts = np.concatenate([[0], np.cumsum(sizes * np.arange(n + 1))])
    first = np.concatenate([[0], np.cumsum(sizes)])  # position in `order` where count c starts
    pos = np.empty(p, dtype=np.int64)
    pos[order] = np.arange(order.size) - first[counts]  # column within the pixel's block
    slot = np.cumsum(candidate, axis=0, dtype=np.int16)
    slot -= 1
    base_flat = np.empty(int(starts[-1]), dtype=np.float32)
    blocks = [(c, int(starts[c]), int(sizes[c])) for c in range(2, n + 1) if sizes[c]]
    terms = [(kern, np.float32(w)) for kern, w in ((gaussian, params.gaussian_compat),
                                                    (bilateral, params.bilateral_compat))
             if kern is not None and w > 0]
    labels = []
    for k in range(n):
        support = np.flatnonzero(candidate[k])
        live = np.flatnonzero(count[support] > 1)
        if live.size == 0:
            continue
        px = support[live]
        cpx = count[px]
        idx = starts[cpx] + slot[k, px] * sizes[cpx] + pos[px]
        base = -unary[k, px]
        base_flat[idx] = base
        fixed = np.flatnonzero(count[support] == 1)
        labels.append((idx, base, [(kern.label(support, fixed, live), w) for kern, w in terms]))
    q = np.empty_like(base_flat)
    _softmax_blocks(base_flat, q, blocks)
    energy = base_flat.copy()  # each slot belongs to one label: every one is rewritten below
    for _ in range(int(params.iterations)):
        check_cancel(cancel)
        for idx, base, parts in labels:
            if not parts:
                continue
            qk = q[idx]
            msg = base.copy()
            for part, w in parts:
                msg += w * part.message(qk)
            energy[idx] = msg
        _softmax_blocks(energy, q, blocks)
    out = best.copy()
    for c, start, size in blocks:
        block = q[start:start + c * size].reshape(c, size)
        px = order[first[c]:first[c] + size]
        cand = np.nonzero(candidate[:, px].T)[1].reshape(size, c)  # each pixel's candidates in order
        out[px] = cand[np.arange(size), block.argmax(axis=0)]
    return out


def _softmax_blocks(energy: np.ndarray, out: np.ndarray, blocks: list[tuple[int, int, int]]) -> None:
    for c, start, size in blocks:
        e = energy[start:start + c * size].reshape(c, size)
        q = out[start:start + c * size].reshape(c, size)
        np.subtract(e, e.max(axis=0), out=q)
        np.exp(q, out=q)
        q /= q.sum(axis=0)
