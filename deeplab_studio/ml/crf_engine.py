"""The CRF engine behind ``ml.crf``: the band of pixels worth re-labelling, cut into tiles; on each
tile's pixels, every pixel's candidate labels and the mean-field of ``crf_meanfield`` (the
appearance kernel's lattice from ``crf_lattice``, built per call or cached by ``crf_session``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deeplab_studio.core.labels import IGNORE

from .crf_lattice import Lattice
from .crf_meanfield import STENCIL_MAX_SXY, GaussianStencil, LatticeKernel, solve
from .crf_params import Cancel, CRFParams, check_cancel

_PROB_EPS = 1e-5  # probabilities are clipped here before -log (as pydensecrf's helper does)
_PROTECT_EPS = 1e-5  # a protected pixel's unary: 1 - eps for its label, eps for the others


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilate a boolean mask by a (2r+1)² square, in O(N log r) shifted ORs."""
    out = mask.copy()
    for axis in (0, 1):
        reach = 0
        while reach < radius:
            step = min(2 * reach + 1, radius - reach)
            src = out.copy()
            lo = [slice(None)] * 2
            hi = [slice(None)] * 2
            lo[axis], hi[axis] = slice(step, None), slice(None, -step)
            out[tuple(lo)] |= src[tuple(hi)]
            out[tuple(hi)] |= src[tuple(lo)]
            reach += step
    return out


def boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels whose label differs from a 4-neighbour's."""
    edge = np.zeros(labels.shape, dtype=bool)
    dy = labels[1:, :] != labels[:-1, :]
    dx = labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    return edge


