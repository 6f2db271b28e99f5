"""The Qt-free annotation document: one image, its label map and its edit mask.

Views (the canvas overlay, the class panel) listen to its events; tools and undo commands write
through it. All pixel writes go through the core (brush, fill, patches), never through Qt.
"""

from __future__ import annotations

import numpy as np

from deeplab_studio.core.labels import IGNORE, LabelSet
from deeplab_studio.core.merge import merge_proposal
from deeplab_studio.core.patches import MaskPatch, diff_to_patch, union_bbox
from deeplab_studio.session.events import Event

BBox = tuple[int, int, int, int]


class AnnotationDocument:
    """Label map (uint8 H×W), edit mask (bool H×W, True = painted by a human) and the RGB image.

    Events: `changed(bbox)` after pixels inside `bbox` changed; `reset()` after the whole label
    map was replaced (e.g. a class was deleted and the map remapped).
    """

    def __init__(self, image: np.ndarray, labels: np.ndarray | None = None,
                 edit_mask: np.ndarray | None = None, labelset: LabelSet | None = None,
                 key: str = "") -> None:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 H×W×3, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        self.image = np.ascontiguousarray(image)
        self.labels = self._checked(labels, np.uint8, (h, w), "label map")
        self.edit_mask = self._checked(edit_mask, bool, (h, w), "edit mask")
        self.labelset = labelset if labelset is not None else LabelSet.voc()
        self.key = key
        self.changed = Event()
        self.reset = Event()
        self._counts: np.ndarray | None = None

    @staticmethod
    def _checked(arr: np.ndarray | None, dtype, shape: tuple[int, int], what: str) -> np.ndarray:
        if arr is None:
            return np.zeros(shape, dtype=dtype)
        if arr.shape != shape:
            raise ValueError(f"{what} is {arr.shape[1]}×{arr.shape[0]}, the image is {shape[1]}×{shape[0]}")
        return np.ascontiguousarray(arr, dtype=dtype)

    # --- queries ----------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.labels.shape[1]

    @property
    def height(self) -> int:
        return self.labels.shape[0]

    def contains(self, x: float, y: float) -> bool:
        return 0 <= x < self.width and 0 <= y < self.height

    def label_at(self, x: float, y: float) -> int | None:
        """The class index under image point (x, y), or None outside the image."""
        if not self.contains(x, y):
            return None
        return int(self.labels[int(y), int(x)])

    def class_counts(self) -> np.ndarray:
        """Pixels per label value (256 entries, index 255 = ignore).

        Counted once, then kept up to date from patches (`account`, `apply`, `revert`), so a
        stroke costs O(touched area). During a stroke, before its patch exists, they lag behind.
        """
        if self._counts is None:
            self._counts = label_histogram(self.labels)
        return self._counts

    def account(self, labels_patch: MaskPatch | None, *, forward: bool = True) -> None:
        """Update the class counts for a labels patch that was applied (or reverted)."""
        if labels_patch is None or self._counts is None:
            return
        old, new = (labels_patch.before, labels_patch.after) if forward else (labels_patch.after, labels_patch.before)
        self._counts = self._counts - label_histogram(old) + label_histogram(new)

    # --- changes ----------------------------------------------------------------------------
    def notify(self, bbox: BBox | None) -> None:
        """Tell listeners that pixels in `bbox` changed (tools call this after writing)."""
        if bbox is None:
            return
        self.changed.emit(tuple(int(v) for v in bbox))

    def apply(self, labels_patch: MaskPatch | None, edit_patch: MaskPatch | None) -> None:
        """Redo a recorded change (patch `after` values written)."""
        for patch, arr in ((labels_patch, self.labels), (edit_patch, self.edit_mask)):
            if patch is not None:
                patch.apply(arr)
        self.account(labels_patch)
        self.notify(union_bbox(*(p.bbox for p in (labels_patch, edit_patch) if p is not None)))

    def revert(self, labels_patch: MaskPatch | None, edit_patch: MaskPatch | None) -> None:
        """Undo a recorded change (patch `before` values written back)."""
        for patch, arr in ((labels_patch, self.labels), (edit_patch, self.edit_mask)):
            if patch is not None:
                patch.revert(arr)
        self.account(labels_patch, forward=False)
        self.notify(union_bbox(*(p.bbox for p in (labels_patch, edit_patch) if p is not None)))

    def proposal_patch(self, proposal: np.ndarray) -> MaskPatch | None:
        """The labels patch that turns the map into `proposal` except where a human painted.

        Pixels with `edit_mask` True keep their label, so a model run or CRF never overwrites
        human work. Returns None when nothing would change. Does not modify the document.
        """
        return diff_to_patch(self.labels, merge_proposal(self.labels, self.edit_mask, proposal))

    def remap(self, lut: np.ndarray) -> None:
        """Replace every label by `lut[label]` (after a class was deleted); emits `reset`."""
        self.labels[...] = np.asarray(lut, dtype=np.uint8)[self.labels]
        self._counts = None
        self.reset.emit()


def label_histogram(labels: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """Pixels per value (256 entries) of a uint8 array, counted in cache-sized chunks
    (about 10× faster than one `np.bincount` over a large image)."""
    flat = np.ascontiguousarray(labels).ravel()
    out = np.zeros(256, np.int64)
    for i in range(0, flat.size, chunk):
        out += np.bincount(flat[i:i + chunk], minlength=256)
    return out


__all__ = ["AnnotationDocument", "BBox", "IGNORE"]
