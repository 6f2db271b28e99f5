"""Safe image reading: any common file becomes an RGB `uint8` H×W×3 array, or one typed error.

Conversions (documented choices; the per-mode code is `image_modes`):

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
says elsewhere in the process. A JPEG too small to hold its declared size (under one bit per 8×8
block, which no complete Huffman-coded JPEG can be; a flat arithmetic-coded one could, and is
refused too) is refused from the header: libjpeg would otherwise fill the missing blocks with grey
and report no error.

Memory budget: the peak memory of a read is estimated from the header by `decode_cost` and the
file is refused before decoding when the estimate is above `max_bytes` (default 3 GiB). The
estimate is Pillow's decoded frame (1 byte per pixel for 1-bit, gray and palette modes, 2 for
16-bit gray, 4 otherwise) plus the larger of the result (3 B/px) and the decoder's own buffers
(JPEG: its DCT coefficients, 2 bytes per sample, 3 B/px at 4:2:0, up to 8 for CMYK; WebP:
libwebp's canvases, 12 B/px; TIFF: one strip or tile, and a transposed copy when the file
carries an orientation; RLE BMP: 3 B/px), plus `WORK_BYTES` (64 MiB) for row blocks. So a PNG,
BMP or 4:2:0 JPEG needs at most 7 bytes per declared pixel, a WebP 16, and nothing more than
3 GiB. Conversion to RGB (palette, alpha, 16-bit, float, CMYK) and the EXIF orientation are done
in row blocks of half a megapixel written straight into the result, never on whole-image copies.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from deeplab_studio.storage.image_cost import (  # noqa: F401  (WORK_BYTES re-exported)
    WORK_BYTES, decode_cost, jpeg_min_bytes)
from deeplab_studio.storage.image_modes import finite, rgb_converter

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_MAX_PIXELS = 400_000_000
DEFAULT_MAX_BYTES = 3 << 30  # 3 GiB: the most one read may need (see "Memory budget" above)
DEFAULT_MIN_SIDE = 2
_BLOCK_PIXELS = 1 << 19  # pixels per row block of a conversion
_ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "MPO")  # MPO: multi-picture JPEG from cameras
_INVERSE_ORIENTATION = {6: 8, 8: 6}  # the others undo themselves

# Pillow's bomb limit and truncation flag are process globals; we set them while a header is read
# and while a file is decoded, so those steps are serialised by this lock (conversions are not).
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


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


# ---------------------------------------------------------------------------------------------
# opening and decoding


@dataclass(frozen=True)
class _Limits:
    """What one read accepts: pixel count, side, memory budget, result bytes per pixel, formats."""

    max_pixels: int | None
    min_side: int
    max_bytes: int | None
    out_bpp: int = 3
    formats: tuple[str, ...] | None = _ALLOWED_FORMATS


def _refuse(im: Image.Image, path: Path, reason: str) -> NoReturn:
    im.close()
    raise ImageReadError(path, reason)


def _check_header(im: Image.Image, path: Path, file_size: int, limits: _Limits) -> None:
    """Every check the header allows: format, pixel count, side, JPEG size, memory budget."""
    if limits.formats is not None and im.format not in limits.formats:
        _refuse(im, path, f"unsupported image format {im.format} (use JPEG, PNG, BMP, TIFF or WebP)")
    w, h = im.size
    if limits.max_pixels is not None and w * h > limits.max_pixels:
        _refuse(im, path, f"image is {w}×{h} = {w * h / 1e6:.1f} MP, above the limit of "
                f"{limits.max_pixels / 1e6:.0f} MP (possible decompression bomb)")
    if min(w, h) < limits.min_side:
        _refuse(im, path, f"image is only {w}×{h} pixels (at least {limits.min_side} px per side needed)")
    if im.format in ("JPEG", "MPO") and file_size < (least := jpeg_min_bytes(im)):
        _refuse(im, path, f"truncated or damaged JPEG: {w}×{h} pixels need at least {least} bytes "
                f"of image data, the file has {file_size}")
    if limits.max_bytes is not None and (need := decode_cost(im, limits.out_bpp)) > limits.max_bytes:
        _refuse(im, path, f"decoding this {w}×{h} {im.format} ({im.mode}) image needs about {_gib(need)} "
                f"of memory, above the budget of {_gib(limits.max_bytes)}")


def _open_checked(path: Path, limits: _Limits) -> Image.Image:
    """Open the header (caller holds `_PIL_LOCK`), with every header check done; raises ImageReadError."""
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
    try:
        _check_header(im, path, st.st_size, limits)
    except ImageReadError:
        raise
    except Exception as exc:  # odd header values (TIFF tags of the wrong type...)
        im.close()
        raise ImageReadError(path, f"corrupt image header ({type(exc).__name__}: {exc})") from None
    return im


@contextmanager
def _pillow_globals(max_pixels: int | None) -> Iterator[None]:
    """Hold `_PIL_LOCK` with Pillow's bomb limit at `max_pixels` and truncated files refused."""
    with _PIL_LOCK:
        old_max, old_trunc = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = max_pixels, False
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old_max, old_trunc


