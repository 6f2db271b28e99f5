"""Dense CRF boundary refinement (Krähenbühl & Koltun mean-field, via pydensecrf).

`refine(image, probs)` snaps a softmax proposal to image edges, `refine_labels(image, labels)`
does the same for a hard label map. Human pixels (`protect`) keep their label exactly and act
as fixed evidence (near one-hot unary) for their neighbours; 255 (ignore) is never a CRF label:
it carries no evidence and is restored where it was, never produced elsewhere.

Speed without changing the answer: only the band within `margin` px of a label boundary (and,
for soft input, of an uncertain pixel) is re-labelled; the band is cut into tiles (bounded
memory); each tile's CRF holds only the band's pixels plus `margin` px of context (pydensecrf's
general DenseCRF with the DenseCRF2D features) and only the labels that occur there. A hard
label may move only to labels present within `margin` px; the others get a zero probability,
so they carry no mass and leaving them out changes nothing. Measured: with a whole-image run
every change lies within 16 px of the input's borders; restricted and whole-image runs differ
on < 0.2 % of pixels (tests/ml/test_crf.py), at 6.5–14× the speed of a plain 21-label call
(bench, 513² samples, 2 busy cores; the ratio moves with the load).
Memory (4000×3000, bench): hard labels 2–3 s, peak RSS 230 MB; 21-class float16 probabilities
(504 MB themselves) 10–15 s, peak RSS +264 MB over the inputs. A plain whole-image pydensecrf call
with just the 2 labels present took 112 s and 2.9 GB.

Defaults chosen by measurement (benchmarks/bench_crf.py prints all of this). mIoU in points,
background + object, void ignored, on tests/data/voc_samples (real DeepLab v3+ R101
predictions) and on synthetic proposals (ground truth itself; ground truth box-down-sampled
8/16/32× and bilinearly up-sampled as a softmax); mean change over the 3 images (worst):

    setting (one change from the defaults)  prediction     GT (perfect)  GT↓8 soft     GT↓32 soft
    input mIoU                              96.63          100.00        99.96         95.03
    defaults                                +2.27 (+1.75)  -0.60 (-1.19) -0.06 (-0.09) +1.92 (+1.32)
    no gaussian kernel                      +1.43 (+0.09)  -1.43 (-2.48) -0.09 (-0.16) +1.82 (+1.10)
    no bilateral kernel                     +0.00          +0.00         +0.00         -0.01
    bilateral sxy 20 / 80                   +1.83 / +1.26  -0.20 / -1.70 -0.01 / -0.13 +1.35 / +1.55
    srgb 3 / 13                             +2.05 / +2.13  -0.40 / -0.90 -0.03 / -0.05 +1.99 / +1.56
    bilateral compat 2 / 5                  +1.87 / +1.70  -0.26 / -1.35 -0.01 / -0.17 +1.78 / +1.71
    hard confidence 0.6 / 0.9               +1.81 / +0.85  -1.22 / -0.08 (soft input: no effect)
    DeepLab v2 VOC (4, 121, 5, 3, 3)        +0.65 (-0.78)  -2.36 (-3.66) -0.31 (-0.60) +1.32 (-0.71)
    DeepLab v2 R101 (4, 67, 3, 3, 1)        +1.80 (+1.25)  -1.33 (-1.99) -0.13 (-0.19) +1.88 (+0.36)
    pydensecrf README (10, 80, 13, 3, 3)    -1.72 (-4.63)  -4.62 (-6.77) -0.99 (-1.57) -1.46 (-3.81)
    the same with margin 64               -10.51 (-22.86) -14.01 (-27.05) -1.09 (-1.82) -1.78 (-4.13)

Strong bilateral damage is capped by `margin`, which is also how far a hard label may travel:
the pydensecrf README kernels cost the aeroplane / bird 4.6 / 3.4 points here (whole-image runs
with the same energy: 4.6 / 3.9), but 11.3 / 22.9 points with margin 64 (tests/ml/test_crf.py).

The real predictions: 96.92 → 98.67, 96.60 → 99.30, 96.37 → 98.75 (aeroplane, sheep, bird); a
plain whole-image 21-label call with the same energy and 10 iterations gives 98.64, 99.29,
98.81 (mean 98.90 vs 98.91: equal within 0.01 points, not better; the bird is 0.06 lower). A
plain call with pydensecrf's own `unary_from_labels` (0.7 to the label, the rest spread over
all 21) changes almost nothing (96.63 → 96.63). The defaults take the largest gain on real
predictions while costing a perfect proposal less than half of what DeepLab's settings cost
(−0.60 vs −1.33/−2.36; on GT↓8 −0.06 vs −0.13/−0.31, per sample at worst 0.003 points more
than R101's); a grid sweep of whole-image runs (bilateral sxy 20–100, srgb 3–13, compat 2–10,
confidence 0.7–0.95) showed a broad plateau around these values, not a sharp optimum.
`iterations` 10 matches the plain 10-iteration call; 5 gives +2.11 on the predictions and
−0.38 on the perfect proposal.

Per model (`ProposalCRF`, `model_crf`): a model card may carry its own setting, `"crf": {"input":
"probs"|"labels", "params": {...}}`; `predict --crf`, `evaluate --crf` and the window's proposals
use it (the CRF panel's applied sliders still win). Re-checked on the 7 val crops of
tests/data/voc_real with the R101 predictions as hard labels, the defaults give +1.39 mean (worst
-0.02; an exploratory sweep of 609 hard-label settings found none better by more than 0.02): they
stay. The bundled DeepLab v3 MobileNetV2 (OS 16, no decoder: logits at 1/16) is another case
(benchmarks/measure_voc_model.py, all 10 voc_real images): with the defaults its proposals gain
+0.39 from probabilities / +0.48 from labels, but train images lose up to 2.8 (a small, partly
right car or sofa is erased) and pooled mIoU falls 1.2; from probabilities none of 108 settings
did better than +0.49, and each lost at least 2.5 on some image. Its card asks for labels with
hard_confidence 0.95, bilateral sxy 80, srgb 20, compat 4, margin 32: +0.78 mean, worst -0.06,
pooled 68.61 -> 69.12 (leave-one-out over the images, the honest figure: +0.66, worst -1.24);
the same setting gives the R101 predictions +0.79 instead of +1.39. Good hard-label settings lie
on a narrow ridge where bilateral_compat / log(c / (1 - c)), c = hard_confidence, is about
1.25-1.45: below it little moves (0.95 with compat 3: +0.26), above it small objects vanish
(0.95 with compat 5, or 0.85 with compat 3: worst -1.5 to -2.1).

`cancel` (a callable or `threading.Event`) is checked between tiles and mean-field iterations
(stepped with pydensecrf's startInference/stepInference: the same arithmetic as `inference`).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from deeplab_studio.core.labels import IGNORE

from .errors import CRFCancelled  # noqa: F401 (also imported from here)

__all__ = ["CRFParams", "CRFCancelled", "refine", "refine_labels", "DEEPLAB_V2_PARAMS", "ProposalCRF", "model_crf"]

_PROB_EPS = 1e-5  # probabilities are clipped here before -log (as pydensecrf's helper does)
_PROTECT_EPS = 1e-5  # a protected pixel's unary: 1 - eps for its label, eps for the others
MAX_LABELS = 255  # indices 0..254 are classes; 255 is ignore
MIN_RANGE = 0.1  # smallest sxy/srgb: a kernel narrower than this reaches no neighbour, and ~1e-6
# overflows pydensecrf's permutohedral lattice (measured: a segfault inside the C++ code)

Cancel = Callable[[], bool] | threading.Event | None


@dataclass(frozen=True)
class CRFParams:
    """Dense CRF settings (model) and how much of the image is computed (execution).

    Model: `iterations` of mean-field inference; the smoothness kernel (`gaussian_sxy` pixels,
    weight `gaussian_compat`); the appearance kernel (`bilateral_sxy` pixels, `bilateral_srgb`
    colour levels, weight `bilateral_compat`); `hard_confidence`, the probability `refine_labels`
    gives a pixel's own label (1 − it to each label present within `margin`, 0 to the rest).

    Execution: pixels farther than `margin` from any label boundary or uncertain pixel (top
    probability below `settled_prob`) keep their label; the band is processed in tiles of at
    most `tile_size`² pixels plus `margin` of context; a label enters a tile's CRF when it is
    the label of a pixel there or reaches `min_label_prob` somewhere in it.
    """

    iterations: int = 10
    gaussian_sxy: float = 1.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 40.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 3.0
    hard_confidence: float = 0.7
    margin: int = 16
    tile_size: int = 1024
    settled_prob: float = 0.95
    min_label_prob: float = 0.01

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"CRFParams.{name} must be {rule}, got {getattr(self, name)!r}")

        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise bad(f.name, "a number")
            if not np.isfinite(v):
                raise bad(f.name, "finite")
        if int(self.iterations) != self.iterations or self.iterations < 1:
            raise bad("iterations", "an integer >= 1")
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            if getattr(self, name) < MIN_RANGE:
                raise bad(name, f">= {MIN_RANGE}")
        for name in ("gaussian_compat", "bilateral_compat"):
            if getattr(self, name) < 0:
                raise bad(name, ">= 0")
        if not 0.5 <= self.hard_confidence < 1:
            raise bad("hard_confidence", "in [0.5, 1)")
        if int(self.margin) != self.margin or self.margin < 1:
            raise bad("margin", "an integer >= 1")
        if int(self.tile_size) != self.tile_size or self.tile_size < 16:
            raise bad("tile_size", "an integer >= 16")
        if not 0 < self.settled_prob <= 1:
            raise bad("settled_prob", "in (0, 1]")
        if not 0 <= self.min_label_prob < 1:
            raise bad("min_label_prob", "in [0, 1)")


#: DeepLab v2's published VOC settings (w1=4, θα=121, θβ=5, w2=3, θγ=3, 10 iterations), for comparison.
DEEPLAB_V2_PARAMS = CRFParams(iterations=10, gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=121,
                              bilateral_srgb=5, bilateral_compat=4)


def _check_cancel(cancel: Cancel) -> None:
    if cancel is not None and (cancel.is_set() if isinstance(cancel, threading.Event) else cancel()):
        raise CRFCancelled("CRF refinement cancelled")


# --- validation ----------------------------------------------------------------------------------
def _check_params(params: CRFParams | None) -> CRFParams:
    if params is None:
        return CRFParams()
    if not isinstance(params, CRFParams):
        raise ValueError(f"params must be a CRFParams, got {type(params).__name__}")
    return params


def _check_image(image: np.ndarray) -> np.ndarray:
    """uint8 H×W×3 RGB; grayscale is replicated, an alpha channel dropped, other dtypes refused."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image must be H×W, H×W×3 or H×W×4, got shape {image.shape}")
    image = image[:, :, :3]
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty (shape {image.shape})")
    if image.dtype != np.uint8:
        if image.dtype.kind not in "ui":
            raise ValueError(f"image must be uint8 (0..255), got dtype {image.dtype}")
        if image.min() < 0 or image.max() > 255:
            raise ValueError(f"image values must lie in 0..255, got {image.min()}..{image.max()}")
        image = image.astype(np.uint8)
    return image


