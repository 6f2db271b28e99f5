"""Geometry shared by the coordinate formats (labelme, COCO): the frame their coordinates are drawn
in, and label maps traced into polygons that reproduce the map when painted in order.

**The frame.** labelme 6 (and X-AnyLabeling, its fork) shows an image file EXIF-rotated
(`labelme.utils.apply_exif_orientation` in its loader) but shows embedded `imageData` as stored
(`QImage.fromData` ignores EXIF; labelme only embeds pixels it has rotated already). COCO has no
rule of its own; CVAT, FiftyOne and detectron2 (`read_image`, which checks the sizes) treat
coordinates as being in the EXIF-rotated frame. So coordinates are drawn in the frame the tool
shows, and the declared size (`imageWidth`/`imageHeight`, COCO `width`/`height`) arbitrates:
when it matches only the other frame (an older tool that ignored EXIF on a 90° photo), that frame
is used. The result is always turned into the displayed frame, the one the window shows.

**Tracing.** Each 4-connected region of one value becomes the polygon through the centres of its
outer boundary pixels (OpenCV's `findContours`, every corner kept: no simplification). Filled the
way labelme2voc fills (Pillow: every pixel whose centre is inside or on the polygon), a polygon
covers its region and the holes in it; the holes are other regions, whose own polygons are
smaller and so come later in the order (largest polygon area first). 4-connected regions cannot
cross one another diagonally (8-connected ones can, and then neither order is right: 730 pixels
of one real VOC map came out wrong that way). Background regions need a polygon only when
something encloses them (they do not touch the image border).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deeplab_studio.storage.formats.base import FormatError
from deeplab_studio.storage.images import ImageInfo, apply_orientation


@dataclass(frozen=True)
class Frame:
    """Where to draw coordinates: a canvas of `size` (w, h), then `orientation` applied to it."""

    size: tuple[int, int]
    orientation: int  # EXIF orientation applied to the drawn map (1: drawn in the displayed frame)

    def to_displayed(self, labels: np.ndarray) -> np.ndarray:
        """The drawn H×W map in the displayed frame (C-contiguous)."""
        return np.ascontiguousarray(apply_orientation(labels, self.orientation))


def drawing_frame(info: ImageInfo, declared: tuple[int, int] | None, *, shown_as_stored: bool = False,
                  what: str = "the annotation") -> Frame:
    """The frame to draw coordinates in for an image with header `info` (see the module doc).

    `declared` is the (w, h) the annotation states, or None; `shown_as_stored` is True when the
    tool showed the pixels without their EXIF orientation (labelme's embedded imageData).
    Raises FormatError when `declared` matches neither frame.
    """
    stored = Frame(info.raw_size, info.orientation)
    displayed = Frame(info.size, 1)
    first, other = (stored, displayed) if shown_as_stored else (displayed, stored)
    if declared is None or tuple(declared) == first.size:
        return first
    if tuple(declared) == other.size:
        return other
    w, h = declared
    raise FormatError(f"{what} is for a {w}×{h} image, the image is {info.size[0]}×{info.size[1]}")


# ---------------------------------------------------------------------------------------------
# tracing


@dataclass(frozen=True)
class Region:
    """One traced region: its label value and the polygon (N×2 int x, y: pixel centres)."""

    value: int
    points: np.ndarray
    area: float  # the polygon's area (the order key)


def _outer_contours(mask: np.ndarray) -> list[np.ndarray]:
    """The outer boundary (N×2 int) of each 4-connected region of `mask`, islands in holes included."""
    import cv2  # storage may use OpenCV (not core)

    n, comp, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    out = []
    for k in range(1, n):
        x, y, w, h = (int(v) for v in stats[k, :4])
        region = np.pad((comp[y:y + h, x:x + w] == k).astype(np.uint8), 1)  # traced whole at the border
        found, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        out.append(max(found, key=len).reshape(-1, 2) + (x - 1, y - 1))
    return out


def _touches_border(points: np.ndarray, shape: tuple[int, int]) -> bool:
    h, w = shape
    return bool((points[:, 0] == 0).any() or (points[:, 1] == 0).any()
                or (points[:, 0] == w - 1).any() or (points[:, 1] == h - 1).any())


def trace_regions(labels: np.ndarray, *, background: int = 0) -> list[Region]:
    """The regions of a uint8 H×W map as polygons in painting order (largest area first).

    Regions of `background` are left out unless enclosed (the painter starts from background).
    Painting them in order reproduces the map (every real and random map tried so far); the
    caller still checks the result and patches what differs.
    """
    import cv2

    regions: list[Region] = []
    for value in np.unique(labels).tolist():
        for pts in _outer_contours(labels == value):
            if value == background and _touches_border(pts, labels.shape):
                continue
            area = float(cv2.contourArea(pts.astype(np.int32))) if len(pts) >= 3 else 0.0
            regions.append(Region(int(value), pts.astype(np.int64), area))
    regions.sort(key=lambda r: -r.area)  # stable: ties keep the value order
    return regions


def pixel_runs(mask: np.ndarray) -> list[tuple[int, int, int]]:
    """Horizontal runs of True in a 2-D mask as (row, first column, last column), inclusive."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    rows, starts = np.nonzero(d == 1)
    _, ends = np.nonzero(d == -1)
    return [(int(r), int(s), int(e) - 1) for r, s, e in zip(rows, starts, ends)]
