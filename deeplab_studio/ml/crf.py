"""Dense CRF boundary refinement (Krähenbühl & Koltun's mean-field; own engine, pydensecrf as reference).

`refine(image, probs)` snaps a softmax proposal to image edges, `refine_labels(image, labels)`
does the same for a hard label map. Human pixels (`protect`) keep their label exactly and act
as fixed evidence (near one-hot unary) for their neighbours; 255 (ignore) is never a CRF label:
it carries no evidence and is restored where it was, never produced elsewhere.

Speed without changing the answer (crf_engine, crf_meanfield, crf_lattice): only the band within
`margin` px of a label boundary (and, for soft input, of an uncertain pixel) is re-labelled, cut
into tiles (bounded memory) with `margin` px of context. Each pixel carries only its candidate
labels: for hard labels those present within `margin` px (any other gets eps and cannot win),
for probabilities those at `min_label_prob` or more there, and its own label. A label's messages
are computed only where it is a candidate and a pixel with one candidate only sends messages, so
a five-class scene costs what its busy pixels cost. The smoothness kernel is an exact truncated
Gaussian stencil (`gaussian_sxy` <= 4; wider ones use a lattice), the appearance kernel runs on
our permutohedral lattice (pydensecrf's arithmetic: the same Q within 2e-4), each label on the
sub-lattice its pixels touch. `CRFSession` keeps an image's lattice and kernels across calls
(the window's snaps and slider previews; `prepare` builds them ahead), `workers` runs the tiles of
a large image in processes, `crf_torch.refine_torch` runs the mean-field on a GPU. pydensecrf
stays as the reference (`crf_reference`, `crf_engine.refine_free_pixels(..., reference=True)`):
on the 7 voc_real val crops the two differ on at most 91 of 263,169 pixels and 0.03 mIoU points
(tests/ml/test_crf_engine.py); restricted and whole-image runs differ on < 0.2 % of pixels, and
every change lies within 16 px of the input's borders (tests/ml/test_crf.py).
Measured against a plain 21-label, whole-image pydensecrf call with the same energy, in one run
(benchmarks/bench_crf_scenes.py, all 10 voc_real scenes, 2 cores under a load of ~9, wall time;
two runs): the R101 predictions with the defaults 6.8-23× (median 10.4×), the bundled model's
labels with its card setting 4.2-19× (median 8.4-8.9×), its probabilities with the defaults
2.6-18× (median 5.8-6.3×); the previous engine (pydensecrf per tile with the tile's labels) gave
2.3-22×. Below 5×: the probabilities of 2011_000006 / 2011_000003 / 2011_000025 (2.6-2.8,
2.9-3.0, 4.0-4.1×), 2007_000033 (4.7×) and 2007_000332 (3.9× in one run, 5.3× in the other),
and 2011_000006 with the card (4.2-4.3×): MobileNet's 1/16 logits leave ~80 % of those pixels
uncertain (the band is nearly the whole image), up to 10 labels reach 1 % somewhere and 3-4 of
them over large areas, and each such label costs a lattice filter over the whole band per
iteration. A CRFSession's repeated call (snap again, slider preview): 14-73×, 6.5-33×, 3.7-27×.
mIoU: ours - plain +0.02 / +0.06 / +0.04 points on average (worst -0.04), ours - previous engine
-0.005 (worst -0.03).
Memory (4000×3000, benchmarks/bench_crf.py, load ~9 on 2 cores): hard labels 5.0 s, peak RSS
255 MB; 21-class float16 probabilities (504 MB themselves) 20 s, peak RSS +378 MB over the
inputs. A plain whole-image pydensecrf call with just the 2 labels present took 112 s and 2.9 GB.

Defaults chosen by measurement (benchmarks/bench_crf.py prints all of this). mIoU in points,
background + object, void ignored, on tests/data/voc_samples (real DeepLab v3+ R101
predictions) and on synthetic proposals (ground truth itself; ground truth box-down-sampled
8/16/32× and bilinearly up-sampled as a softmax); mean change over the 3 images (worst):

    setting (one change from the defaults)  prediction     GT (perfect)  GT↓8 soft     GT↓32 soft
    input mIoU                              96.63          100.00        99.96         95.03
    defaults                                +2.26 (+1.72)  -0.60 (-1.18) -0.05 (-0.09) +1.95 (+1.36)
    no gaussian kernel                      +1.44 (+0.11)  -1.38 (-2.42) -0.09 (-0.15) +1.84 (+1.13)
    no bilateral kernel                     +0.00          +0.00         -0.00         -0.02
    bilateral sxy 20 / 80                   +1.81 / +1.27  -0.20 / -1.67 -0.01 / -0.13 +1.36 / +1.56
    srgb 3 / 13                             +2.07 / +2.14  -0.41 / -0.91 -0.03 / -0.06 +2.00 / +1.58
    bilateral compat 2 / 5                  +1.85 / +1.71  -0.26 / -1.28 -0.01 / -0.16 +1.82 / +1.75
    hard confidence 0.6 / 0.9               +1.81 / +0.84  -1.19 / -0.07 (soft input: no effect)
    DeepLab v2 VOC (4, 121, 5, 3, 3)        +0.67 (-0.75)  -2.35 (-3.63) -0.32 (-0.62) +1.30 (-0.69)
    DeepLab v2 R101 (4, 67, 3, 3, 1)        +1.79 (+1.26)  -1.32 (-2.08) -0.13 (-0.19) +1.90 (+0.31)
    pydensecrf README (10, 80, 13, 3, 3)    -1.72 (-4.63)  -4.64 (-6.83) -0.89 (-1.47) -1.23 (-3.19)
    the same with margin 64               -10.50 (-22.83) -14.01 (-27.02) -0.99 (-1.67) -1.57 (-3.62)

Strong bilateral damage is capped by `margin`, which is also how far a hard label may travel:
the pydensecrf README kernels cost the aeroplane / bird 4.6 / 3.4 points here (whole-image runs
with the same energy: 4.6 / 3.9), but 11.3 / 22.9 points with margin 64 (tests/ml/test_crf.py).

The real predictions: 96.92 → 98.64, 96.60 → 99.28, 96.37 → 98.76 (aeroplane, sheep, bird); a
plain whole-image 21-label call with the same energy and 10 iterations gives 98.64, 99.29,
98.81 (mean 98.90 vs 98.91: equal within 0.01 points, not better; the bird is 0.05 lower). A
plain call with pydensecrf's own `unary_from_labels` (0.7 to the label, the rest spread over
all 21) changes almost nothing (96.63 → 96.63). The defaults take the largest gain on real
predictions while costing a perfect proposal less than half of what DeepLab's settings cost
(−0.60 vs −1.32/−2.35; on GT↓8 −0.05 vs −0.13/−0.32, per sample at worst 0.003 points more
than R101's); a grid sweep of whole-image runs (bilateral sxy 20–100, srgb 3–13, compat 2–10,
confidence 0.7–0.95) showed a broad plateau around these values, not a sharp optimum.
`iterations` 10 matches the plain 10-iteration call; 5 gives +2.11 on the predictions and
−0.38 on the perfect proposal.

Per model (`ProposalCRF`, `model_crf`): a model card may carry its own setting, `"crf": {"input":
"probs"|"labels", "params": {...}}`; `predict --crf`, `evaluate --crf` and the window's proposals
use it (the CRF panel's applied sliders still win). Re-checked on the 7 val crops of
tests/data/voc_real with the R101 predictions as hard labels, the defaults give +1.38 mean (worst
-0.03; +1.39 / -0.02 with the engine before the per-pixel candidates; an exploratory sweep of 609 hard-label settings found none better by more than 0.02): they
stay. The bundled DeepLab v3 MobileNetV2 (OS 16, no decoder: logits at 1/16) is another case
(benchmarks/measure_voc_model.py, all 10 voc_real images): with the defaults its proposals gain
+0.39 from probabilities / +0.48 from labels, but train images lose up to 2.8 (a small, partly
right car or sofa is erased) and pooled mIoU falls 1.2; from probabilities none of 108 settings
did better than +0.49, and each lost at least 2.5 on some image. Its card asks for labels with
hard_confidence 0.95, bilateral sxy 80, srgb 20, compat 4, margin 32: +0.76 mean, worst -0.13,
pooled 68.61 -> 69.11 (found with the previous engine: +0.78, worst -0.06, 69.12; pydensecrf
itself with the lattice at absolute instead of crop coordinates also gives -0.13 there: the
lattice's placement alone moves a single image by ~0.07; leave-one-out over the images, the
honest figure: +0.66, worst -1.24); the same setting gives the R101 predictions +0.79 instead of
+1.39. Good hard-label settings lie
on a narrow ridge where bilateral_compat / log(c / (1 - c)), c = hard_confidence, is about
1.25-1.45: below it little moves (0.95 with compat 3: +0.26), above it small objects vanish
(0.95 with compat 5, or 0.85 with compat 3: worst -1.5 to -2.1).

`cancel` (a callable or `threading.Event`) is checked between tiles and mean-field iterations.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .crf_engine import LatticeSource, refine_free_pixels
from .crf_engine import unary_energy as _unary  # noqa: F401 (benchmarks/bench_crf.py reads crf._unary)
from .crf_inputs import check_image, check_labels, check_params, check_probs, check_protect
from .crf_params import DEEPLAB_V2_PARAMS, MIN_RANGE, Cancel, CRFParams  # noqa: F401 (re-exported)
from .crf_session import CRFSession, SessionLender, session_for
from .errors import CRFCancelled  # noqa: F401 (also imported from here)

__all__ = ["CRFParams", "CRFCancelled", "refine", "refine_labels", "DEEPLAB_V2_PARAMS", "ProposalCRF", "model_crf",
           "CRFSession", "SessionLender", "session_for"]


# --- public API ----------------------------------------------------------------------------------------
def refine(image: np.ndarray, probs: np.ndarray, *, protect: np.ndarray | None = None,
           params: CRFParams | None = None, labels: np.ndarray | None = None,
           cancel: Cancel = None, workers: int = 1) -> np.ndarray:
    """Labels (uint8 H×W) from softmax `probs` (C×H×W float) snapped to the edges of `image`.

    `protect` (bool H×W) marks human pixels: they keep their label from `labels` (default: the
    argmax of `probs`) exactly, 255 included, and act as fixed evidence for their neighbours.
    Unprotected pixels take the CRF's label, never 255. Raises ValueError on bad input.
    `cancel` (a callable returning True, or a `threading.Event`) is checked between tiles and
    mean-field iterations; when set, `CRFCancelled` is raised. `workers` > 1: the tiles of a large
    image in that many processes (same answer; pays only with several busy tiles and idle cores).
    (`CRFSession.refine`: the same, reusing the image's kernels across calls.)
    """
    return _refine(image, probs, protect, params, labels, cancel, None, workers)


def refine_labels(image: np.ndarray, labels: np.ndarray, *, protect: np.ndarray | None = None,
                  params: CRFParams | None = None, cancel: Cancel = None, workers: int = 1) -> np.ndarray:
    """A hard label map (uint8 H×W, 255 = ignore) snapped to the edges of `image`.

    Each label is given `params.hard_confidence`. Protected pixels and 255 pixels keep their
    value; 255 carries no evidence and is never produced elsewhere. Raises ValueError on bad input;
    `cancel` and `workers` as in `refine`. (`CRFSession.refine_labels`: the same, reusing the
    image's kernels.)
    """
    return _refine_labels(image, labels, protect, params, cancel, None, workers)


def _refine(image: np.ndarray, probs: np.ndarray, protect: np.ndarray | None, params: CRFParams | None,
            labels: np.ndarray | None, cancel: Cancel, lattices: LatticeSource | None, workers: int = 1) -> np.ndarray:
    params = check_params(params)
    image = check_image(image)
    shape = image.shape[:2]
    probs, current, top = check_probs(probs, shape)
    protect = check_protect(protect, shape)
    if labels is not None:
        labels = check_labels(labels, shape)
        current[protect] = labels[protect]
    return refine_free_pixels(image, current, protect, probs, params, top=top, cancel=cancel, lattices=lattices,
                              workers=workers)


def _refine_labels(image: np.ndarray, labels: np.ndarray, protect: np.ndarray | None, params: CRFParams | None,
                   cancel: Cancel, lattices: LatticeSource | None, workers: int = 1) -> np.ndarray:
    params = check_params(params)
    image = check_image(image)
    shape = image.shape[:2]
    labels = check_labels(labels, shape)
    protect = check_protect(protect, shape)
    first = labels.flat[0]
    if (labels == first).all():
        return labels.copy()  # a single label (or all void): nothing to refine
    return refine_free_pixels(image, labels, protect, None, params, cancel=cancel, lattices=lattices,
                              workers=workers)


# --- a model's own setting -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ProposalCRF:
    """How a model's proposals are refined: the CRF `params` and whether the CRF starts from the
    softmax probabilities (`refine`) or from their argmax (`refine_labels`, each label at
    `params.hard_confidence`). A model card may ask for its own (`from_card`); else the defaults."""

    params: CRFParams = field(default_factory=CRFParams)
    use_probs: bool = True

    def __call__(self, image: np.ndarray, probs: np.ndarray | None, *, labels: np.ndarray | None = None,
                 cancel: Cancel = None, session: "CRFSession | None" = None) -> np.ndarray:
        """Refined labels for one proposal (`labels`, if given, is the argmax of `probs`); with a
        `session` (a `CRFSession` of this image) its kept kernels are reused."""
        lattices = session if session is not None and session.matches(image) else None
        if self.use_probs:
            return _refine(image, probs, None, self.params, None, cancel, lattices)
        if labels is None:
            labels = np.asarray(probs).argmax(axis=0).astype(np.uint8)
        return _refine_labels(image, labels, None, self.params, cancel, lattices)

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
