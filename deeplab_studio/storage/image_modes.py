"""Pixel modes to RGB `uint8`: the conversions `images.read_image` applies to each row block.

Grayscale, 1-bit and palette expand to RGB; transparency is composited over white; 16-bit is
scaled `v * 255 / 65535` (rounded); float is divided by a top value (1 for data in 0..1, else its
largest finite value: `images` finds it) and scaled by 255; CMYK goes through its ICC profile
when it has a usable one, else Pillow's plain formula. Nothing here touches Pillow's globals.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def scale_16bit(arr: np.ndarray) -> np.ndarray:
    """I;16* and I (Pillow's 16-bit grayscale): the full 16-bit range to 8 bit, rounded."""
    blk = np.clip(arr, 0, 65535).astype(np.uint32)
    return ((blk * 255 + 32767) // 65535).astype(np.uint8)


def finite(arr: np.ndarray) -> np.ndarray:
    return np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def over_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA uint8 composited over white, exactly `round((c·a + 255·(255 − a)) / 255)`, in uint16
    (`(t + (t >> 8)) >> 8` with `t = x + 128` is `(x + 127) // 255` for every x ≤ 65025)."""
    a = rgba[:, :, 3:4].astype(np.uint16)
    t = rgba[:, :, :3] * a
    t += 255 * (255 - a) + 128
    t += t >> 8
    return (t >> 8).astype(np.uint8)


def cmyk_converter(im: Image.Image) -> Callable[[Image.Image], Image.Image]:
    """CMYK→RGB through the embedded ICC profile when it works, else Pillow's plain formula."""
    icc = im.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            transform = ImageCms.buildTransform(src, ImageCms.createProfile("sRGB"), "CMYK", "RGB")
            return lambda b: ImageCms.applyTransform(b, transform)
        except Exception:  # missing littlecms or a broken profile: fall back to the plain formula
            pass
    return lambda b: b.convert("RGB")


def rgb_converter(im: Image.Image, float_top: Callable[[Image.Image], float]) -> Callable[[Image.Image], np.ndarray]:
    """A function from a row block of `im` to its RGB uint8 pixels; `float_top(im)` is asked
    (once, now) for the divisor of a float (mode F) image."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray
    if mode == "F":
        top = float_top(im)
        return lambda b: gray_to_rgb(np.clip(np.rint(finite(np.asarray(b)) / top * 255.0), 0, 255).astype(np.uint8))
    if mode.startswith("I"):
        return lambda b: gray_to_rgb(scale_16bit(np.asarray(b)))
    if mode == "CMYK":
        cmyk = cmyk_converter(im)
        return lambda b: np.asarray(cmyk(b), dtype=np.uint8)
    if mode in ALPHA_MODES or (mode == "P" and (
            "transparency" in im.info or (im.palette is not None and im.palette.mode == "RGBA"))):
        return lambda b: over_white(np.asarray(b.convert("RGBA"), dtype=np.uint8))
    return lambda b: np.asarray(b.convert("RGB"), dtype=np.uint8)
