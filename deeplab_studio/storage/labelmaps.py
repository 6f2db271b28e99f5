"""Label maps and edit masks on disk.

- A label map is a palette PNG (mode `P`): pixel values are class indices (255 = void), the
  palette only decides how viewers draw them. Reading one never looks at the palette.
- A colour PNG (RGB, e.g. a colourised VOC ground truth) is read back to indices by exact colour
  lookup in a given palette (default: the VOC colormap); an unknown colour is an error.
- An edit mask is a 1-bit PNG (mode `1`): True where a human painted.

Reading has the memory budget of `storage.images` (`decode_cost` with a 1-byte result, checked
from the header, default 3 GiB) and converts in row blocks; anything unusable (missing, damaged,
truncated, too big, unknown colours or modes, out of memory) is a `LabelMapError` naming the file.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from deeplab_studio.core.labels import IGNORE, IGNORE_COLOR, voc_colormap
from deeplab_studio.storage.atomic import atomic_write_bytes
from deeplab_studio.storage.images import DEFAULT_MAX_BYTES, ImageReadError, open_checked, row_blocks


class LabelMapError(ImageReadError):
    """A label-map or mask file that cannot be used (names the file and the reason)."""


_VOC_256 = voc_colormap(256)  # built once: voc_colormap is a Python loop (~1 ms)


def _full_palette(palette) -> np.ndarray:
    """A 256×3 uint8 palette from an N×3 array-like (missing entries: VOC colours, 255: ignore)."""
    pal = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    if len(pal) > 256 or pal.min(initial=0) < 0 or pal.max(initial=0) > 255:
        raise ValueError("a palette is at most 256 RGB colours with components in 0..255")
    full = _VOC_256.copy()
    full[: len(pal)] = pal
    if len(pal) < 256:
        full[IGNORE] = IGNORE_COLOR
    return full.astype(np.uint8)


class PngPalette(bytes):
    """A palette made ready for `encode_label_png` once (768 bytes: 256 RGB entries), for callers
    that write many label maps with the same palette."""

    def __new__(cls, palette) -> "PngPalette":
        return super().__new__(cls, _full_palette(palette).tobytes())


def encode_label_png(labels: np.ndarray, palette, *, text: dict[str, str] | None = None) -> bytes:
    """PNG bytes (mode P, 256-colour `palette`: an N×3 array-like or a `PngPalette`) of a uint8
    H×W label map; `text` adds tEXt chunks."""
    labels = np.asarray(labels)
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"a label map is a uint8 H×W array, not {labels.dtype} {labels.shape}")
    im = Image.frombytes("P", (labels.shape[1], labels.shape[0]), np.ascontiguousarray(labels).tobytes())
    im.putpalette(palette if isinstance(palette, PngPalette) else _full_palette(palette).tobytes())
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for k, v in text.items():
            info.add_text(k, str(v))
    buf = io.BytesIO()
    im.save(buf, format="PNG", pnginfo=info, compress_level=6)
    return buf.getvalue()


def write_label_png(path: str | Path, labels: np.ndarray, palette, *, text: dict[str, str] | None = None) -> None:
    """Write a label map as a palette PNG, atomically."""
    atomic_write_bytes(path, encode_label_png(labels, palette, text=text))


def _open_label_file(path: Path, max_bytes: int | None) -> Image.Image:
    """The header, with our bomb limit and the memory budget for a 1-byte-per-pixel result
    (Pillow's lock is held only for the header, so a label load never waits behind an image decode)."""
    try:
        return open_checked(path, out_bytes_per_pixel=1, max_bytes=max_bytes)
    except ImageReadError as exc:
        raise LabelMapError(path, exc.reason) from None


def _load(im: Image.Image, path: Path) -> None:
    try:
        im.load()
    except Exception as exc:  # truncated data, junk, a bomb in a frame, MemoryError
        raise LabelMapError(path, f"not a readable PNG label map ({type(exc).__name__}: {exc})") from None


def _fill(im: Image.Image, convert: Callable[[int, Image.Image], np.ndarray], dtype: type) -> np.ndarray:
    """An H×W array of `dtype` filled row block by row block with `convert(first_row, block)`."""
    out = np.empty((im.size[1], im.size[0]), dtype)
    for y, block in row_blocks(im):
        out[y:y + block.size[1]] = convert(y, block)
    return out


class _ColourLookup:
    """Exact colour → index lookup in a palette (N×3; first match wins, except that index 255 owns
    its colour when the palette has 256 entries), block by block, counting unknown colours."""

    def __init__(self, palette) -> None:
        pal = np.asarray(palette, dtype=np.uint32).reshape(-1, 3)
        keys = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
        table: dict[int, int] = {}
        if len(pal) > IGNORE:
            table[int(keys[IGNORE])] = IGNORE
        for i, k in enumerate(keys.tolist()):
            table.setdefault(k, i)
        table = table or {0xFFFFFFFF: 0}  # an empty palette: a key no 24-bit colour matches
        self.keys = np.array(sorted(table), dtype=np.uint32)
        self.values = np.array([table[k] for k in sorted(table)], dtype=np.int64).astype(np.uint8)
        self.unknown = 0
        self.example: tuple[int, int, int] | None = None  # (colour, x, y): smallest unknown, first seen
        self._seen: np.ndarray | None = None  # one flag per 24-bit colour, made at the first unknown

    def labels(self, rgb: np.ndarray, y0: int = 0) -> np.ndarray:
        """Indices of an H×W×3 block whose first row is row `y0` of the image."""
        packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
        pos = np.searchsorted(self.keys, packed)
        np.minimum(pos, len(self.keys) - 1, out=pos)
        known = self.keys[pos] == packed
        if not known.all():
            self._note_unknown(packed, known, y0)
        return self.values[pos]

    def _note_unknown(self, packed: np.ndarray, known: np.ndarray, y0: int) -> None:
        bad = packed[~known]
        self.unknown += bad.size
        if self._seen is None:
            self._seen = np.zeros(1 << 24, dtype=bool)
        self._seen[bad] = True
        colour = int(bad.min())
        if self.example is None or colour < self.example[0]:
            y, x = (int(v[0]) for v in np.nonzero(packed == colour))
            self.example = (colour, x, y + y0)

    def raise_if_unknown(self, path: str | Path) -> None:
        if self.unknown and self.example is not None and self._seen is not None:
            c, x, y = self.example
            raise LabelMapError(
                path, f"{self.unknown} pixels have colours outside the palette, e.g. ({c >> 16},{(c >> 8) & 255},"
                f"{c & 255}) at x={x}, y={y} ({int(self._seen.sum())} unknown colours)")


def colors_to_labels(rgb: np.ndarray, palette, *, path: str | Path = "<array>") -> np.ndarray:
    """Indices of an RGB H×W×3 image by exact colour lookup in `palette` (N×3; first match wins,
    except that index 255 owns its colour when the palette has 256 entries)."""
    lookup = _ColourLookup(palette)
    out = lookup.labels(np.asarray(rgb))
    lookup.raise_if_unknown(path)
    return out


def _integer_labels(im: Image.Image, path: Path) -> np.ndarray:
    """Labels from a 16/32-bit grayscale file; values outside 0..255 are refused."""
    lo = hi = 0

    def convert(_y: int, block: Image.Image) -> np.ndarray:
        nonlocal lo, hi
        arr = np.asarray(block)
        lo, hi = min(lo, int(arr.min(initial=0))), max(hi, int(arr.max(initial=0)))
        return arr.astype(np.uint8)

    out = _fill(im, convert, np.uint8)
    if lo < 0 or hi > 255:
        raise LabelMapError(path, f"label values {lo}..{hi} do not fit in 0..255")
    return out


def _labels_of(im: Image.Image, path: Path, palette) -> np.ndarray:
    """The label map of a decoded file, converted in row blocks."""
    mode = im.mode
    if mode in ("P", "L", "1"):  # values as stored (mode 1: 0 and 1)
        return _fill(im, lambda _y, b: np.asarray(b, dtype=np.uint8), np.uint8)
    if mode.startswith("I"):
        return _integer_labels(im, path)
    lookup = _ColourLookup(voc_colormap(256) if palette is None else palette)
    out = _fill(im, lambda y, b: lookup.labels(np.asarray(b.convert("RGB")), y), np.uint8)
    lookup.raise_if_unknown(path)
    return out


def _converted(path: Path, convert: Callable[[], np.ndarray]) -> np.ndarray:
    """`convert()`, with anything it raises other than LabelMapError turned into one."""
    try:
        return convert()
    except LabelMapError:
        raise
    except MemoryError:
        raise LabelMapError(path, "not enough memory to convert the label map") from None
    except Exception as exc:
        raise LabelMapError(path, f"cannot convert the label map ({type(exc).__name__}: {exc})") from None


def read_label_png_with_text(path: str | Path, palette=None, *, max_bytes: int | None = DEFAULT_MAX_BYTES
                             ) -> tuple[np.ndarray, dict[str, str]]:
    """`read_label_png` plus the PNG's text chunks."""
    path = Path(path)
    with _open_label_file(path, max_bytes) as im:
        if not (im.mode in ("P", "L", "1", "RGB", "RGBA") or im.mode.startswith("I")):
            raise LabelMapError(path, f"unsupported label-map pixel mode {im.mode}")
        _load(im, path)
        text = {str(k): str(v) for k, v in getattr(im, "text", {}).items()}
        return _converted(path, lambda: _labels_of(im, path, palette)), text


REV_TEXT_KEY = "deeplab-studio-label-rev"  # the label revision a project's label map was written under


def read_label_png_at_rev(path: str | Path, remaps) -> np.ndarray:
    """A project label map brought to the current revision: the LUTs of `remaps` (one per
    revision, see `storage.project`) that it was written before are applied."""
    labels, text = read_label_png_with_text(path)
    try:
        rev = int(text.get(REV_TEXT_KEY, "0"))
    except ValueError:
        rev = 0
    for lut in remaps[max(rev, 0):]:
        labels = lut[labels]
    return labels


def label_png_palette(path: str | Path) -> np.ndarray | None:
    """The colours (N×3 uint8) of a palette label map, read from its header; None for other modes."""
    path = Path(path)
    with _open_label_file(path, DEFAULT_MAX_BYTES) as im:
        colours = im.getpalette() if im.mode == "P" else None
    return None if not colours else np.asarray(colours, np.uint8).reshape(-1, 3)


def read_label_png(path: str | Path, palette=None, *, max_bytes: int | None = DEFAULT_MAX_BYTES) -> np.ndarray:
    """A uint8 H×W label map from a palette/grayscale PNG (values as stored) or a colour PNG
    (colours looked up in `palette`, default the VOC colormap; unknown colours raise).
    Raises LabelMapError for anything unusable, including a file whose decoding needs more than `max_bytes`."""
    return read_label_png_with_text(path, palette, max_bytes=max_bytes)[0]


def encode_mask_png(mask: np.ndarray) -> bytes:
    """1-bit PNG bytes of a boolean H×W mask."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask is an H×W array, not {mask.shape}")
    im = Image.fromarray(np.ascontiguousarray(mask.astype(bool)))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_mask_png(path: str | Path, mask: np.ndarray) -> None:
    """Write a boolean mask as a 1-bit PNG, atomically."""
    atomic_write_bytes(path, encode_mask_png(mask))


def read_mask_png(path: str | Path, *, max_bytes: int | None = DEFAULT_MAX_BYTES) -> np.ndarray:
    """A boolean H×W mask from a 1-bit (or any grayscale: nonzero = True) PNG; LabelMapError if unusable."""
    path = Path(path)
    with _open_label_file(path, max_bytes) as im:
        if im.mode not in ("1", "L", "P"):
            raise LabelMapError(path, f"an edit mask must be 1-bit or grayscale, not mode {im.mode}")
        _load(im, path)
        return _converted(path, lambda: _fill(im, lambda _y, b: np.asarray(b) != 0, bool))
