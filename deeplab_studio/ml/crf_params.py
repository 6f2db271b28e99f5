"""The dense CRF's settings (``CRFParams``), DeepLab v2's published ones, and the cancel hook.

Numpy and the standard library only; ``ml.crf`` explains how the defaults were chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .cancel import Cancel, is_cancelled
from .errors import CRFCancelled

MAX_LABELS = 255  # indices 0..254 are classes; 255 is ignore
MIN_RANGE = 0.1  # smallest sxy/srgb: a kernel narrower than this reaches no neighbour, and ~1e-6
# overflows pydensecrf's permutohedral lattice (measured: a segfault inside the C++ code)


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


def check_cancel(cancel: Cancel) -> None:
    """Raise CRFCancelled when ``cancel`` (``ml.cancel``'s hook) asks to stop."""
    if is_cancelled(cancel):
        raise CRFCancelled("CRF refinement cancelled")
