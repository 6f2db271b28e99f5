"""The CRF engine behind ``ml.crf``: the band of pixels worth re-labelling, cut into tiles, and
pydensecrf's mean-field inference on each tile's pixels with only the labels present there.
"""

from __future__ import annotations

import numpy as np

from deeplab_studio.core.labels import IGNORE

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


def crf_labels(image: np.ndarray, unary: np.ndarray, select: np.ndarray, params: CRFParams,
                cancel: Cancel = None) -> np.ndarray:
    """Mean-field inference over the `select`ed pixels of one crop.

    Returns, for those pixels (row-major order), the index into the unary's rows of the best
    label. The kernels are the ones of pydensecrf's DenseCRF2D (features x/sxy, y/sxy and
    r,g,b/srgb), built for the selected pixels only, so the settled interior costs nothing.
    Iterations are stepped one by one (the same arithmetic as `inference(n)`, bit for bit) so
    that `cancel` is checked between them.
    """
    import pydensecrf.densecrf as dcrf

    n = unary.shape[0]
    ys, xs = np.nonzero(select)
    crf = dcrf.DenseCRF(int(ys.size), n)
    crf.setUnaryEnergy(np.ascontiguousarray(unary[:, ys, xs], dtype=np.float32))
    if params.gaussian_compat > 0:
        feats = np.empty((2, ys.size), dtype=np.float32)
        np.divide(xs, params.gaussian_sxy, out=feats[0], casting="unsafe")
        np.divide(ys, params.gaussian_sxy, out=feats[1], casting="unsafe")
        crf.addPairwiseEnergy(feats, compat=float(params.gaussian_compat))
    if params.bilateral_compat > 0:
        feats = np.empty((5, ys.size), dtype=np.float32)
        np.divide(xs, params.bilateral_sxy, out=feats[0], casting="unsafe")
        np.divide(ys, params.bilateral_sxy, out=feats[1], casting="unsafe")
        np.divide(image[ys, xs].T, params.bilateral_srgb, out=feats[2:], casting="unsafe")
        crf.addPairwiseEnergy(feats, compat=float(params.bilateral_compat))
    q, tmp1, tmp2 = crf.startInference()
    for _ in range(int(params.iterations)):
        check_cancel(cancel)
        crf.stepInference(q, tmp1, tmp2)
    return np.asarray(q, dtype=np.float32).argmax(axis=0)


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


def refine_free_pixels(image: np.ndarray, current: np.ndarray, protect: np.ndarray, probs: np.ndarray | None,
            params: CRFParams, *, restrict: bool = True, labels: list[int] | None = None,
            top: np.ndarray | None = None, cancel: Cancel = None) -> np.ndarray:
    """Re-label the free pixels of `current` with the CRF.

    `restrict=False, labels=[...]` runs the plain computation (whole image, one crop, the given
    labels) that the restricted path must reproduce; tests compare the two.
    """
    void = current == IGNORE
    free = ~(protect | void)
    out = current.copy()
    if not free.any():
        return out
    if restrict:
        seeds = boundaries(current)
        if probs is not None:
            seeds |= (probs.max(axis=0) if top is None else top) < params.settled_prob
        write = dilate(seeds & free, int(params.margin)) & free
        if not write.any():
            return out
        tiles = [(y, x) for y in splits(current.shape[0], int(params.tile_size))
                 for x in splits(current.shape[1], int(params.tile_size))]
        context = int(params.margin)
    else:
        write = free
        tiles = [((0, current.shape[0]), (0, current.shape[1]))]
        context = 0
    height, width = current.shape
    for (ty0, ty1), (tx0, tx1) in tiles:
        check_cancel(cancel)
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
        probs_c = None if probs is None else probs[(slice(None),) + crop]
        if labels is not None:
            labs = list(labels)
        else:
            labs = set(np.unique(cur_c[select & ~void_c]).tolist())
            if probs_c is not None and params.min_label_prob > 0:
                peak = probs_c[:, select & free[crop]].max(axis=1, initial=0.0)
                labs |= set(np.flatnonzero(peak >= params.min_label_prob).tolist())
            labs = sorted(labs)
        if len(labs) < 2:
            continue  # one label: nothing to decide
        unary = unary_energy(cur_c, protect[crop], void_c, probs_c, labs, params)
        best = np.zeros(dst.shape, dtype=np.uint8)
        best[select] = np.asarray(labs, dtype=np.uint8)[crf_labels(image[crop], unary, select, params, cancel)]
        out[crop][dst] = best[dst]
    return out
