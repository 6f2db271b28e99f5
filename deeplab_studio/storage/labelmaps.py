"""Label maps and edit masks on disk.

- A label map is a palette PNG (mode `P`): pixel values are class indices (255 = void), the
  palette only decides how viewers draw them. Reading one never looks at the palette.
- A colour PNG (RGB, e.g. a colourised VOC ground truth) is read back to indices by exact colour
  lookup in a given palette (default: the VOC colormap); an unknown colour is an error.
- An edit mask is a 1-bit PNG (mode `1`): True where a human painted.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from deeplab_studio.core.labels import IGNORE, IGNORE_COLOR, voc_colormap
from deeplab_studio.storage.atomic import atomic_write_bytes
from deeplab_studio.storage.images import ImageReadError, open_limited


class LabelMapError(ImageReadError):
    """A label-map or mask file that cannot be used (names the file and the reason)."""


def _full_palette(palette) -> np.ndarray:
    """A 256×3 uint8 palette from an N×3 array-like (missing entries: VOC colours, 255: ignore)."""
    pal = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    if len(pal) > 256 or pal.min(initial=0) < 0 or pal.max(initial=0) > 255:
        raise ValueError("a palette is at most 256 RGB colours with components in 0..255")
    full = voc_colormap(256)
    full[: len(pal)] = pal
    if len(pal) < 256:
        full[IGNORE] = IGNORE_COLOR
    return full.astype(np.uint8)


def encode_label_png(labels: np.ndarray, palette, *, text: dict[str, str] | None = None) -> bytes:
    """PNG bytes (mode P, 256-colour `palette`) of a uint8 H×W label map; `text` adds tEXt chunks."""
    labels = np.asarray(labels)
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"a label map is a uint8 H×W array, not {labels.dtype} {labels.shape}")
    im = Image.frombytes("P", (labels.shape[1], labels.shape[0]), np.ascontiguousarray(labels).tobytes())
    im.putpalette(_full_palette(palette).tobytes())
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


def _open_png(path: Path) -> Image.Image:
    im = None
    try:
        im = open_limited(path)  # our 400 MP limit, not Pillow's global ~179 MP one
        im.load()
    except FileNotFoundError:
        raise LabelMapError(path, "no such file") from None
    except Exception as exc:  # UnidentifiedImageError, truncated data, junk, a bomb
        if im is not None:
            im.close()
        raise LabelMapError(path, f"not a readable PNG label map ({type(exc).__name__}: {exc})") from None
    return im


def colors_to_labels(rgb: np.ndarray, palette, *, path: str | Path = "<array>") -> np.ndarray:
    """Indices of an RGB H×W×3 image by exact colour lookup in `palette` (N×3; first match wins,
    except that index 255 owns its colour when the palette has 256 entries)."""
    pal = np.asarray(palette, dtype=np.uint32).reshape(-1, 3)
    keys = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    table: dict[int, int] = {}
    if len(pal) > IGNORE:
        table[int(keys[IGNORE])] = IGNORE
    for i, k in enumerate(keys.tolist()):
        table.setdefault(k, i)
    rgb = np.asarray(rgb)
    packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    uniq, inverse = np.unique(packed.ravel(), return_inverse=True)
    mapped = np.array([table.get(int(k), -1) for k in uniq], dtype=np.int32)
    if (mapped < 0).any():
        bad = uniq[mapped < 0]
        n_bad = int(np.isin(packed, bad).sum())
        y, x = (int(v[0]) for v in np.nonzero(packed == bad[0]))
        c = int(bad[0])
        raise LabelMapError(
            path, f"{n_bad} pixels have colours outside the palette, e.g. ({c >> 16},{(c >> 8) & 255},{c & 255}) "
            f"at x={x}, y={y} ({len(bad)} unknown colours)")
    return mapped[inverse].reshape(packed.shape).astype(np.uint8)


def read_label_png_with_text(path: str | Path, palette=None) -> tuple[np.ndarray, dict[str, str]]:
    """`read_label_png` plus the PNG's text chunks."""
    path = Path(path)
    im = _open_png(path)
    with im:
        text = {str(k): str(v) for k, v in getattr(im, "text", {}).items()}
        mode = im.mode
        if mode in ("P", "L"):
            return np.array(im, dtype=np.uint8), text
        if mode == "1":
            return np.array(im, dtype=np.uint8), text
        if mode.startswith("I"):
            arr = np.asarray(im)
            if arr.min(initial=0) < 0 or arr.max(initial=0) > 255:
                raise LabelMapError(path, f"label values up to {int(arr.max())} do not fit in 0..255")
            return arr.astype(np.uint8), text
        if mode in ("RGB", "RGBA"):
            rgb = np.asarray(im.convert("RGB"))
            pal = voc_colormap(256) if palette is None else palette
            return colors_to_labels(rgb, pal, path=path), text
    raise LabelMapError(path, f"unsupported label-map pixel mode {mode}")


def read_label_png(path: str | Path, palette=None) -> np.ndarray:
    """A uint8 H×W label map from a palette/grayscale PNG (values as stored) or a colour PNG
    (colours looked up in `palette`, default the VOC colormap; unknown colours raise)."""
    return read_label_png_with_text(path, palette)[0]


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


def read_mask_png(path: str | Path) -> np.ndarray:
    """A boolean H×W mask from a 1-bit (or any grayscale: nonzero = True) PNG."""
    path = Path(path)
    im = _open_png(path)
    with im:
        if im.mode == "1":
            return np.array(im, dtype=bool)
        if im.mode in ("L", "P"):
            return np.array(im) != 0
    raise LabelMapError(path, f"an edit mask must be 1-bit or grayscale, not mode {im.mode}")