def _decode(im: Image.Image, path: Path) -> None:
    """`im.load()` with every failure turned into ImageReadError (caller holds `_pillow_globals`)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(path, f"decompression bomb refused: {exc}") from None
    except MemoryError:
        raise ImageReadError(path, "not enough memory to decode the image") from None
    except OSError as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason:
            reason = f"truncated or incomplete file ({reason})"
        raise ImageReadError(path, f"cannot decode the image: {reason}") from None
    except Exception as exc:
        raise ImageReadError(path, f"corrupt image data ({type(exc).__name__}: {exc})") from None


def open_checked(path: str | Path, *, out_bytes_per_pixel: int, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 max_bytes: int | None = DEFAULT_MAX_BYTES, min_side: int = 0,
                 formats: tuple[str, ...] | None = None) -> Image.Image:
    """Open the header of `path` with every header check done, including the memory budget
    (`decode_cost` with `out_bytes_per_pixel` for the caller's result); nothing is decoded.

    `_PIL_LOCK` is held only while the header is read: the caller decodes (`load()`) outside it
    and closes the image. `formats=None` accepts any format Pillow reads. Raises ImageReadError.
    """
    with _pillow_globals(None):  # our own check in _check_header gives the clearer message
        return _open_checked(Path(path), _Limits(max_pixels, min_side, max_bytes, out_bytes_per_pixel, formats))


def _open_decoded(path: Path, limits: _Limits) -> Image.Image:
    """Open and fully decode `path` under `_PIL_LOCK`, truncated files refused; raises ImageReadError."""
    with _pillow_globals(None):
        im = _open_checked(path, limits)
        try:
            Image.MAX_IMAGE_PIXELS = limits.max_pixels  # Pillow's checks during decoding (frames, tiles)
            _decode(im, path)
        except BaseException:
            im.close()
            raise
    return im


def probe_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                min_side: int = DEFAULT_MIN_SIDE, max_bytes: int | None = DEFAULT_MAX_BYTES) -> ImageInfo:
    """Format, mode, stored size and EXIF orientation from the header only (every header check done)."""
    path = Path(path)
    with _pillow_globals(None):
        im = _open_checked(path, _Limits(max_pixels, min_side, max_bytes))
    with im:
        raw = im.size
        if im.format == "TIFF":  # Pillow reports TIFF sizes already oriented: take the stored one
            tags = getattr(im, "tag_v2", {})
            raw = (int(tags.get(256, raw[0])), int(tags.get(257, raw[1])))
        return ImageInfo(im.format, im.mode, raw, _orientation(im))


def image_size(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) as `read_image` will return it (EXIF orientation applied), from the header."""
    return probe_image(path, max_pixels=max_pixels).size


# ---------------------------------------------------------------------------------------------
# conversion to RGB, in row blocks


def row_blocks(im: Image.Image) -> Iterator[tuple[int, Image.Image]]:
    """(first row, crop) for consecutive full-width row blocks of about `_BLOCK_PIXELS` pixels.

    The image passed our own size checks already, but Pillow 12 re-checks its global bomb limit
    in `crop`: where a host program lowered that global below a block, the crop is taken with it
    lifted, under `_PIL_LOCK`. Otherwise no lock is taken, so a label map's conversion never waits
    behind another thread's image decode.
    """
    w, h = im.size
    step = max(1, _BLOCK_PIXELS // max(w, 1))
    for y in range(0, h, step):
        box = (0, y, w, min(h, y + step))
        yield y, _crop(im, box, w * (box[3] - y))


def _crop(im: Image.Image, box: tuple[int, int, int, int], pixels: int) -> Image.Image:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None or pixels <= limit:
        try:
            return im.crop(box)
        except Image.DecompressionBombError:  # another thread changed the global meanwhile
            pass
    with _pillow_globals(None):
        return im.crop(box)


def _float_top(im: Image.Image) -> float:
    """The divisor for a float image: 1 for data in 0..1, else its largest finite value."""
    top = max((float(finite(np.asarray(b)).max(initial=0.0)) for _, b in row_blocks(im)), default=0.0)
    return 1.0 if top <= 1.0 else top


def _oriented_result(raw_hw: tuple[int, int], channels: tuple[int, ...], dtype: type, orientation: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(result array in viewer orientation, writable view of it in stored orientation)."""
    h, w = raw_hw
    shape = (w, h) if orientation in (5, 6, 7, 8) else (h, w)
    out = np.empty(shape + channels, dtype)
    return out, apply_orientation(out, _INVERSE_ORIENTATION.get(orientation, orientation))


def _to_rgb_oriented(im: Image.Image, orientation: int) -> np.ndarray:
    """The decoded frame as C-contiguous RGB uint8, orientation applied, converted block by block."""
    convert = rgb_converter(im, _float_top)
    out, raw = _oriented_result((im.size[1], im.size[0]), (3,), np.uint8, orientation)
    for y, block in row_blocks(im):
        raw[y:y + block.size[1]] = convert(block)
    return out


def read_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               min_side: int = DEFAULT_MIN_SIDE, max_bytes: int | None = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Decode `path` fully into a C-contiguous RGB `uint8` H×W×3 array (see the module docstring).

    Raises `ImageReadError` naming the file and the reason for anything unusable, including an
    image whose `decode_cost` is above `max_bytes`.
    """
    path = Path(path)
    with _open_decoded(path, _Limits(max_pixels, min_side, max_bytes)) as im:
        try:
            return _to_rgb_oriented(im, _orientation(im))
        except MemoryError:
            raise ImageReadError(path, "not enough memory to convert the image") from None


def open_limited(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """`Image.open` (header only) under our bomb limit instead of Pillow's process-global one.

    The lock is held only while the header is read; the caller decodes (`load()`) outside it.
    `open_checked` does the same with every header check and the memory budget. Raises what
    `Image.open` raises, or `DecompressionBombError` / `DecompressionBombWarning` above `max_pixels`.
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
    """Apply an EXIF orientation (1..8) to an H×W or H×W×C array, as a viewer would show it (a view)."""
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
