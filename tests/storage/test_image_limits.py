"""Issue 10: fake sizes and the memory budget of `read_image` and of the label-map readers.

Peak memory is measured in a child process (Pillow's C allocations are invisible to tracemalloc):
the child resets its high-water mark (`/proc/self/clear_refs`), reads one file and reports
`VmHWM - VmRSS` before the read. Test files are constant images, a few KB to a few hundred KB on disk.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from deeplab_studio.storage import images
from deeplab_studio.storage.images import (
    DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, WORK_BYTES, ImageReadError, decode_cost, image_size, open_limited,
    probe_image, read_image)
from deeplab_studio.storage.labelmaps import LabelMapError, colors_to_labels, read_label_png, read_mask_png

ROOT = Path(__file__).resolve().parents[2]
W, H = 6000, 4000  # 24 MP: per-pixel costs dominate the fixed WORK_BYTES allowance


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def write_flat_png(path: Path, w: int, h: int, *, color_type: int, bit_depth: int = 8, extra: bytes = b"",
                   pixel: bytes | None = None) -> Path:
    """A constant PNG of any size, streamed (never holds the image): one row compressed h times."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    if bit_depth < 8:  # `pixel`: one byte holding 8 // bit_depth pixels
        row = b"\x00" + (pixel or b"\x00") * -(-w * bit_depth // 8)
    else:
        row = b"\x00" + (pixel if pixel is not None else b"\x00" * (channels * bit_depth // 8)) * w
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", idat)
                     + _chunk(b"IEND", b""))
    return path


def write_header_png(path: Path, w: int, h: int, *, color_type: int = 2, bit_depth: int = 8) -> Path:
    """A PNG that declares w×h but holds one row: enough for every header check."""
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 9))
                     + _chunk(b"IEND", b""))
    return path


_PALETTE_WITH_ALPHA = _chunk(b"PLTE", bytes([10, 20, 30, 200, 100, 0])) + _chunk(b"tRNS", b"\x80")

_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from deeplab_studio.storage import images, labelmaps

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

reader = {"image": images.read_image, "labels": labelmaps.read_label_png, "mask": labelmaps.read_mask_png}[sys.argv[3]]
base = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current RSS
try:
    shape = list(reader(sys.argv[2]).shape)
except images.ImageReadError as exc:  # LabelMapError is one too
    shape = str(exc)
print(json.dumps({"peak": status("VmHWM:") - base, "shape": shape}))
"""


def peak_bytes(path: Path, reader: str = "image") -> tuple[int, list[int] | str]:
    """(peak memory above the baseline, result shape or error message) of reading `path` in a fresh process."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc/self/clear_refs to reset the memory high-water mark")
    res = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT), str(path), reader],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return out["peak"], out["shape"]


def _cost(path: Path, out_bpp: int = 3) -> int:
    with open_limited(path, max_pixels=None) as im:
        return decode_cost(im, out_bpp)


# ---------------------------------------------------------------------------------------------
# a JPEG that declares far more pixels than it holds


