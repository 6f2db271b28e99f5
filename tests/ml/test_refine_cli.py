"""`deeplab-studio refine` end to end: inputs in every mask format, outputs, and clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.cli import main
from deeplab_studio.core.labels import IGNORE, voc_colormap
from deeplab_studio.ml.crf import CRFParams, refine, refine_labels


@pytest.fixture(scope="module")
def sample(data_dir, tmp_path_factory):
    """A 160×160 crop of sample 114 (bird): image PNG, VOC-colour prediction PNG, arrays."""
    folder = tmp_path_factory.mktemp("refine_cli")
    src = data_dir / "voc_samples"
    box = (150, 150, 310, 310)
    image = Image.open(src / "114_image.png").convert("RGB").crop(box)
    pred_rgb = Image.open(src / "114_pred.png").convert("RGB").crop(box)
    image.save(folder / "image.png")
    pred_rgb.save(folder / "pred_rgb.png")
    cmap = voc_colormap(256)
    rgb = np.asarray(pred_rgb)
    labels = np.zeros(rgb.shape[:2], np.uint8)
    for c in (0, 3):
        labels[(rgb == cmap[c]).all(axis=2)] = c
    assert set(np.unique(labels)) == {0, 3} and len(np.unique(labels[(rgb == cmap[3]).all(axis=2)])) == 1
    return folder, np.asarray(image), labels


def _read_p(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with Image.open(path) as im:
        assert im.mode == "P"
        return np.array(im), np.asarray(im.getpalette()[:768], np.uint8).reshape(-1, 3)


def _run(capsys, *argv) -> tuple[int, str]:
    rc = main(["refine", *map(str, argv)])
    return rc, capsys.readouterr().err


def test_colour_mask_end_to_end(sample, capsys, tmp_path):
    folder, image, labels = sample
    out = tmp_path / "out.png"
    rc, err = _run(capsys, folder / "image.png", folder / "pred_rgb.png", "-o", out)
    assert rc == 0, err
    got, palette = _read_p(out)
    assert (got == refine_labels(image, labels)).all()
    assert (got != labels).any()  # the CRF did change the border
    assert (palette[:21] == voc_colormap(21)).all()
    assert "pixels changed" in err
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temporary left behind


def test_palette_mask_keeps_its_palette_and_options_apply(sample, capsys, tmp_path):
    folder, image, labels = sample
    mask = tmp_path / "mask.png"
    im = Image.fromarray(labels, "P")
    custom = np.random.default_rng(0).integers(0, 256, (256, 3), dtype=np.uint8)
    im.putpalette(custom.tobytes())
    im.save(mask)
    out = tmp_path / "out.png"
    rc, err = _run(capsys, folder / "image.png", mask, "-o", out, "--iterations", 3, "--sxy", 30,
                   "--srgb", 8, "--compat", 4, "--confidence", 0.8)
    assert rc == 0, err
    got, palette = _read_p(out)
    params = CRFParams(iterations=3, bilateral_sxy=30, bilateral_srgb=8, bilateral_compat=4, hard_confidence=0.8)
    assert (got == refine_labels(image, labels, params=params)).all()
    assert (palette == custom).all()


def test_index_png_with_void_and_protect(sample, capsys, tmp_path):
    folder, image, labels = sample
    labels = labels.copy()
    labels[:8] = IGNORE
    Image.fromarray(labels, "L").save(tmp_path / "mask.png")
    protect = np.zeros(labels.shape, bool)
    protect[60:100, 60:100] = True
    Image.fromarray(protect).save(tmp_path / "edit.png")
    out = tmp_path / "out.png"
    rc, err = _run(capsys, folder / "image.png", tmp_path / "mask.png", "-o", out, "--protect", tmp_path / "edit.png")
    assert rc == 0, err
    got, _ = _read_p(out)
    assert (got == refine_labels(image, labels, protect=protect)).all()
    assert (got[protect] == labels[protect]).all() and (got[:8] == IGNORE).all()


def test_probs_use_the_soft_crf(sample, capsys, tmp_path):
    folder, image, labels = sample
    probs = np.stack([labels == 0, labels == 3]).astype(np.float32)
    probs = 0.7 * probs + 0.3 * np.roll(probs, 4, axis=2)
    full = np.zeros((21,) + labels.shape, np.float16)
    full[0], full[3] = probs[0], probs[1]
    np.save(tmp_path / "probs.npy", full)
    out = tmp_path / "out.png"
    rc, err = _run(capsys, folder / "image.png", folder / "pred_rgb.png", "-o", out, "--probs", tmp_path / "probs.npy")
    assert rc == 0, err
    got, _ = _read_p(out)
    assert (got == refine(image, full)).all()
    assert not (got == refine_labels(image, labels)).all()


@pytest.mark.parametrize("case, needle", [
    ("missing_image", "nope.png"),
    ("size", "is 100×100"),
    ("unknown_colour", "outside the palette"),
    ("pickle", "probs.npy: holds Python objects"),
    ("not_npy", "probs.npy: not a .npy file"),
    ("truncated", "probs.npy: not a readable .npy array"),
    ("probs_shape", "must be C×160×160"),
    ("logits", "not logits"),
    ("bad_param", "--srgb must be >= 0.1"),
    ("out_dir", "cannot write"),
])
def test_bad_input_exits_2_with_one_line(sample, capsys, tmp_path, case, needle):
    folder, image, labels = sample
    img, mask, out = folder / "image.png", folder / "pred_rgb.png", tmp_path / "out.png"
    extra: list = []
    if case == "missing_image":
        img = tmp_path / "nope.png"
    elif case == "size":
        Image.fromarray(labels[:100, :100], "L").save(tmp_path / "small.png")
        mask = tmp_path / "small.png"
    elif case == "unknown_colour":
        rgb = np.asarray(Image.open(mask).convert("RGB")).copy()
        rgb[5, 5] = (1, 2, 3)
        Image.fromarray(rgb).save(tmp_path / "odd.png")
        mask = tmp_path / "odd.png"
    elif case == "pickle":
        np.save(tmp_path / "probs.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        extra = ["--probs", tmp_path / "probs.npy"]
    elif case == "not_npy":
        (tmp_path / "probs.npy").write_text("C,H,W\n0.5,0.5\n")
        extra = ["--probs", tmp_path / "probs.npy"]
    elif case == "truncated":
        np.save(tmp_path / "probs.npy", np.zeros((2, 160, 160), np.float32))
        data = (tmp_path / "probs.npy").read_bytes()
        (tmp_path / "probs.npy").write_bytes(data[: len(data) // 2])
        extra = ["--probs", tmp_path / "probs.npy"]
    elif case == "probs_shape":
        np.save(tmp_path / "p.npy", np.zeros((21, 10, 10), np.float32))
        extra = ["--probs", tmp_path / "p.npy"]
    elif case == "logits":
        np.save(tmp_path / "p.npy", np.full((2, 160, 160), -3.0, np.float32))
        extra = ["--probs", tmp_path / "p.npy"]
    elif case == "bad_param":
        extra = ["--srgb", 0]
    elif case == "out_dir":
        (tmp_path / "a_file").write_text("not a folder")
        out = tmp_path / "a_file" / "out.png"
    rc, err = _run(capsys, img, mask, "-o", out, *extra)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deeplab-studio refine: error:"), err
    assert needle in lines[0]
    assert not out.exists()


def test_installed_entry_point_runs(sample, tmp_path):
    folder, image, labels = sample
    out = tmp_path / "out.png"
    proc = subprocess.run([sys.executable, "-m", "deeplab_studio", "refine", str(folder / "image.png"),
                           str(folder / "pred_rgb.png"), "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (_read_p(out)[0] == refine_labels(image, labels)).all()