def _check_labels(labels: np.ndarray, shape: tuple[int, int], what: str = "labels") -> np.ndarray:
    if not isinstance(labels, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(labels).__name__}")
    if labels.ndim != 2:
        raise ValueError(f"{what} must be a 2-D H×W array, got shape {labels.shape}")
    if labels.shape != shape:
        raise ValueError(f"{what} size {labels.shape} does not match the image size {shape}")
    if labels.dtype == np.uint8:
        return labels
    if labels.dtype.kind not in "uib":
        raise ValueError(f"{what} must be an integer label map (uint8), got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"{what} values must lie in 0..255, got {labels.min()}..{labels.max()}")
    return labels.astype(np.uint8)


def _check_protect(protect: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    if protect is None:
        return np.zeros(shape, dtype=bool)
    if not isinstance(protect, np.ndarray):
        raise ValueError(f"protect must be a numpy array, got {type(protect).__name__}")
    if protect.shape != shape:
        raise ValueError(f"protect mask size {protect.shape} does not match the image size {shape}")
    if protect.dtype != bool:
        if protect.dtype.kind not in "uib" or (protect.size and not np.isin(protect, (0, 1)).all()):
            raise ValueError(f"protect must be a boolean mask, got dtype {protect.dtype}")
        protect = protect.astype(bool)
    return protect


def _check_probs(probs: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate C×H×W probabilities; returns (probs, argmax uint8 H×W, top probability float32 H×W).

    Works in blocks of rows, so a large float16/float32 input costs no full-size temporaries.
    """
    if not isinstance(probs, np.ndarray):
        raise ValueError(f"probs must be a numpy array, got {type(probs).__name__}")
    if probs.ndim != 3:
        raise ValueError(f"probs must be C×H×W, got shape {probs.shape}")
    if probs.shape[1:] != shape:
        raise ValueError(f"probs size {probs.shape[1:]} does not match the image size {shape}")
    if not 1 <= probs.shape[0] <= MAX_LABELS:
        raise ValueError(f"probs must have 1..{MAX_LABELS} classes, got {probs.shape[0]}")
    if probs.dtype.kind != "f":
        raise ValueError(f"probs must be floating point (softmax output), got dtype {probs.dtype}")
    best = np.empty(shape, dtype=np.uint8)
    top = np.empty(shape, dtype=np.float32)
    rows = max(1, 2**22 // max(1, probs.shape[0] * shape[1]))
    for y in range(0, shape[0], rows):
        block = probs[:, y:y + rows]
        if not np.isfinite(block).all():
            raise ValueError("probs contain NaN or infinite values")
        if block.min() < 0 or block.max() > 1 + 1e-3:
            raise ValueError("probs must be probabilities in 0..1 (softmax output, not logits)")
        best[y:y + rows] = block.argmax(axis=0)
        top[y:y + rows] = block.max(axis=0)
    return probs, best, top


# --- small numpy helpers -----------------------------------------------------------------------------
def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
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


def _boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels whose label differs from a 4-neighbour's."""
    edge = np.zeros(labels.shape, dtype=bool)
    dy = labels[1:, :] != labels[:-1, :]
    dx = labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    return edge


def _splits(n: int, tile: int) -> list[tuple[int, int]]:
    """Cut 0..n into ceil(n / tile) near-equal parts."""
    k = -(-n // tile)
    cuts = [round(i * n / k) for i in range(k + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


# --- the engine ----------------------------------------------------------------------------------------
def _crf_labels(image: np.ndarray, unary: np.ndarray, select: np.ndarray, params: CRFParams,
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
        _check_cancel(cancel)
        crf.stepInference(q, tmp1, tmp2)
    return np.asarray(q, dtype=np.float32).argmax(axis=0)


def _unary(current: np.ndarray, protect: np.ndarray, void: np.ndarray, probs: np.ndarray | None,
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
            near = _dilate(mine, int(params.margin))
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


def _refine(image: np.ndarray, current: np.ndarray, protect: np.ndarray, probs: np.ndarray | None,
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
        seeds = _boundaries(current)
        if probs is not None:
            seeds |= (probs.max(axis=0) if top is None else top) < params.settled_prob
        write = _dilate(seeds & free, int(params.margin)) & free
        if not write.any():
            return out
        tiles = [(y, x) for y in _splits(current.shape[0], int(params.tile_size))
                 for x in _splits(current.shape[1], int(params.tile_size))]
        context = int(params.margin)
    else:
        write = free
        tiles = [((0, current.shape[0]), (0, current.shape[1]))]
        context = 0
    height, width = current.shape
    for (ty0, ty1), (tx0, tx1) in tiles:
        _check_cancel(cancel)
        core = write[ty0:ty1, tx0:tx1]
        if not core.any():
            continue
        bx0, by0, bx1, by1 = _bbox(core)
        x0, y0 = max(tx0 + bx0 - context, 0), max(ty0 + by0 - context, 0)
        x1, y1 = min(tx0 + bx1 + context, width), min(ty0 + by1 + context, height)
        crop = (slice(y0, y1), slice(x0, x1))
        # dst: this tile's band pixels (all inside the crop); select: dst plus `context` around it
        dst = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        iy0, iy1, ix0, ix1 = max(ty0, y0), min(ty1, y1), max(tx0, x0), min(tx1, x1)
        dst[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = write[iy0:iy1, ix0:ix1]
        select = _dilate(dst, context) if context else np.ones_like(dst)
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
        unary = _unary(cur_c, protect[crop], void_c, probs_c, labs, params)
        best = np.zeros(dst.shape, dtype=np.uint8)
        best[select] = np.asarray(labs, dtype=np.uint8)[_crf_labels(image[crop], unary, select, params, cancel)]
        out[crop][dst] = best[dst]
    return out


# --- public API ----------------------------------------------------------------------------------------
def refine(image: np.ndarray, probs: np.ndarray, *, protect: np.ndarray | None = None,
           params: CRFParams | None = None, labels: np.ndarray | None = None,
           cancel: Cancel = None) -> np.ndarray:
    """Labels (uint8 H×W) from softmax `probs` (C×H×W float) snapped to the edges of `image`.

    `protect` (bool H×W) marks human pixels: they keep their label from `labels` (default: the
    argmax of `probs`) exactly, 255 included, and act as fixed evidence for their neighbours.
    Unprotected pixels take the CRF's label, never 255. Raises ValueError on bad input.
    `cancel` (a callable returning True, or a `threading.Event`) is checked between tiles and
    mean-field iterations; when set, `CRFCancelled` is raised.
    """
    params = _check_params(params)
    image = _check_image(image)
    shape = image.shape[:2]
    probs, current, top = _check_probs(probs, shape)
    protect = _check_protect(protect, shape)
    if labels is not None:
        labels = _check_labels(labels, shape)
        current[protect] = labels[protect]
    return _refine(image, current, protect, probs, params, top=top, cancel=cancel)


def refine_labels(image: np.ndarray, labels: np.ndarray, *, protect: np.ndarray | None = None,
                  params: CRFParams | None = None, cancel: Cancel = None) -> np.ndarray:
    """A hard label map (uint8 H×W, 255 = ignore) snapped to the edges of `image`.

    Each label is given `params.hard_confidence`. Protected pixels and 255 pixels keep their
    value; 255 carries no evidence and is never produced elsewhere. Raises ValueError on bad input;
    `cancel` as in `refine`.
    """
    params = _check_params(params)
    image = _check_image(image)
    shape = image.shape[:2]
    labels = _check_labels(labels, shape)
    protect = _check_protect(protect, shape)
    first = labels.flat[0]
    if (labels == first).all():
        return labels.copy()  # a single label (or all void): nothing to refine
    return _refine(image, labels, protect, None, params, cancel=cancel)


# --- a model's own setting -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ProposalCRF:
    """How a model's proposals are refined: the CRF `params` and whether the CRF starts from the
    softmax probabilities (`refine`) or from their argmax (`refine_labels`, each label at
    `params.hard_confidence`). A model card may ask for its own (`from_card`); else the defaults."""

    params: CRFParams = field(default_factory=CRFParams)
    use_probs: bool = True

    def __call__(self, image: np.ndarray, probs: np.ndarray | None, *, labels: np.ndarray | None = None,
                 cancel: Cancel = None) -> np.ndarray:
        """Refined labels for one proposal (`labels`, if given, is the argmax of `probs`)."""
        if self.use_probs:
            return refine(image, probs, params=self.params, cancel=cancel)
        if labels is None:
            labels = np.asarray(probs).argmax(axis=0).astype(np.uint8)
        return refine_labels(image, labels, params=self.params, cancel=cancel)

    def describe(self) -> str:
        """One line: the input and the parameters that differ from the defaults."""
        changed = {k: v for k, v in asdict(self.params).items() if v != getattr(CRFParams(), k)}
        return f"{'probs' if self.use_probs else 'labels'} " + (
            ", ".join(f"{k}={v:g}" for k, v in changed.items()) or "defaults")

    def to_card(self) -> dict:
        """The model card's `"crf"` entry: `{"input": "probs"|"labels", "params": {changed only}}`."""
        changed = {k: v for k, v in asdict(self.params).items() if v != getattr(CRFParams(), k)}
        return {"input": "probs" if self.use_probs else "labels", "params": changed}

    @classmethod
    def from_card(cls, card: Mapping | None) -> "ProposalCRF":
        """From a model card's `"crf"` entry (see `to_card`); the defaults when there is none.
        A malformed entry is a ValueError naming it."""
        entry = card.get("crf") if isinstance(card, Mapping) else None
        if entry is None:
            return cls()
        names = {f.name for f in fields(CRFParams)}
        params = entry.get("params", {}) if isinstance(entry, Mapping) else None
        if (not isinstance(params, Mapping) or entry.get("input", "probs") not in ("probs", "labels")
                or not set(params) <= names or not set(entry) <= {"input", "params", "note"}):
            raise ValueError(f"model card 'crf' entry must be {{\"input\": \"probs\"|\"labels\", \"params\": "
                             f"{{CRFParams fields}}}}, got {entry!r}")
        return cls(CRFParams(**params), use_probs=entry.get("input", "probs") == "probs")


def model_crf(model: str | os.PathLike | None) -> ProposalCRF:
    """The proposal CRF of a model: `None` or a bundled model's name reads that model's card; a
    weights file reads the card `<stem>.json` beside it when there is one (an unreadable or non-JSON
    file there is no card). Without a `"crf"` entry: the defaults."""
    from deeplab_studio.models import VOC_MODEL, bundled_models, model_card

    name = VOC_MODEL if model is None else model
    if isinstance(name, str) and name in bundled_models() and not Path(name).exists():
        try:
            return ProposalCRF.from_card(model_card(name))
        except LookupError:
            return ProposalCRF()
    try:
        card_path = Path(name).with_suffix(".json")
        card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else None
    except (ValueError, OSError):  # no file name, unreadable, not UTF-8 or not JSON: no card
        card = None
    return ProposalCRF.from_card(card)
