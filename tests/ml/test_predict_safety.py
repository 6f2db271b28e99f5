"""`deeplab-studio predict` never loses a user's work (issue 10): it never writes over an input
image or a file it did not create, a failing image never stops a batch, and tiny images just work."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab_studio.cli import CommandError, main
from deeplab_studio.commands.predict import MANIFEST_NAME, OutputGuard
from deeplab_studio.ml.checkpoints import save_checkpoint
from deeplab_studio.ml.predictor import MIN_SIDE, Predictor
from deeplab_studio.ml.zoo import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(winner: int | None = None) -> torch.nn.Module:
    """A real deeplabv3plus_mobilenet (3 classes): random, or always voting for class `winner`."""
    torch.manual_seed(3)
    model = build_model("deeplabv3plus_mobilenet", num_classes=3)
    if winner is not None:
        last = model.classifier.classifier[3]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
            last.bias[winner] = 5.0
    return model.eval()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for name, winner in (("const1", 1), ("const2", 2)):
        paths[name] = folder / f"{name}.safetensors"
        save_checkpoint(paths[name], _model(winner), arch="deeplabv3plus_mobilenet", num_classes=3)
    return paths


def _image(path: Path, h: int = 32, w: int = 40, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _predict(ckpt: Path | str, *args: str) -> int:
    return main(["predict", "--model", str(ckpt), "--device", "cpu", "--quiet", *args])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _labels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


# --- 1. never write over an input image or a file predict did not create ------------------------------
@pytest.mark.parametrize("image, out", [("photos/cat.png", "photos"), ("sub/dog.png", "sub"), ("a/x.png", "a/.")])
def test_a_named_image_inside_out_is_never_replaced(tmp_path: Path, ckpts, monkeypatch, capsys, image, out) -> None:
    monkeypatch.chdir(tmp_path)
    before = _image(Path(image)).read_bytes()
    for model in (tmp_path / "no-such-model.pth", ckpts["const1"]):  # refused before the model is even loaded
        rc = _predict(model, image, "--out", out)
        line = _one_error_line(capsys)
        assert rc == 2 and f"refusing to write over {Path(out) / Path(image).name}" in line and "input image" in line
        assert Path(image).read_bytes() == before
    assert not Path(out, MANIFEST_NAME).exists()


@pytest.mark.parametrize("kind", ["hardlink", "symlink"])
def test_an_output_that_is_an_input_under_another_name_is_refused(tmp_path: Path, ckpts, capsys, kind) -> None:
    src = _image(tmp_path / "in" / "x.png")
    before = src.read_bytes()
    (tmp_path / "out").mkdir()
    getattr(os, "link" if kind == "hardlink" else "symlink")(src, tmp_path / "out" / "x.png")
    rc = _predict(ckpts["const1"], str(src), "--out", str(tmp_path / "out"))
    assert rc == 2 and "input image" in _one_error_line(capsys)
    assert src.read_bytes() == before and (tmp_path / "out" / "x.png").read_bytes() == before


def test_files_predict_did_not_write_are_never_replaced(tmp_path: Path, ckpts, capsys) -> None:
    _image(tmp_path / "in" / "a.jpg")
    _image(tmp_path / "in" / "b.jpg", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.overlay.jpg").write_bytes(b"the user's own overlay")
    (out / "b.png").write_bytes(b"the user's own label map")
    (out / "b.probs.npy").mkdir()  # a folder is never predict's file either
    rc = _predict(ckpts["const1"], "--overlay", "--save-probs", str(tmp_path / "in"), "--out", str(out))
    line = _one_error_line(capsys)
    assert rc == 2 and "refusing to write over" in line and "and 2 other files: predict did not write it" in line
    assert sorted(p.name for p in out.iterdir()) == ["a.overlay.jpg", "b.png", "b.probs.npy"]  # nothing written
    assert (out / "b.png").read_bytes() == b"the user's own label map"
    (out / "b.png").unlink()
    (out / "b.probs.npy").rmdir()
    rc = _predict(ckpts["const1"], str(tmp_path / "in"), "--out", str(out))  # no --overlay: not a target
    assert rc == 0 and (out / "a.overlay.jpg").read_bytes() == b"the user's own overlay"
    assert (_labels(out / "a.png") == 1).all()


def test_rerun_replaces_its_own_files_but_not_edited_ones(tmp_path: Path, ckpts, capsys) -> None:
    _image(tmp_path / "in" / "a.png")
    _image(tmp_path / "in" / "sub" / "b.png", seed=1)
    out = tmp_path / "out"
    args = ("--save-probs", "--overlay", str(tmp_path / "in"), "--out", str(out))
    assert _predict(ckpts["const1"], *args) == 0
    assert _predict(ckpts["const2"], *args) == 0  # its own files: replaced with the new model's answer
    assert (_labels(out / "a.png") == 2).all() and (_labels(out / "sub" / "b.png") == 2).all()
    with Image.open(out / "a.png") as im:
        assert im.info["Software"].startswith("deeplab-studio") and im.info["Software"].endswith("predict")
    entries = [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]
    assert sorted(e["file"] for e in entries) == sorted(  # compacted: one line per file
        f"{s}{x}" for s in ("a", "sub/b") for x in (".png", ".probs.npy", ".overlay.jpg"))
    capsys.readouterr()

    edited = np.zeros((32, 40), np.uint8)
    edited[:10] = 1
    Image.fromarray(edited, mode="P").save(out / "sub" / "b.png")  # the user corrects a label map
    snapshot = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    rc = _predict(ckpts["const1"], *args)
    line = _one_error_line(capsys)
    assert rc == 2 and f"refusing to write over {out / 'sub' / 'b.png'}: predict did not write it" in line
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == snapshot  # nothing at all was written

    (out / "sub" / "b.png").unlink()
    (out / MANIFEST_NAME).unlink()  # without its list, predict cannot tell its files from the user's
    rc = _predict(ckpts["const1"], *args)
    assert rc == 2 and "and 4 other files: predict did not write it" in _one_error_line(capsys)


def test_the_guard_rechecks_each_target_just_before_writing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_text('{"file": "a.png", "sha256": "00"}\n{"file": "b.p')  # a torn last line
    guard = OutputGuard(out)
    guard.check(["x.png", "y.png"], [])
    (out / "x.png").write_bytes(b"appeared meanwhile")  # e.g. the user saved a file there mid-run
    with pytest.raises(FileExistsError, match="appeared or changed since predict started"):
        guard.write("x.png", b"label map")
    guard.write("y.png", b"label map")
    guard.close()
    assert (out / "x.png").read_bytes() == b"appeared meanwhile" and (out / "y.png").read_bytes() == b"label map"
    again = OutputGuard(out)
    again.check(["y.png"], [])  # its own file: accepted
    (out / "y.png").write_bytes(b"edited by the user")
    with pytest.raises(CommandError, match="predict did not write it"):
        OutputGuard(out).check(["y.png"], [])


# --- 2. one failing image never stops a batch ----------------------------------------------------------
def test_a_memory_error_skips_that_image_and_the_batch_goes_on(tmp_path: Path, ckpts, monkeypatch, capsys) -> None:
    from deeplab_studio.commands import predict

    for i, name in enumerate(("a", "b", "c")):
        _image(tmp_path / "in" / f"{name}.png", 32, 40 + i, seed=i)
    real_overlay = predict.overlay_jpeg

    def overlay(image, labels, palette):  # b.png (41 px wide) is too large for this machine
        if image.shape[1] == 41:
            raise MemoryError
        return real_overlay(image, labels, palette)

    monkeypatch.setattr(predict, "overlay_jpeg", overlay)
    out = tmp_path / "out"
    rc = _predict(ckpts["const1"], "--overlay", str(tmp_path / "in"), "--out", str(out))
    err = capsys.readouterr().err
    assert rc == 1 and f"skipped {tmp_path / 'in' / 'b.png'}: out of memory" in err and "2 of 3 images" in err
    assert sorted(p.name for p in out.glob("[!.]*")) == ["a.overlay.jpg", "a.png", "c.overlay.jpg", "c.png"]


def test_a_write_failure_skips_that_image_and_the_batch_goes_on(tmp_path: Path, ckpts, capsys) -> None:
    _image(tmp_path / "in" / "a.png")
    _image(tmp_path / "in" / "b" / "c.png", seed=1)
    _image(tmp_path / "in" / "d.png", seed=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "b").write_text("a file where predict needs the folder b/")  # a real failure, no mocks
    rc = _predict(ckpts["const1"], str(tmp_path / "in"), "--out", str(out))
    err = capsys.readouterr().err
    assert rc == 1 and f"skipped {tmp_path / 'in' / 'b' / 'c.png'}" in err and "2 of 3 images" in err
    assert (_labels(out / "a.png") == 1).all() and (_labels(out / "d.png") == 1).all()
    assert (out / "b").read_text() == "a file where predict needs the folder b/"


def test_a_full_disk_stops_the_run(tmp_path: Path, ckpts, monkeypatch, capsys) -> None:
    def full(self, rel, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.out / rel))

    monkeypatch.setattr(OutputGuard, "write", full)
    for name in ("a", "b"):
        _image(tmp_path / "in" / f"{name}.png")
    rc = _predict(ckpts["const1"], str(tmp_path / "in"), "--out", str(tmp_path / "out"))
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and "No space left on device" in line and "stopped after 0 of 2 images" in line


# --- 3. tiny images just work -----------------------------------------------------------------------------
@pytest.mark.parametrize("tta", [None, "flip", "ms"])
def test_tiny_images_are_padded_for_the_network_and_cropped_back(tta) -> None:
    predictor = Predictor(_model(), device="cpu", tta=tta)
    rng = np.random.default_rng(0)
    for shape in ((2, 300), (300, 2), (1, 1), (5, 7)):
        pred = predictor.predict(rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
        assert pred.labels.shape == shape and pred.probs.shape == (3, *shape)
        np.testing.assert_allclose(pred.probs.sum(0), 1, atol=1e-5)
    if tta == "ms":
        return  # rescaling a strip is not rescaling the padded image
    strip = rng.integers(0, 256, (2, 300, 3), dtype=np.uint8)  # exactly the network on the edge-padded image
    top = (MIN_SIDE - 2) // 2
    padded = np.pad(strip, ((top, MIN_SIDE - 2 - top), (0, 0), (0, 0)), mode="edge")
    np.testing.assert_allclose(predictor.predict(strip).probs, predictor.predict(padded).probs[:, top : top + 2],
                               atol=1e-6)


def test_predict_on_a_two_pixel_strip(tmp_path: Path, ckpts, capsys) -> None:
    src = _image(tmp_path / "strip.png", 2, 300)
    rc = main(["predict", "--model", str(ckpts["const1"]), "--device", "cpu", str(src), "--out", str(tmp_path / "o")])
    assert rc == 0, capsys.readouterr().err
    labels = _labels(tmp_path / "o" / "strip.png")
    assert labels.shape == (2, 300) and (labels == 1).all()
