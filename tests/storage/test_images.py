"""read_image / image_size: formats, conversions, EXIF orientation and every kind of bad input."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from deeplab_studio.storage.images import (
    DEFAULT_MAX_PIXELS, ImageReadError, apply_orientation, image_size, probe_image, read_image)

RNG = np.random.default_rng(0)


def _rgb(h=48, w=64):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext, kwargs", [(".png", {}), (".bmp", {}), (".tif", {}), (".tiff", {"compression": "tiff_lzw"}),
                                         (".webp", {"lossless": True})])
def test_lossless_formats_round_trip(tmp_path: Path, ext, kwargs) -> None:
    arr = _rgb()
    p = tmp_path / f"a{ext}"
    Image.fromarray(arr).save(p, **kwargs)
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == (48, 64, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, arr)
    assert image_size(p) == (64, 48)


def test_jpeg_reads_as_rgb(tmp_path: Path) -> None:
    arr = np.full((32, 40, 3), (200, 30, 90), np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.JPG", quality=95)
    out = read_image(tmp_path / "a.JPG")
    assert out.shape == (32, 40, 3)
    assert np.abs(out.astype(int) - arr).max() <= 4


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_like_a_viewer(tmp_path: Path, orientation: int) -> None:
    arr = _rgb(20, 30)
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    for ext in (".png", ".webp", ".tif"):
        p = tmp_path / f"o{orientation}{ext}"
        im.save(p, exif=exif.tobytes(), **({"lossless": True} if ext == ".webp" else {}))
        with Image.open(p) as ref:
            expected = np.asarray(ImageOps.exif_transpose(ref).convert("RGB"))
        out = read_image(p)
        np.testing.assert_array_equal(out, expected)
        assert image_size(p) == (out.shape[1], out.shape[0])
        assert probe_image(p).orientation == orientation
    np.testing.assert_array_equal(apply_orientation(arr, orientation), expected)


def test_gray_bilevel_palette_modes(tmp_path: Path) -> None:
    g = RNG.integers(0, 256, (16, 16), dtype=np.uint8)
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), np.repeat(g[:, :, None], 3, 2))
    Image.fromarray(g > 127).save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_image(tmp_path / "b.png")[:, :, 0], np.where(g > 127, 255, 0))
    pal = Image.fromarray(_rgb(16, 16)).quantize(8)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))


def test_transparency_composited_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :4, 3] = 255  # left half opaque red-ish
    rgba[:, 4:, 3] = 0  # right half fully transparent
    rgba[0, 0, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert tuple(out[1, 1]) == (200, 0, 0)
    assert tuple(out[1, 6]) == (255, 255, 255)
    assert tuple(out[0, 0]) == (round(200 * 128 / 255 + 255 * 127 / 255), 127, 127)
    p = Image.fromarray(np.zeros((8, 8), np.uint8), "L").convert("P")
    p.info["transparency"] = 0
    p.save(tmp_path / "t.png", transparency=0)
    assert (read_image(tmp_path / "t.png") == 255).all()


def test_16_bit_scaled_not_clipped(tmp_path: Path) -> None:
    vals = np.array([[0, 1000, 32896, 65535]], np.uint16).repeat(4, 0)
    for name in ("g16.png", "g16.tif"):
        Image.fromarray(vals).save(tmp_path / name)
        out = read_image(tmp_path / name)[:, :, 0]
        np.testing.assert_array_equal(out[0], [0, 4, 128, 255])
    tall = np.tile(np.arange(1100, dtype=np.uint16)[:, None] * 59, (1, 3))  # spans several row blocks
    Image.fromarray(tall).save(tmp_path / "tall.png")
    np.testing.assert_array_equal(read_image(tmp_path / "tall.png")[:, 0, 0],
                                  np.rint(tall[:, 0].astype(float) * 255 / 65535).astype(np.uint8))


def test_cmyk_converted(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 0, 0, 0))
    cmyk.paste((0, 255, 255, 0), (0, 0, 8, 16))  # cyan 0, magenta+yellow full = red
    for name in ("c.jpg", "c.tif"):
        cmyk.save(tmp_path / name, **({"quality": 100} if name.endswith("jpg") else {}))
        out = read_image(tmp_path / name).astype(int)
        assert np.abs(out[4, 12] - 255).max() <= 3  # white
        assert np.abs(out[4, 2] - (255, 0, 0)).max() <= 6  # red


def _png_with_ihdr(w: int, h: int) -> bytes:
    raw = zlib.compress(b"\x00" * 8)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, "JPEG", quality=90)
    files = {
        "truncated": (tmp_path / "trunc.jpg", buf.getvalue()[: len(buf.getvalue()) // 2]),
        "text": (tmp_path / "notes.png", b"this is not an image\n" * 10),
        "empty": (tmp_path / "empty.jpg", b""),
        "huge": (tmp_path / "bomb.png", _png_with_ihdr(60000, 60000)),
    }
    out = {}
    for k, (p, data) in files.items():
        p.write_bytes(data)
        out[k] = p
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "dot.png")
    out["1x1"] = tmp_path / "dot.png"
    return out


@pytest.mark.parametrize("kind, words", [("truncated", "truncated"), ("text", "not an image"),
                                         ("empty", "empty"), ("huge", "limit"), ("1x1", "1×1")])
def test_bad_inputs_give_typed_error_naming_file(tmp_path: Path, kind: str, words: str) -> None:
    good = tmp_path / "good.png"
    arr = _rgb()
    Image.fromarray(arr).save(good)
    bad = _bad_files(tmp_path)[kind]
    with pytest.raises(ImageReadError) as info:
        read_image(bad)
    assert str(bad) in str(info.value) and words in str(info.value)
    assert info.value.path == bad
    np.testing.assert_array_equal(read_image(good), arr)  # other images still open


def test_header_checks_in_image_size_and_truncation_only_on_decode(tmp_path: Path) -> None:
    bad = _bad_files(tmp_path)
    assert image_size(bad["truncated"]) == (64, 64)  # header intact: only a full decode catches it
    for kind in ("text", "empty", "huge", "1x1"):
        with pytest.raises(ImageReadError):
            image_size(bad[kind])
    with pytest.raises(ImageReadError, match="no such file"):
        image_size(tmp_path / "nope.jpg")


def test_truncation_caught_even_if_pillow_told_to_tolerate_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(_bad_files(tmp_path)["truncated"])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # global restored


def test_bomb_limit_is_ours_and_configurable(tmp_path: Path) -> None:
    old = Image.MAX_IMAGE_PIXELS
    # 15000² = 225 MP: beyond Pillow's own error threshold (~179 MP) yet under our 400 MP default
    p = tmp_path / "big.png"
    p.write_bytes(_png_with_ihdr(15000, 15000))
    assert 15000 * 15000 < DEFAULT_MAX_PIXELS
    assert image_size(p) == (15000, 15000)
    with pytest.raises(ImageReadError, match="limit of 100 MP"):
        image_size(p, max_pixels=100_000_000)
    small = tmp_path / "s.png"
    Image.fromarray(_rgb(64, 64)).save(small)
    with pytest.raises(ImageReadError, match="decompression bomb"):
        read_image(small, max_pixels=1000)
    assert read_image(small, max_pixels=None).shape == (64, 64, 3)
    assert Image.MAX_IMAGE_PIXELS == old
