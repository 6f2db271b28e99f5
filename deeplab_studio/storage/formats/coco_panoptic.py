"""COCO panoptic: the segment PNGs (`id = R + 256·G + 256²·B`, 0 = unlabelled) and their
`segments_info`, read as semantic maps (each segment's category; unlabelled is void), and written
from semantic maps.

The PNGs are in the folder named like the JSON (`annotations/panoptic_val2017/` beside
`annotations/panoptic_val2017.json`, as the COCO download has them), else beside the JSON.
A pixel whose id no segment lists makes the image's `read_labels` raise FormatError.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from deeplab_studio.core.labels import IGNORE
from deeplab_studio.storage.formats.base import FormatError, SourceItem
from deeplab_studio.storage.formats.coco_layout import AnnotationFile, ClassList, index_images, relative_name
from deeplab_studio.storage.formats.contours import drawing_frame
from deeplab_studio.storage.images import ImageReadError, open_checked, probe_image


def ids_of(rgb: np.ndarray) -> np.ndarray:
    """Segment ids of an H×W×3 uint8 panoptic PNG."""
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def rgb_of(ids: np.ndarray) -> np.ndarray:
    """The H×W×3 uint8 colours of segment ids (below 2²⁴)."""
    ids = ids.astype(np.uint32)
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)


@dataclass
class PanopticLabels:
    """The picklable label reader of one image of a panoptic file."""

    what: str
    image: Path
    png: Path
    size: tuple[int, int]  # the image entry's (width, height)
    segments: dict[int, int]  # segment id -> class value

    def _ids(self) -> np.ndarray:
        try:
            with open_checked(self.png, out_bytes_per_pixel=3) as im:
                im.load()
                rgb = np.asarray(im.convert("RGB"))
        except ImageReadError as exc:
            raise FormatError(f"{self.what}: segment PNG {exc}") from None
        except OSError as exc:
            raise FormatError(f"{self.what}: segment PNG {self.png} cannot be decoded ({exc})") from None
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            raise FormatError(f"{self.what}: segment PNG is {rgb.shape[1]}×{rgb.shape[0]}, the image entry says "
                              f"{self.size[0]}×{self.size[1]}")
        return ids_of(rgb)

    def __call__(self) -> np.ndarray:
        try:
            frame = drawing_frame(probe_image(self.image), self.size, what=self.what)
        except ImageReadError as exc:
            raise FormatError(str(exc)) from None
        uniq, inverse = np.unique(self._ids(), return_inverse=True)
        lut = np.empty(len(uniq), np.uint8)
        for k, seg in enumerate(uniq.tolist()):
            if seg == 0:
                lut[k] = IGNORE
            elif seg in self.segments:
                lut[k] = self.segments[seg]
            else:
                raise FormatError(f"{self.what}: the segment PNG has id {seg}, which segments_info does not list")
        return frame.to_displayed(lut[inverse.reshape(-1)].reshape(self.size[1], self.size[0]))


def png_folder(ann: AnnotationFile) -> Path:
    named = ann.path.with_suffix("")
    return named if named.is_dir() else ann.path.parent


def index_panoptic(ann: AnnotationFile, doc: dict, classes: ClassList, prefix: str, rel: str,
                   problems: list[tuple[str, str]]) -> list[SourceItem]:
    """The items of one panoptic file; bad annotations and missing files go to `problems`."""
    anns = [a for a in doc.get("annotations", []) if isinstance(a, dict)]
    used = {s.get("category_id") for a in anns for s in a.get("segments_info") or [] if isinstance(s, dict)}
    values = classes.add_file(doc.get("categories"), used, rel)
    images = index_images(doc, ann, prefix, rel, problems)
    folder = png_folder(ann)
    items, seen = [], set()
    for a in anns:
        iid = a.get("image_id")
        if iid not in images or iid in seen:
            if iid not in images:
                problems.append((rel, f"{rel}: panoptic annotation for image id {iid!r}, which is missing or bad"))
            continue
        seen.add(iid)
        e = images[iid]
        name, segs = relative_name(a.get("file_name")), a.get("segments_info")
        try:
            if name is None or not isinstance(segs, list):
                raise FormatError("needs a relative 'file_name' and a 'segments_info' list")
            segments: dict[int, int] = {}
            for s in segs:
                sid, cid = (s.get("id"), s.get("category_id")) if isinstance(s, dict) else (None, None)
                if not isinstance(sid, int) or sid <= 0 or sid in segments:
                    raise FormatError(f"segment {s!r}: needs a positive, unique integer 'id'")
                if cid not in values:
                    raise FormatError(f"segment id {sid}: unknown category_id {cid!r}")
                segments[sid] = values[cid]
            if not (folder / name).is_file():
                raise FormatError(f"segment PNG {folder / name} not found")
        except FormatError as exc:
            problems.append((e.key, f"{rel}: image {e.key!r}: {exc}"))
            continue
        what = f"{rel}: image {e.key!r}"
        items.append(SourceItem(e.key, e.image, PanopticLabels(what, e.image, folder / name, e.size, segments),
                                ann.split))
    for iid, e in images.items():
        if iid not in seen:
            problems.append((e.key, f"{rel}: image {e.key!r} has no panoptic annotation"))
    return items


def panoptic_png(labels: np.ndarray) -> bytes:
    """The segment PNG of a semantic map: class value v is segment v + 1, void is 0."""
    ids = np.where(labels == IGNORE, 0, labels.astype(np.uint32) + 1)
    buf = io.BytesIO()
    Image.fromarray(rgb_of(ids), "RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()
