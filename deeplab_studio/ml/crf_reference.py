"""pydensecrf as the reference the fast engine is checked against (tests, benchmarks).

`crf_labels` runs pydensecrf's mean-field over the selected pixels of a crop with the labels of a
unary (the engine of releases before the per-pixel candidates); `plain_crf` is the plain call a
user would write: DenseCRF2D over the whole image with every label.
"""

from __future__ import annotations

import numpy as np

from .crf_params import Cancel, CRFParams, check_cancel


def crf_labels(image: np.ndarray, unary: np.ndarray, select: np.ndarray, params: CRFParams,
               cancel: Cancel = None, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Mean-field inference over the `select`ed pixels of one crop (at `origin` = (y, x) in the
    image) with every label of `unary` (n×h×w energies). Returns, for those pixels (row-major), the
    index of the best label. The kernels are those of pydensecrf's DenseCRF2D, built for the
    selected pixels only; iterations are stepped (`inference(n)`'s arithmetic) to check `cancel`."""
    import pydensecrf.densecrf as dcrf

    n = unary.shape[0]
    ys, xs = np.nonzero(select)
    ys, xs = ys + origin[0], xs + origin[1]
    crf = dcrf.DenseCRF(int(ys.size), n)
    crf.setUnaryEnergy(np.ascontiguousarray(unary[:, ys - origin[0], xs - origin[1]], dtype=np.float32))
    if params.gaussian_compat > 0:
        feats = np.stack([xs / params.gaussian_sxy, ys / params.gaussian_sxy]).astype(np.float32)
        crf.addPairwiseEnergy(feats, compat=float(params.gaussian_compat))
    if params.bilateral_compat > 0:
        feats = np.empty((5, ys.size), dtype=np.float32)
        feats[0], feats[1] = xs / params.bilateral_sxy, ys / params.bilateral_sxy
        feats[2:] = image[ys - origin[0], xs - origin[1]].T / np.float32(params.bilateral_srgb)
        crf.addPairwiseEnergy(feats, compat=float(params.bilateral_compat))
    q, tmp1, tmp2 = crf.startInference()
    for _ in range(int(params.iterations)):
        check_cancel(cancel)
        crf.stepInference(q, tmp1, tmp2)
    return np.asarray(q, dtype=np.float32).argmax(axis=0)


def plain_crf(image: np.ndarray, unary: np.ndarray, params: CRFParams) -> np.ndarray:
    """One pydensecrf DenseCRF2D call over the whole image with every label of `unary` (n×H×W):
    the index of the best label per pixel (uint8 H×W)."""
    import pydensecrf.densecrf as dcrf

    n, h, w = unary.shape
    d = dcrf.DenseCRF2D(w, h, n)
    d.setUnaryEnergy(np.ascontiguousarray(unary.reshape(n, -1), dtype=np.float32))
    d.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    d.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb,
                           rgbim=np.array(image, order="C", copy=True), compat=params.bilateral_compat)
    q = np.asarray(d.inference(int(params.iterations))).reshape(n, h, w)
    return q.argmax(axis=0).astype(np.uint8)