def _fake_size_jpeg(path: Path, w: int, h: int) -> Path:
    """A valid 16×16 JPEG whose SOF0 claims w×h: libjpeg would decode it as grey, without error."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 90, 90)).save(buf, "JPEG", quality=90)
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, h, w)
    path.write_bytes(bytes(data))
    return path


def test_jpeg_declaring_15000_squared_refused_from_the_header(tmp_path: Path) -> None:
    fake = _fake_size_jpeg(tmp_path / "fake.jpg", 15000, 15000)
    assert fake.stat().st_size < 2000
    for call in (read_image, image_size):
        with pytest.raises(ImageReadError, match="truncated or damaged JPEG") as info:
            call(fake)
        assert info.value.path == fake and str(fake) in str(info.value)
        assert "\n" not in str(info.value)


def test_fake_jpeg_refused_without_decoding(tmp_path: Path) -> None:
    """The refusal costs no memory (it used to be a 675 MB grey array after 2.2 GB of peak)."""
    peak, message = peak_bytes(_fake_size_jpeg(tmp_path / "fake.jpg", 15000, 15000))
    assert "truncated or damaged JPEG" in message
    assert peak < 20_000_000


def test_honest_small_jpegs_still_read(tmp_path: Path) -> None:
    """The size rule (one bit per 8×8 block) leaves real files alone: flat, tiny and 4:4:4 ones."""
    for i, (size, kw) in enumerate([((2000, 1500), {}), ((3, 2), {}), ((999, 777), {"subsampling": 0}),
                                    ((640, 480), {"progressive": True})]):
        p = tmp_path / f"ok{i}.jpg"
        Image.new("RGB", size, (200, 200, 200)).save(p, quality=50, **kw)
        assert read_image(p).shape == (size[1], size[0], 3)
    gray = tmp_path / "gray.jpg"
    Image.new("L", (4000, 3000), 128).save(gray, quality=10)
    assert read_image(gray).shape == (3000, 4000, 3)


# ---------------------------------------------------------------------------------------------
# the memory budget


def test_budget_refuses_from_the_header(tmp_path: Path) -> None:
    p = write_header_png(tmp_path / "rgb.png", 12000, 10000)  # 120 MP of RGB: ~0.9 GB to read
    assert _cost(p) == 120_000_000 * 7 + WORK_BYTES
    with pytest.raises(ImageReadError, match=r"needs about 0\.8 GiB of memory, above the budget of 0\.5 GiB"):
        read_image(p, max_bytes=1 << 29)
    with pytest.raises(ImageReadError, match="budget"):
        probe_image(p, max_bytes=1 << 29)


def test_budget_allows_every_png_up_to_the_pixel_limit(tmp_path: Path) -> None:
    """The default budget never refuses a PNG, BMP or 4:2:0 JPEG that the 400 MP limit lets in."""
    assert DEFAULT_MAX_PIXELS * 7 + WORK_BYTES <= DEFAULT_MAX_BYTES
    side = int(DEFAULT_MAX_PIXELS ** 0.5)
    header = write_header_png(tmp_path / "h.png", side, side, color_type=6, bit_depth=16)  # the widest PNG
    assert _cost(header) <= DEFAULT_MAX_BYTES
    assert image_size(header) == (side, side)


CASES = {
    # name: (writer, bytes per pixel the budget promises for it)
    "palette_with_alpha": (lambda p: write_flat_png(p, W, H, color_type=3, extra=_PALETTE_WITH_ALPHA), 4),
    "rgba": (lambda p: write_flat_png(p, W, H, color_type=6, pixel=b"\x10\x20\x30\x80"), 7),
    "gray_alpha": (lambda p: write_flat_png(p, W, H, color_type=4, pixel=b"\x40\x80"), 7),
    "gray16": (lambda p: write_flat_png(p, W, H, color_type=0, bit_depth=16, pixel=b"\x12\x34"), 5),
    "rgb16": (lambda p: write_flat_png(p, W, H, color_type=2, bit_depth=16, pixel=b"\x12\x34" * 3), 7),
}


@pytest.mark.parametrize("name", list(CASES))
def test_peak_memory_within_the_budget(tmp_path: Path, name: str) -> None:
    writer, bytes_per_pixel = CASES[name]
    p = writer(tmp_path / f"{name}.png")
    assert p.stat().st_size < 1_000_000
    cost = _cost(p)
    assert cost <= W * H * bytes_per_pixel + WORK_BYTES
    peak, shape = peak_bytes(p)
    assert shape == [H, W, 3]
    assert peak <= cost, f"{name}: peak {peak / 1e6:.0f} MB above the estimate {cost / 1e6:.0f} MB"


def _save_with_orientation(im: Image.Image, path: Path, orientation: int, **kw) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, exif=exif.tobytes(), **kw)
    return path


@pytest.mark.parametrize("kind", ["cmyk_jpeg_rotated", "float_tiff_rotated"])
def test_peak_memory_of_pillow_encoded_paths(tmp_path: Path, kind: str) -> None:
    """CMYK and float conversions and the EXIF rotation are done in blocks, not on whole copies."""
    if kind == "cmyk_jpeg_rotated":
        p = _save_with_orientation(Image.new("CMYK", (W, H), (10, 200, 30, 5)), tmp_path / "c.jpg", 6, quality=80)
    else:
        flat = Image.fromarray(np.full((H // 2, W), 0.25, np.float32))
        p = _save_with_orientation(flat, tmp_path / "f.tif", 6, compression="tiff_deflate")
    cost = _cost(p)
    peak, shape = peak_bytes(p)
    assert shape[:2] == sorted(shape[:2], reverse=True)  # rotated: taller than wide
    assert peak <= cost, f"{kind}: peak {peak / 1e6:.0f} MB above the estimate {cost / 1e6:.0f} MB"


# ---------------------------------------------------------------------------------------------
# the block-wise conversions give what whole-image Pillow conversions give


@pytest.fixture()
def small_blocks(monkeypatch) -> None:
    """Row blocks of 20 000 pixels, so small test images span many blocks."""
    monkeypatch.setattr(images, "_BLOCK_PIXELS", 20_000)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_blockwise_conversion_matches_pillow(tmp_path: Path, orientation: int, small_blocks) -> None:
    rgba = np.random.default_rng(orientation).integers(0, 256, (150, 110, 4), dtype=np.uint8)
    cases = {"rgba.png": Image.fromarray(rgba, "RGBA"),
             "pal.png": Image.fromarray(rgba[..., :3]).quantize(16),
             "gray.png": Image.fromarray(rgba[..., 0])}
    for name, im in cases.items():
        kw = {"transparency": 3} if name == "pal.png" else {}
        p = _save_with_orientation(im, tmp_path / name, orientation, **kw)
        with Image.open(p) as ref:
            ref_rgba = np.asarray(ImageOps.exif_transpose(ref).convert("RGBA")).astype(np.uint32)
        a = ref_rgba[..., 3:4]
        expected = ((ref_rgba[..., :3] * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
        out = read_image(p)
        assert out.flags.c_contiguous
        np.testing.assert_array_equal(out, expected, err_msg=name)


def test_float_blocks_share_one_scale(tmp_path: Path, small_blocks) -> None:
    ramp = np.linspace(0, 7.5, 300 * 200, dtype=np.float32).reshape(300, 200)
    ramp[0, 0], ramp[-1, -1] = np.nan, np.inf  # ignored: the top is the largest finite value
    Image.fromarray(ramp).save(tmp_path / "f.tif")
    out = read_image(tmp_path / "f.tif")[..., 0]
    clean = np.nan_to_num(ramp.astype(np.float64), nan=0, posinf=0, neginf=0)
    np.testing.assert_array_equal(out, np.clip(np.rint(clean / clean.max() * 255), 0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# label maps and edit masks: the same budget, and one LabelMapError for anything unusable


def test_label_map_peak_memory_within_the_budget(tmp_path: Path) -> None:
    """A colourised label map (RGB, looked up in the VOC colours) used to need ~40 bytes per pixel."""
    colour = write_flat_png(tmp_path / "colour.png", W, H, color_type=2, pixel=bytes([128, 0, 0]))  # VOC class 1
    cost = _cost(colour, 1)
    assert cost == W * H * 5 + WORK_BYTES
    peak, shape = peak_bytes(colour, "labels")
    assert shape == [H, W] and peak <= cost, f"peak {peak / 1e6:.0f} MB above {cost / 1e6:.0f} MB"
    mask = write_flat_png(tmp_path / "mask.png", W, H, color_type=0, bit_depth=1, pixel=b"\xaa")
    peak, shape = peak_bytes(mask, "mask")
    assert shape == [H, W] and peak <= _cost(mask, 1)


def test_label_map_over_the_budget_refused_from_the_header(tmp_path: Path) -> None:
    p = write_header_png(tmp_path / "big_labels.png", 12000, 10000)
    for call in (lambda: read_label_png(p, max_bytes=1 << 29), lambda: read_mask_png(p, max_bytes=1 << 29)):
        with pytest.raises(LabelMapError, match="above the budget of 0.5 GiB") as info:
            call()
        assert info.value.path == p and "\n" not in str(info.value)


def _damaged_label_files(tmp_path: Path) -> dict[str, Path]:
    good = io.BytesIO()
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 7).save(good, "PNG")
    data = good.getvalue()
    ztxt = _chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"\0" * 20_000_000))  # 20 MB of text: Pillow's limit is 1 MB
    files = {
        "torn": data[: len(data) // 2],
        "bad_crc": data[:40] + bytes([data[40] ^ 0xFF]) + data[41:],
        "fake_size": write_header_png(tmp_path / "x.png", 40000, 9000, color_type=3).read_bytes(),
        "text_bomb": data[:33] + ztxt + data[33:],
        "wide_values": None,
        "gray_alpha": None,
        "fake_jpeg": _fake_size_jpeg(tmp_path / "y.jpg", 4000, 3000).read_bytes(),
    }
    out = {}
    for name, raw in files.items():
        out[name] = tmp_path / f"{name}.png"
        if raw is not None:
            out[name].write_bytes(raw)
    Image.fromarray(np.full((8, 8), 300, np.uint16)).save(out["wide_values"])
    Image.new("LA", (8, 8)).save(out["gray_alpha"])
    return out


@pytest.mark.parametrize("kind", ["torn", "bad_crc", "fake_size", "text_bomb", "wide_values", "gray_alpha",
                                  "fake_jpeg"])
def test_damaged_label_maps_give_one_label_map_error(tmp_path: Path, kind: str) -> None:
    p = _damaged_label_files(tmp_path)[kind]
    for call in (read_label_png, read_mask_png):
        with pytest.raises(LabelMapError) as info:
            call(p)
        assert info.value.path == p and str(p) in str(info.value) and "\n" not in str(info.value)


def test_fake_jpeg_label_map_refused_not_read_as_grey(tmp_path: Path) -> None:
    """It used to be decoded in full, libjpeg filling the missing blocks with grey (128,128,128:
    VOC class 7), and then judged by its colours."""
    p = _damaged_label_files(tmp_path)["fake_jpeg"]
    with pytest.raises(LabelMapError, match="truncated or damaged JPEG"):
        read_label_png(p)


def test_colour_lookup_in_blocks_reports_like_one_pass(tmp_path: Path, small_blocks) -> None:
    pal = np.array([(0, 0, 0), (255, 0, 0), (0, 255, 0)], np.uint8)
    lab = np.random.default_rng(5).integers(0, 3, (300, 150)).astype(np.uint8)
    rgb = pal[lab]
    Image.fromarray(rgb).save(tmp_path / "ok.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "ok.png", pal), lab)
    rgb[250, 7] = (9, 9, 9)  # in a late block
    rgb[40, 100] = (9, 9, 9)
    rgb[120, 3] = (1, 2, 3)  # the smallest unknown colour: the example, at its first position
    rgb[200, 1] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "bad.png")
    with pytest.raises(LabelMapError, match=r"^.*bad.png: 4 pixels have colours outside the palette, "
                       r"e\.g\. \(1,2,3\) at x=3, y=120 \(2 unknown colours\)$"):
        read_label_png(tmp_path / "bad.png", pal)
    with pytest.raises(LabelMapError, match=r"4 pixels .* \(1,2,3\) at x=3, y=120 \(2 unknown colours\)"):
        colors_to_labels(rgb, pal)
