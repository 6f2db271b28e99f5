"""Safe image reading: any common file becomes an RGB `uint8` H×W×3 array, or one typed error.

Conversions (documented choices):

- EXIF orientation is applied, so arrays (and label maps) are in the orientation a viewer shows.
- Grayscale, 1-bit and palette images are expanded to RGB.
- Transparency (RGBA, LA, palette with a transparent colour) is composited over **white**,
  which is what most viewers show; fully opaque images are unchanged by this.
- 16-bit images are scaled to 8 bit (`v * 255 / 65535`, rounded), never clipped; float images
  in 0..1 are scaled by 255, other float ranges by their maximum.
- CMYK is converted through its embedded ICC profile when it has one (Pillow's `ImageCms`),
  else with Pillow's plain CMYK→RGB formula.

Safety: a decompression-bomb limit (`max_pixels`, default 400 MP) checked from the header before
decoding, and Pillow's own bomb checks turned into our error; images smaller than `min_side`
pixels on a side are refused (a 1×1 "image" is a tracking pixel, not something to annotate);
the whole file is decoded, so truncated files are caught, whatever `ImageFile.LOAD_TRUNCATED_IMAGES`
says elsewhere in the process.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_MAX_PIXELS = 400_000_000
DEFAULT_MIN_SIDE = 2
_BLOCK_ROWS = 512
_ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "MPO")  # MPO: multi-picture JPEG from cameras

# Pillow's bomb limit and truncation flag are process globals; we set them for the duration of a
# read, so reads are serialised by this lock (decoding an image takes milliseconds).
_PIL_LOCK = threading.RLock()


class ImageReadError(Exception):
    """An image file that cannot be used; `str()` names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: container format, pixel mode, stored size, EXIF orientation."""

    format: str
    mode: str
    raw_size: tuple[int, int]  # (w, h) as stored
    orientation: int  # EXIF orientation 1..8 (1 = upright / none)

    @property
    def size(self) -> tuple[int, int]:
        """(w, h) after the EXIF orientation is applied: the size `read_image` returns."""
        w, h = self.raw_size
        return (h, w) if self.orientation in (5, 6, 7, 8) else (w, h)


def is_image_file(path: str | Path) -> bool:
    """True when the name has one of `IMAGE_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def _orientation(im: Image.Image) -> int:
    """EXIF orientation from the header only (never decodes pixel data)."""
    try:
        if im.format == "PNG":
            raw = im.info.get("exif")  # PngImageFile.getexif() would decode the image
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = im.getexif()
        value = int(exif.get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block is not worth refusing the image for
        return 1
    return value if 1 <= value <= 8 else 1


def _open_checked(path: Path, max_pixels: int | None, min_side: int) -> Image.Image:
    """Open the header (caller holds `_PIL_LOCK`), with every size check done; raises ImageReadError."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot access the file ({exc.strerror or exc})") from None
    if not path.is_file():
        raise ImageReadError(path, "not a regular file")
    if st.st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image file (unrecognised content)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(path, f"decompression bomb refused: {exc}") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot open as an image ({exc})") from None
    except Exception as exc:  # plugins raise assorted errors (SyntaxError, ValueError...) on junk
        raise ImageReadError(path, f"corrupt image header ({type(exc).__name__}: {exc})") from None
    if im.format not in _ALLOWED_FORMATS:
        im.close()
        raise ImageReadError(path, f"unsupported image format {im.format} (use JPEG, PNG, BMP, TIFF or WebP)")
    w, h = im.size
    if max_pixels is not None and w * h > max_pixels:
        im.close()
        raise ImageReadError(
            path, f"image is {w}×{h} = {w * h / 1e6:.1f} MP, above the limit of {max_pixels / 1e6:.0f} MP "
            "(possible decompression bomb)")
    if min(w, h) < min_side:
        im.close()
        raise ImageReadError(path, f"image is only {w}×{h} pixels (at least {min_side} px per side needed)")
    return im


def probe_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                min_side: int = DEFAULT_MIN_SIDE) -> ImageInfo:
    """Format, mode, stored size and EXIF orientation from the header only."""
    path = Path(path)
    with _PIL_LOCK:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # our own check in _open_checked gives the clearer message
        try:
            im = _open_checked(path, max_pixels, min_side)
        finally:
            Image.MAX_IMAGE_PIXELS = old
    with im:
        raw = im.size
        if im.format == "TIFF":  # Pillow reports TIFF sizes already oriented: take the stored one
            tags = getattr(im, "tag_v2", {})
            raw = (int(tags.get(256, raw[0])), int(tags.get(257, raw[1])))
        return ImageInfo(im.format, im.mode, raw, _orientation(im))


def image_size(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) as `read_image` will return it (EXIF orientation applied), from the header."""
    return probe_image(path, max_pixels=max_pixels).size


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    if mode == "F":
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = 1.0 if arr.max(initial=0.0) <= 1.0 else float(arr.max())
        return np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
    # I;16* and I (Pillow stores 16-bit grayscale PNG/TIFF as one of these): full 16-bit range,
    # in row blocks so a 400 MP image needs no multi-GB temporaries
    out = np.empty(arr.shape, np.uint8)
    for y in range(0, arr.shape[0], _BLOCK_ROWS):
        blk = np.clip(arr[y:y + _BLOCK_ROWS].astype(np.int64), 0, 65535)
        out[y:y + _BLOCK_ROWS] = (blk * 255 + 32767) // 65535
    return out


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA uint8 composited over white, rounded, in integer row blocks."""
    out = np.empty(rgba.shape[:2] + (3,), np.uint8)
    for y in range(0, rgba.shape[0], _BLOCK_ROWS):
        blk = rgba[y:y + _BLOCK_ROWS].astype(np.uint32)
        a = blk[:, :, 3:4]
        out[y:y + _BLOCK_ROWS] = (blk[:, :, :3] * a + 255 * (255 - a) + 127) // 255
    return out


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    icc = im.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:  # missing littlecms or a broken profile: fall back to the plain formula
            pass
    return im.convert("RGB")


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode.startswith("I") or mode == "F":
        gray = _scale_to_uint8(np.asarray(im), mode)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "CMYK":
        return np.asarray(_cmyk_to_rgb(im), dtype=np.uint8)
    if mode == "P" and ("transparency" in im.info or im.palette and im.palette.mode == "RGBA"):
        im = im.convert("RGBA")
    elif mode == "P":
        im = im.convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _over_white(np.asarray(im.convert("RGBA"), dtype=np.uint8))
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               min_side: int = DEFAULT_MIN_SIDE) -> np.ndarray:
    """Decode `path` fully into a C-contiguous RGB `uint8` H×W×3 array (see the module docstring).

    Raises `ImageReadError` naming the file and the reason for anything unusable.
    """
    path = Path(path)
    with _PIL_LOCK:
        old_max, old_trunc = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False
        try:
            im = _open_checked(path, max_pixels, min_side)
            Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's checks during decoding (frames, tiles)
            with im:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("error", Image.DecompressionBombWarning)
                        im.load()
                except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                    raise ImageReadError(path, f"decompression bomb refused: {exc}") from None
                except OSError as exc:
                    reason = str(exc) or type(exc).__name__
                    if "truncated" in reason:
                        reason = f"truncated or incomplete file ({reason})"
                    raise ImageReadError(path, f"cannot decode the image: {reason}") from None
                except Exception as exc:
                    raise ImageReadError(path, f"corrupt image data ({type(exc).__name__}: {exc})") from None
                orientation = _orientation(im)
                arr = _to_rgb_array(im)
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old_max, old_trunc
    return np.ascontiguousarray(apply_orientation(arr, orientation))


def open_limited(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """`Image.open` (header only) under our bomb limit instead of Pillow's process-global one.

    Used for label maps and masks: a label map of a 200 MP image must open although Pillow's own
    limit (~179 MP) refuses it. The lock is held only while the header is read; the caller
    decodes (`load()`) outside it. Raises what `Image.open` raises, or `DecompressionBombError` /
    `DecompressionBombWarning` above `max_pixels`.
    """
    with _PIL_LOCK:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = old


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an H×W or H×W×C array, as a viewer would show it."""
    if orientation not in range(2, 9):
        return arr
    # numpy equivalents of the PIL transposes (axis 0 = y, axis 1 = x)
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:  # rotate 90° clockwise
        return np.rot90(arr, k=-1)
    if orientation == 7:
        return np.rot90(arr, k=2).swapaxes(0, 1)
    return np.rot90(arr, k=1)  # 8: rotate 90° counter-clockwise
