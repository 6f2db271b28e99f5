"""The memory a read will need, estimated from an image's header alone (see `images`' docstring,
"Memory budget"): Pillow's decoded frame, the decoder's own buffers (JPEG coefficients, libwebp
canvases, a TIFF strip or tile), the result, and `WORK_BYTES` for row blocks."""

from __future__ import annotations

import math
from collections.abc import Mapping

from PIL import Image

WORK_BYTES = 64 << 20  # row blocks, decoder state and small buffers, beside the per-pixel costs


def frame_bytes_per_pixel(mode: str) -> int:
    """Bytes per pixel of a decoded Pillow frame in `mode` (Pillow pads RGB to 4)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _tag_int(tags: Mapping[int, object], key: int, default: int) -> int:
    """A TIFF tag as one int (the largest, for per-strip tuples); `default` when absent or odd."""
    value = tags.get(key, default)
    if isinstance(value, tuple):
        value = max(value, default=default)
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return default


def _tiff_buffer_bytes(im: Image.Image) -> int:
    """libtiff's buffers: one decoded strip or tile (at least RGBA), its compressed bytes, and
    the transposed copy Pillow makes of the whole frame when the file has an orientation."""
    tags = getattr(im, "tag_v2", {})
    w, h = _tag_int(tags, 256, im.size[0]), _tag_int(tags, 257, im.size[1])
    bits = tags.get(258, (8,))
    samples = max(_tag_int(tags, 277, 1), len(bits) if isinstance(bits, tuple) else 1)
    bits_per_px = _tag_int(tags, 258, 8) * samples  # the widest sample, for every sample
    if 322 in tags:  # tiled
        bw, bh, packed = _tag_int(tags, 322, w), _tag_int(tags, 323, h), _tag_int(tags, 325, 0)
    else:
        bw, bh, packed = w, min(h, _tag_int(tags, 278, h) or h), _tag_int(tags, 279, 0)
    block = bh * max(math.ceil(bw * bits_per_px / 8), 4 * bw) + packed
    turned = w * h * frame_bytes_per_pixel(im.mode) if _tag_int(tags, 0x0112, 1) in range(2, 9) else 0
    return block + turned


def _jpeg_block_counts(im: Image.Image) -> list[int]:
    """8×8 blocks of each component of a JPEG, from its SOF sampling factors."""
    w, h = im.size
    layers = getattr(im, "layer", None) or [("", 1, 1, 0)]
    hmax = max(max(s[1] for s in layers), 1)
    vmax = max(max(s[2] for s in layers), 1)
    return [math.ceil(math.ceil(w * s[1] / hmax) / 8) * math.ceil(math.ceil(h * s[2] / vmax) / 8)
            for s in layers]


def jpeg_min_bytes(im: Image.Image) -> int:
    """The fewest bytes a complete JPEG of this size can have: each 8×8 block of its largest
    component needs at least one entropy-coded bit (a Huffman code is never shorter)."""
    return max(_jpeg_block_counts(im)) // 8


def _decoder_bytes(im: Image.Image) -> tuple[int, int]:
    """(bytes the decoder holds while decoding, bytes it still holds afterwards), beyond the frame."""
    px = im.size[0] * im.size[1]
    if im.format in ("JPEG", "MPO"):  # every coefficient, buffered for progressive or multi-scan files
        return 128 * sum(_jpeg_block_counts(im)), 0
    if im.format == "WEBP":  # two RGBA canvases in libwebp (kept while the file is open) + a copy
        return 12 * px, 8 * px
    if im.format == "TIFF":
        return _tiff_buffer_bytes(im), 0
    if im.format == "BMP" and im.info.get("compression") in (1, 2):  # RLE, expanded in Python
        return 3 * px, 0
    return 0, 0


def decode_cost(im: Image.Image, out_bytes_per_pixel: int = 3) -> int:
    """Peak bytes reading `im` (an opened, not yet decoded file) into a result of
    `out_bytes_per_pixel` needs: the frame, the larger of decoder buffers and result, `WORK_BYTES`."""
    px = im.size[0] * im.size[1]
    during, after = _decoder_bytes(im)
    return px * frame_bytes_per_pixel(im.mode) + max(during, after + px * out_bytes_per_pixel) + WORK_BYTES
