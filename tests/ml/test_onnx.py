"""`export-model --onnx` and the ONNX Runtime backend, checked in the real onnxruntime.

The bundled VOC model is exported once for the module (the default, dynamo exporter, through the
CLI); its logits must equal torch's within 1e-4 at several input sizes (dynamic batch, height and
width), and the Predictor's onnxruntime backend must give the same argmax as torch on real VOC
images. A tiny random DeepLab v3+ is exported with both exporters and drives the cache tests.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab_studio.cli import main
from deeplab_studio.ml.checkpoints import load_checkpoint, save_checkpoint
from deeplab_studio.ml.onnx_backend import CACHE_ENV, cache_path, load_onnx_forward
from deeplab_studio.ml.onnx_export import export_onnx, read_metadata
from deeplab_studio.ml.predictor import Predictor
from deeplab_studio.ml.zoo import build_model
from deeplab_studio.models import VOC_MODEL, bundled_model_path
from deeplab_studio.storage.images import read_image

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

VOC_REAL = Path(__file__).resolve().parents[1] / "data" / "voc_real" / "images"
SIZES = ((1, 3, 200, 300), (2, 3, 161, 97), (1, 3, 33, 65))


def _max_logit_diff(onnx_file: Path | str, model: torch.nn.Module, shape: tuple[int, ...], seed: int = 0) -> float:
    """max |logit difference| between onnxruntime (a plain session) and torch for one random input."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"image": x.numpy()})
    with torch.inference_mode():
        expected = model(x).numpy()
    assert got.shape == expected.shape
    return float(np.abs(got - expected).max())


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The onnx cache of this module: a fresh folder, never the user's."""
    folder = tmp_path_factory.mktemp("onnx-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(folder))
        yield folder


@pytest.fixture(scope="module")
def voc():
    with bundled_model_path(VOC_MODEL) as path:
        return load_checkpoint(path)


@pytest.fixture(scope="module")
def voc_onnx(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "voc.onnx"
    assert main(["export-model", VOC_MODEL, "--onnx", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("deeplabv3plus_mobilenet", num_classes=3).eval()


@pytest.fixture(scope="module")
def tiny_cached(tmp_path_factory, tiny) -> tuple[Path, list[str]]:
    """The tiny model exported into a fresh cache by the backend (the default, dynamo exporter):
    the cache folder and what `on_export` was told."""
    folder = tmp_path_factory.mktemp("tiny-cache")
    said: list[str] = []
    load_onnx_forward(tiny, folder=folder, on_export=said.append)
    return folder, said


# --- export-model ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SIZES)
def test_exported_voc_model_equals_torch_at_any_size(voc_onnx: Path, voc, shape) -> None:
    assert _max_logit_diff(voc_onnx, voc.model, shape) <= 1e-4


def test_exported_file_describes_inputs_classes_and_normalisation(voc_onnx: Path, voc) -> None:
    session = ort.InferenceSession(str(voc_onnx), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape, inp.type) == ("image", ["batch", 3, "height", "width"], "tensor(float)")
    assert (out.name, out.shape) == ("logits", ["batch", 21, "height", "width"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta == read_metadata(voc_onnx)
    assert json.loads(meta["class_names"]) == voc.class_names and len(voc.class_names) == 21
    assert json.loads(meta["class_colors"]) == [list(c) for c in voc.class_colors]
    assert json.loads(meta["mean"]) == json.loads(meta["std"]) == [0.5, 0.5, 0.5]  # TF-style x/127.5 - 1
    assert (meta["arch"], meta["num_classes"], meta["output_stride"], meta["opset"]) == \
        ("deeplabv3_mobilenetv2_tf", "21", "16", "18")
    assert "dynamo" in meta["exporter"]


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_tiny_deeplabv3plus_exports_with_either_exporter(tmp_path: Path, tiny, tiny_cached, exporter: str) -> None:
    if exporter == "dynamo":  # the backend's cache entry (a dynamo export takes ~10× longer)
        path = cache_path(tiny, folder=tiny_cached[0])
    else:
        path = export_onnx(tiny, tmp_path / "tiny.onnx", exporter=exporter)
    for shape in ((2, 3, 64, 96), (1, 3, 77, 41)):
        assert _max_logit_diff(path, tiny, shape, seed=1) <= 1e-4
    meta = read_metadata(path)
    assert meta["num_classes"] == "3" and exporter in meta["exporter"]


def test_export_model_refuses_what_it_must_not_write(tmp_path: Path, capsys) -> None:
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"the user's file")
    ckpt = tmp_path / "m.safetensors"
    torch.manual_seed(0)
    save_checkpoint(ckpt, build_model("deeplabv3plus_mobilenet", num_classes=3), arch="deeplabv3plus_mobilenet",
                    num_classes=3)
    before = ckpt.read_bytes()
    cases = [
        ([VOC_MODEL, "--onnx", str(mine)], "exists; export-model replaces a file only with --force"),
        ([str(ckpt), "--onnx", str(ckpt), "--force"], "is the model file itself"),
        ([str(tmp_path / "missing.pth"), "--onnx", str(tmp_path / "a.onnx")], "file not found"),
        (["no_such_model", "--onnx", str(tmp_path / "a.onnx")], "not a bundled model"),
        ([VOC_MODEL, "--onnx", str(tmp_path / "a.onnx"), "--opset", "13"], "writes opsets 18 to"),
        ([VOC_MODEL, "--onnx", str(tmp_path)], "is a folder"),
    ]
    for argv, message in cases:
        assert main(["export-model", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert mine.read_bytes() == b"the user's file" and ckpt.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "mine.onnx"]


def test_export_model_replaces_with_force_atomically(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.onnx"
    out.write_bytes(b"old")
    assert main(["export-model", VOC_MODEL, "--onnx", str(out), "--force", "--exporter", "torchscript"]) == 0
    err = capsys.readouterr().err
    assert "onnxruntime agrees with torch" in err and "mean (0.5, 0.5, 0.5)" in err
    assert read_metadata(out)["arch"] == "deeplabv3_mobilenetv2_tf"
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]  # no temporary file left


# --- the onnxruntime backend ------------------------------------------------------------------------
def test_cache_exports_once_per_graph(tiny, tiny_cached) -> None:
    folder, said = tiny_cached
    entry = cache_path(tiny, folder=folder)
    assert len(said) == 1 and str(entry) in said[0] and sorted(folder.iterdir()) == [entry]
    stamp = entry.stat().st_mtime_ns
    again = load_onnx_forward(tiny, folder=folder, on_export=said.append)
    assert len(said) == 1 and again.path == entry and entry.stat().st_mtime_ns == stamp  # no new export
    x = torch.randn(1, 3, 40, 56)
    with torch.inference_mode():
        assert (again(x) - tiny(x)).abs().max() <= 1e-4
    torch.manual_seed(1)
    other = build_model("deeplabv3plus_mobilenet", num_classes=3).eval()  # other weights: another entry
    assert cache_path(other, folder=folder) != entry
    assert cache_path(tiny, folder=folder, exporter="torchscript") != entry


def test_a_damaged_cache_entry_is_exported_again(tmp_path: Path, tiny) -> None:
    entry = cache_path(tiny, exporter="torchscript", folder=tmp_path)
    entry.write_bytes(b"damaged")  # ours, by its name and folder
    said: list[str] = []
    fixed = load_onnx_forward(tiny, exporter="torchscript", folder=tmp_path, on_export=said.append)
    assert len(said) == 1 and "does not load" in said[0] and fixed.path == entry
    x = torch.randn(1, 3, 40, 56)
    with torch.inference_mode():
        assert (fixed(x) - tiny(x)).abs().max() <= 1e-4


def test_output_stride_is_part_of_the_cache_key(tmp_path: Path) -> None:
    with bundled_model_path(VOC_MODEL) as path:
        os16, os8 = load_checkpoint(path), load_checkpoint(path, output_stride=8)
    assert cache_path(os16, folder=tmp_path) != cache_path(os8, folder=tmp_path)


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


def test_onnxruntime_backend_agrees_with_torch_on_real_images(cache: Path, voc, voc_onnx: Path) -> None:
    # the backend's cache entry is the dynamo export the CLI made above (same model, exporter, opset);
    # exporting into the cache is tested with the tiny model
    entry = cache_path(voc)
    entry.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(voc_onnx, entry)
    ort_pred = Predictor(voc, backend="onnxruntime")
    torch_pred = Predictor(voc)
    assert ort_pred.backend == "onnxruntime" and ort_pred._net.path == entry and ort_pred.device.type == "cpu"
    for name in ("2007_000033.png", "2009_001314.png", "2011_000003.jpg"):
        image = read_image(VOC_REAL / name)
        a, b = torch_pred.predict(image), ort_pred.predict(image)
        assert _agreement(a.labels, b.labels) >= 0.995, name
        assert np.abs(a.probs - b.probs).max() < 1e-3
    # the same tiling and test-time augmentation as torch: 256 px tiles with flip
    image = read_image(VOC_REAL / "2011_000006.jpg")[:300, :400]  # 2×2 tiles
    tiled = {"tile_size": 256, "tta": "flip"}
    a = Predictor(voc, **tiled).predict(image)
    b = Predictor(voc, backend="onnxruntime", **tiled).predict(image)
    assert _agreement(a.labels, b.labels) >= 0.995


def test_predict_cli_with_onnxruntime_backend(cache: Path, voc, voc_onnx: Path, tmp_path: Path, capsys) -> None:
    entry = cache_path(voc)
    if not entry.exists():
        entry.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(voc_onnx, entry)
    src = VOC_REAL / "2010_001069.png"
    assert main(["predict", "--backend", "onnxruntime", str(src), "--out", str(tmp_path / "out")]) == 0
    assert "on cpu (onnxruntime)" in capsys.readouterr().err
    with Image.open(tmp_path / "out" / "2010_001069.png") as im:
        labels = np.array(im)
    expected = Predictor(voc).predict(read_image(src)).labels
    assert _agreement(labels, expected) >= 0.995


def test_a_ray_actor_runs_onnxruntime_in_the_cpus_ray_reserved(cache: Path, voc, voc_onnx: Path,
                                                              tmp_path: Path) -> None:
    """Each `predict --engine ray` actor's ONNX Runtime session takes --cpus-per-worker threads, not
    every core of the node (N actors × all cores oversubscribed it). The actor is built as Ray
    builds it, from the run's plain options (no Ray needed)."""
    from deeplab_studio.commands import predict
    from deeplab_studio.commands.predict_ray import ImageWorker
    from deeplab_studio.ml.onnx_backend import default_threads

    entry = cache_path(voc)
    if not entry.exists():
        entry.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(voc_onnx, entry)
    parser = argparse.ArgumentParser()
    predict.add_arguments(parser)
    args = parser.parse_args(["--engine", "ray", "--backend", "onnxruntime", "--cpus-per-worker", "1",
                              "x.jpg", "--out", str(tmp_path / "out")])
    worker = ImageWorker({k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))})
    assert worker.render.predictor.backend == "onnxruntime" and worker.render.predictor.threads == 1
    assert Predictor(voc, backend="onnxruntime").threads == default_threads()  # a plain run: every core
    assert Predictor(voc).threads is None  # torch keeps its own setting


def test_missing_onnxruntime_is_one_line_with_the_install_hint(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['onnxruntime'] = None\n"  # as if it were not installed
            "from deeplab_studio.cli import main\n"
            f"sys.exit(main(['predict', '--backend', 'onnxruntime', {str(VOC_REAL / '2007_000033.png')!r}, "
            f"'--out', {str(tmp_path / 'out')!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert "'onnxruntime' is not installed" in lines[0] and "deeplab-studio[onnx]" in lines[0]
    assert not (tmp_path / "out").exists()