def splits(n: int, tile: int) -> list[tuple[int, int]]:
    """Cut 0..n into ceil(n / tile) near-equal parts."""
    k = -(-n // tile)
    cuts = [round(i * n / k) for i in range(k + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the True pixels of a non-empty mask, ends exclusive."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def unary_energy(current: np.ndarray, protect: np.ndarray, void: np.ndarray, probs: np.ndarray | None,
           labels: list[int], params: CRFParams) -> np.ndarray:
    """Energies (−log probability) of `labels` on one crop, float32 n×h×w.

    Hard labels: a pixel's own label has `hard_confidence`, a label present within `margin`
    pixels has 1 − `hard_confidence`, any other label is impossible (eps). So labels that do not
    occur nearby carry no mass, and leaving them out of the CRF does not change the answer.
    Void (255) pixels are uniform over the labels present nearby.
    """
    n = len(labels)
    unary = np.empty((n,) + current.shape, dtype=np.float32)
    impossible = -np.log(_PROB_EPS)
    if probs is None:
        on, off = -np.log(params.hard_confidence), -np.log(1 - params.hard_confidence)
        for k, lab in enumerate(labels):
            mine = current == lab
            near = dilate(mine, int(params.margin))
            unary[k] = np.where(mine, on, np.where(near, off, impossible))
            unary[k][void & near] = 0.0
    else:
        for k, lab in enumerate(labels):
            if lab < probs.shape[0]:
                np.log(np.clip(probs[lab], _PROB_EPS, 1.0), out=unary[k])
                np.negative(unary[k], out=unary[k])
            else:  # a protected label the model does not know
                unary[k] = impossible
        unary[:, void] = 0.0  # 255 (protected) carries no evidence for any label
    if protect.any():
        on, off = -np.log(1 - _PROTECT_EPS), -np.log(_PROTECT_EPS)
        keep = protect & ~void
        for k, lab in enumerate(labels):
            unary[k][keep] = np.where(current[keep] == lab, on, off)
    return unary


class OneShot:
    """Kernels for one call: the lattice built over the CRF's pixels only (`crf_session.CRFSession`
    keeps them per image instead; the answers are the same, bit for bit). `offset`: where the
    image handed to `kernel` lies in the full image (a worker gets only its tile's part)."""

    def __init__(self, offset: tuple[int, int] = (0, 0)) -> None:
        self.offset = offset

    def kernel(self, image: np.ndarray, ys: np.ndarray, xs: np.ndarray, scale: tuple[float, float] | float,
               region: tuple[int, int, int, int]) -> LatticeKernel:
        """The lattice kernel over the pixels (ys, xs) (image coordinates) with features x/sxy, y/sxy
        and, for a pair `scale` = (sxy, srgb), r, g, b / srgb; `region` (y0, y1, x0, x1) holds every
        pixel the current tile's CRF may use."""
        return LatticeKernel(Lattice(features(image, ys, xs, scale, self.offset)), None)

    def stencil(self, shape: tuple[int, int], points: np.ndarray, sxy: float, origin: tuple[int, int]) -> GaussianStencil:
        """The smoothness stencil over `points` (flat indices) of a crop of `shape` at `origin`."""
        return GaussianStencil(shape, points, sxy)


def features(image: np.ndarray, ys: np.ndarray, xs: np.ndarray, scale: tuple[float, float] | float,
             offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """N×2 (x, y) / sxy for a float `scale`, N×5 (x, y, r, g, b) / (sxy, sxy, srgb…) for a pair;
    the colour of pixel (y, x) is image[y - offset[0], x - offset[1]]."""
    sxy, srgb = scale if isinstance(scale, tuple) else (scale, None)
    out = np.empty((ys.size, 2 if srgb is None else 5), dtype=np.float32)
    np.divide(xs, sxy, out=out[:, 0], casting="unsafe")
    np.divide(ys, sxy, out=out[:, 1], casting="unsafe")
    if srgb is not None:
        np.divide(image[ys - offset[0], xs - offset[1]], np.float32(srgb), out=out[:, 2:], casting="unsafe")
    return out


LatticeSource = OneShot  # anything with OneShot's `kernel` and `stencil` methods


@dataclass
class Tile:
    """One tile's CRF: its crop (at `origin`), the pixels written (`dst`) and used (`select`),
    its labels and the region any of its crops may take pixels from."""

    origin: tuple[int, int]
    crop: tuple[slice, slice]
    dst: np.ndarray
    select: np.ndarray
    labs: list[int]
    region: tuple[int, int, int, int]


def refine_free_pixels(image: np.ndarray, current: np.ndarray, protect: np.ndarray, probs: np.ndarray | None,
                       params: CRFParams, *, restrict: bool = True, labels: list[int] | None = None,
                       top: np.ndarray | None = None, cancel: Cancel = None, lattices: LatticeSource | None = None,
                       reference: bool = False, workers: int = 1) -> np.ndarray:
    """Re-label the free pixels of `current` with the CRF.

    `restrict=False, labels=[...]` runs the plain computation (whole image, one crop, the given
    labels) that the restricted path must reproduce; `reference=True` runs pydensecrf on each crop
    (every label of the crop at every pixel) instead of the fast engine; tests compare them.
    `lattices` provides the kernels (default: built for this call); `workers` > 1 runs the tiles
    in that many processes when there are several (`crf_parallel`; built-for-the-call kernels).
    """
    void = current == IGNORE
    out = current.copy()
    tiles = plan_tiles(current, protect, void, probs, params, restrict=restrict, labels=labels, top=top)
    if workers > 1 and len(tiles) > 1 and not reference:
        from .crf_parallel import run_tiles

        answers = run_tiles(image, current, protect, void, probs, params, tiles, workers, cancel)
    else:
        answers = (tile_labels(image, current, protect, void, probs, params, t, lattices or OneShot(), cancel,
                               reference) for t in tiles)
    for tile, best in zip(tiles, answers):
        crop_out = out[tile.crop]
        crop_out[tile.dst] = np.asarray(tile.labs, dtype=np.uint8)[best[tile.dst[tile.select]]]
    return out


def plan_tiles(current: np.ndarray, protect: np.ndarray, void: np.ndarray, probs: np.ndarray | None,
               params: CRFParams, *, restrict: bool = True, labels: list[int] | None = None,
               top: np.ndarray | None = None) -> list[Tile]:
    """The tiles with work: the band within `margin` of a label boundary (or an uncertain pixel)
    cut into tiles, each with `margin` of context and the labels that occur there."""
    free = ~(protect | void)
    if not free.any():
        return []
    if restrict:
        seeds = boundaries(current)
        if probs is not None:
            seeds |= (probs.max(axis=0) if top is None else top) < params.settled_prob
        write = dilate(seeds & free, int(params.margin)) & free
        if not write.any():
            return []
        cuts = [(y, x) for y in splits(current.shape[0], int(params.tile_size))
                for x in splits(current.shape[1], int(params.tile_size))]
        context = int(params.margin)
    else:
        write = free
        cuts = [((0, current.shape[0]), (0, current.shape[1]))]
        context = 0
    height, width = current.shape
    tiles = []
    for (ty0, ty1), (tx0, tx1) in cuts:
        core = write[ty0:ty1, tx0:tx1]
        if not core.any():
            continue
        bx0, by0, bx1, by1 = bbox(core)
        x0, y0 = max(tx0 + bx0 - context, 0), max(ty0 + by0 - context, 0)
        x1, y1 = min(tx0 + bx1 + context, width), min(ty0 + by1 + context, height)
        crop = (slice(y0, y1), slice(x0, x1))
        # dst: this tile's band pixels (all inside the crop); select: dst plus `context` around it
        dst = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        iy0, iy1, ix0, ix1 = max(ty0, y0), min(ty1, y1), max(tx0, x0), min(tx1, x1)
        dst[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = write[iy0:iy1, ix0:ix1]
        select = dilate(dst, context) if context else np.ones_like(dst)
        cur_c, void_c = current[crop], void[crop]
        if labels is not None:
            labs = list(labels)
        else:
            labs = set(np.unique(cur_c[select & ~void_c]).tolist())
            if probs is not None and params.min_label_prob > 0:
                peak = probs[(slice(None),) + crop][:, select & free[crop]].max(axis=1, initial=0.0)
                labs |= set(np.flatnonzero(peak >= params.min_label_prob).tolist())
            labs = sorted(labs)
        if len(labs) < 2:
            continue  # one label: nothing to decide
        region = (max(ty0 - context, 0), min(ty1 + context, height), max(tx0 - context, 0), min(tx1 + context, width))
        tiles.append(Tile((y0, x0), crop, dst, select, labs, region))
    return tiles


def tile_labels(image: np.ndarray, current: np.ndarray, protect: np.ndarray, void: np.ndarray,
                probs: np.ndarray | None, params: CRFParams, tile: Tile, lattices: LatticeSource,
                cancel: Cancel = None, reference: bool = False) -> np.ndarray:
    """One tile's CRF: the index into `tile.labs` of each selected pixel's label (row-major).
    `image` may be a part of the full image; `lattices` knows its offset."""
    check_cancel(cancel)
    crop = tile.crop
    probs_c = None if probs is None else probs[(slice(None),) + crop]
    unary = unary_energy(current[crop], protect[crop], void[crop], probs_c, tile.labs, params)
    if reference:
        from .crf_reference import crf_labels

        return crf_labels(image[crop], unary, tile.select, params, cancel, origin=tile.origin)
    return _solve_crop(image, unary, tile.select, current[crop], protect[crop], probs_c is not None, tile.labs,
                       params, tile.origin, tile.region, lattices, cancel)


def candidates(unary: np.ndarray, points: np.ndarray, current: np.ndarray, protect: np.ndarray, soft: bool,
               labs: list[int], params: CRFParams) -> tuple[np.ndarray, np.ndarray]:
    """The energies (n×P) of a crop's selected `points` (flat indices) and each one's candidate
    labels (bool n×P): for hard labels those present within `margin` (the others are impossible),
    for probabilities those at `min_label_prob` or more there and the pixel's own label; a
    protected pixel only its own label (its unary leaves the others at eps)."""
    n = len(labs)
    energy = unary.reshape(n, -1)[:, points]
    if soft:
        candidate = energy <= -np.log(max(params.min_label_prob, _PROB_EPS))
        index = np.full(256, -1, dtype=np.int64)
        index[labs] = np.arange(n)
        mine = index[current.reshape(-1)[points]]
        keep = (mine >= 0) & ~protect.reshape(-1)[points]
        candidate[mine[keep], np.flatnonzero(keep)] = True
    else:
        candidate = energy < np.float32(-np.log(_PROB_EPS) - 1e-3)
    guarded = protect.reshape(-1)[points]
    if guarded.any():
        candidate[:, guarded] = energy[:, guarded] < np.float32(-np.log(_PROTECT_EPS) - 1e-3)
    none = ~candidate.any(axis=0)
    if none.any():  # no label possible (a label the model does not know): all stay open
        candidate[:, none] = True
    return energy, candidate


def _solve_crop(image: np.ndarray, unary: np.ndarray, select: np.ndarray, current: np.ndarray,
                protect: np.ndarray, soft: bool, labs: list[int], params: CRFParams, origin: tuple[int, int],
                region: tuple[int, int, int, int], lattices: LatticeSource, cancel: Cancel) -> np.ndarray:
    """The fast engine on one crop: each selected pixel's candidate labels, the kernels, mean-field.
    Returns the index into `labs` of each selected pixel's label (row-major)."""
    points = np.flatnonzero(select)
    energy, candidate = candidates(unary, points, current, protect, soft, labs, params)
    ys, xs = np.divmod(points, select.shape[1])
    ys, xs = ys + origin[0], xs + origin[1]
    gaussian = bilateral = None
    if params.gaussian_compat > 0:
        if params.gaussian_sxy <= STENCIL_MAX_SXY:
            gaussian = lattices.stencil(select.shape, points, float(params.gaussian_sxy), origin)
        else:
            gaussian = lattices.kernel(image, ys, xs, float(params.gaussian_sxy), region)
    if params.bilateral_compat > 0:
        scale = (float(params.bilateral_sxy), float(params.bilateral_srgb))
        bilateral = lattices.kernel(image, ys, xs, scale, region)
    return solve(energy, candidate, params, gaussian=gaussian, bilateral=bilateral, cancel=cancel)
