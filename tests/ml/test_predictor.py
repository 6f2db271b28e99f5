"""Predictor: outputs, tiling, TTA, downscaling, cancel, out-of-memory fallback, batch decoding.

The models here are tiny and deterministic so the checks are exact and CPU-fast:
`ColourNet` classifies each pixel by its nearest reference colour after a 3×3 blur (mirror
symmetric, so flipping commutes with it), `conv_net` is a seeded random CNN with a 9×9 receptive
field. A real DeepLab from `ml.zoo` runs through the same paths in `test_deeplab_model_*`.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from deeplab_studio.ml.predictor import (
    IMAGENET_MEAN, IMAGENET_STD, DeviceError, PredictionCancelled, PredictionError, Predictor,
    PredictorWarning, resolve_device,
)
from deeplab_studio.ml.prefetch import prefetch_images
from deeplab_studio.ml.tiling import blend_weights, support, tile_starts
from deeplab_studio.storage.images import ImageReadError, read_image

COLOURS = np.array([[20, 20, 20], [220, 60, 50], [50, 90, 220], [60, 200, 70]], dtype=np.uint8)


class ColourNet(nn.Module):
    """Logits = -distance² to each reference colour (in normalised space), blurred 3×3."""

    def __init__(self, colours: np.ndarray = COLOURS) -> None:
        super().__init__()
        ref = (torch.from_numpy(colours).float() / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
        self.register_buffer("ref", ref.view(len(colours), 3, 1, 1))
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        d = ((x[:, None] - self.ref[None]) ** 2).sum(2)  # N×C×H×W
        return F.avg_pool2d(-4.0 * d, 3, stride=1, padding=1, count_include_pad=False)


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(), nn.Conv2d(8, 4, 5, padding=2)).eval()


def blocks_image(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    """Four flat colour regions (a 2×2 grid plus a centre block) with mild noise."""
    rng = np.random.default_rng(seed)
    idx = np.zeros((h, w), dtype=np.int64)
    idx[: h // 2, w // 2 :] = 1
    idx[h // 2 :, : w // 2] = 2
    idx[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = 3
    img = COLOURS[idx].astype(np.int16) + rng.integers(-15, 16, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def noise_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- outputs ----------------------------------------------------------------------------------
def test_outputs_are_consistent_full_size_arrays() -> None:
    img = blocks_image()
    pred = Predictor(ColourNet(), device="cpu").predict(img)
    assert pred.probs.shape == (4, 120, 160) and pred.probs.dtype == np.float32
    assert pred.labels.shape == (120, 160) and pred.labels.dtype == np.uint8
    assert pred.confidence.dtype == np.float32
    np.testing.assert_allclose(pred.probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(pred.labels, pred.probs.argmax(0))
    np.testing.assert_allclose(pred.confidence, pred.probs.max(0))
    assert pred.labels[10, 10] == 0 and pred.labels[10, 150] == 1 and pred.labels[110, 10] == 2
    assert pred.labels[60, 80] == 3


@pytest.mark.parametrize("length, tile, overlap", [(150, 64, 16), (150, 64, 48), (64, 64, 8), (1000, 300, 0)])
def test_tile_weights_cover_the_axis_and_add_to_one(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # at least `overlap` shared
    weights = blend_weights(length, tile, starts, overlap)
    total = np.zeros(length)
    for s, w in zip(starts, weights):
        assert (w >= 0).all()
        total[s : s + tile] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    if len(starts) > 1:  # tile edges that face a neighbour are not used
        assert weights[0][-1] == 0 and weights[1][0] == 0
        lo, hi = support(weights[1])
        assert 0 < lo and (hi < tile or len(starts) == 2)


def test_float16_probs_and_no_probs() -> None:
    img = blocks_image()
    ref = Predictor(ColourNet(), device="cpu").predict(img)
    half = Predictor(ColourNet(), device="cpu", probs_dtype=np.float16).predict(img)
    assert half.probs.dtype == np.float16
    np.testing.assert_allclose(half.probs.astype(np.float32), ref.probs, atol=1e-3)
    none = Predictor(ColourNet(), device="cpu", keep_probs=False, tile_size=64, tile_overlap=16).predict(img)
    assert none.probs is None
    assert (none.labels != ref.labels).mean() < 0.01


def test_input_is_checked_and_gray_converted() -> None:
    p = Predictor(ColourNet(), device="cpu")
    with pytest.raises(ValueError, match="uint8"):
        p.predict(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        p.predict(np.zeros((8, 8, 5), dtype=np.uint8))
    assert p.predict(np.full((9, 11), 20, dtype=np.uint8)).labels.shape == (9, 11)
    with pytest.raises(TypeError):
        Predictor(object(), device="cpu")


# --- tiling, TTA, downscaling -----------------------------------------------------------------
@pytest.mark.parametrize("make_model, overlap", [(ColourNet, 16), (conv_net, 16), (conv_net, 40)])
def test_tiling_matches_a_plain_pass(make_model, overlap: int) -> None:
    img = blocks_image(150, 210) if make_model is ColourNet else noise_image(150, 210)
    model = make_model()
    plain = Predictor(model, device="cpu").predict(img)
    tiled_predictor = Predictor(model, device="cpu", tile_size=64, tile_overlap=overlap)
    if isinstance(model, ColourNet):
        model.calls.clear()
    tiled = tiled_predictor.predict(img)
    if isinstance(model, ColourNet):
        assert len(model.calls) == 3 * 5  # really tiled: 64 px tiles over 150×210 with ≥16 px overlap
        assert all(c[-2:] == (64, 64) for c in model.calls)
    assert (tiled.labels != plain.labels).mean() < 0.01  # only near-ties close to tile seams differ
    np.testing.assert_allclose(tiled.probs.sum(0), 1.0, atol=1e-5)
    # away from the tile seams the blend is exact
    np.testing.assert_allclose(tiled.probs[:, 4:12, 4:12], plain.probs[:, 4:12, 4:12], atol=1e-5)


def test_flip_tta_equals_plain_for_a_mirror_symmetric_model() -> None:
    img = blocks_image()
    plain = Predictor(ColourNet(), device="cpu").predict(img)
    model = ColourNet()
    flip = Predictor(model, device="cpu", tta="flip").predict(img)
    assert model.calls == [(2, 3, 120, 160)]  # one batched pass: image and its mirror
    np.testing.assert_allclose(flip.probs, plain.probs, atol=1e-5)


def test_multiscale_tta_agrees_with_plain_except_at_borders() -> None:
    img = blocks_image()
    plain = Predictor(ColourNet(), device="cpu").predict(img)
    model = ColourNet()
    ms = Predictor(model, device="cpu", tta="ms").predict(img)
    assert sorted(c[-2:] for c in model.calls) == [(90, 120), (120, 160), (150, 200)]
    assert (ms.labels != plain.labels).mean() < 0.02
    np.testing.assert_allclose(ms.probs.sum(0), 1.0, atol=1e-5)
    # ms + tiles together
    tiled_ms = Predictor(ColourNet(), device="cpu", tta="ms", tile_size=64, tile_overlap=16).predict(img)
    assert (tiled_ms.labels != plain.labels).mean() < 0.03


def test_paper_multiscale_tta_uses_table_3_scales() -> None:
    img = blocks_image()
    plain = Predictor(ColourNet(), device="cpu").predict(img)
    model = ColourNet()
    paper = Predictor(model, device="cpu", tta="ms-paper")
    assert paper.scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) and paper.flip
    pred = paper.predict(img)
    assert sorted(c for c in model.calls) == [(2, 3, round(120 * s), round(160 * s)) for s in paper.scales]
    assert (pred.labels != plain.labels).mean() < 0.03
    np.testing.assert_allclose(pred.probs.sum(0), 1.0, atol=1e-5)


def test_cuda_fast_path_code_run_on_the_cpu() -> None:
    """No GPU here: the autocast + channels_last branch of `_forward` (switched on only for CUDA by
    `_move_to`) is forced on for a CPU Predictor, so the same code runs with CPU bfloat16 autocast.
    This checks the branch's plumbing (memory format, dtype back to float32, same labels); it says
    nothing about CUDA kernels or speed."""
    img = blocks_image()
    plain = Predictor(conv_net(), device="cpu").predict(img)
    fast = Predictor(conv_net(), device="cpu")
    fast._channels_last, fast._amp_dtype = True, torch.bfloat16
    seen: list[tuple[bool, torch.dtype]] = []
    fast.model.register_forward_hook(
        lambda m, inp, out: seen.append((inp[0].is_contiguous(memory_format=torch.channels_last), out.dtype)))
    pred = fast.predict(img)
    assert seen == [(True, torch.bfloat16)]  # the model saw channels_last input and ran under autocast
    assert pred.probs.dtype == np.float32
    np.testing.assert_allclose(pred.probs, plain.probs, atol=0.05)
    assert (pred.labels != plain.labels).mean() < 0.02


def test_downscale_mode_predicts_small_and_returns_full_size() -> None:
    img = blocks_image(200, 300)
    model = ColourNet()
    pred = Predictor(model, device="cpu", large_image="downscale", max_side=100).predict(img)
    assert model.calls == [(1, 3, 67, 100)]
    assert pred.probs.shape == (4, 200, 300) and pred.labels.shape == (200, 300)
    np.testing.assert_allclose(pred.probs.sum(0), 1.0, atol=1e-4)
    plain = Predictor(ColourNet(), device="cpu").predict(img)
    assert (pred.labels != plain.labels).mean() < 0.03


def test_large_image_in_tiles_without_keeping_probabilities() -> None:
    img = np.repeat(np.repeat(blocks_image(60, 90), 15, axis=0), 15, axis=1)  # 900×1350
    model = nn.Conv2d(3, 4, 1).eval()
    torch.nn.init.normal_(model.weight, generator=torch.Generator().manual_seed(1))
    pred = Predictor(model, device="cpu", tile_size=384, tile_overlap=48, keep_probs=False).predict(img)
    assert pred.probs is None and pred.labels.shape == (900, 1350)
    plain = Predictor(model, device="cpu").predict(img)  # a 1×1 conv: tiles cannot change anything
    np.testing.assert_array_equal(pred.labels, plain.labels)
    np.testing.assert_allclose(pred.confidence, plain.confidence, atol=1e-5)


# --- cancel ------------------------------------------------------------------------------------
def test_cancel_and_progress_between_tiles() -> None:
    model = ColourNet()
    p = Predictor(model, device="cpu", tile_size=64, tile_overlap=16)
    with pytest.raises(PredictionCancelled):
        p.predict(blocks_image(), cancel=lambda: len(model.calls) >= 2)
    assert len(model.calls) == 2
    steps: list[tuple[int, int]] = []
    p.predict(blocks_image(), progress=lambda done, total: steps.append((done, total)))
    assert steps == [(k, 9) for k in range(1, 10)]  # 120×160 in 64 px tiles (≥16 overlap): 3 × 3
    stop = threading.Event()
    stop.set()
    model.calls.clear()
    with pytest.raises(PredictionCancelled):
        p.predict(blocks_image(), cancel=stop)
    assert model.calls == []


# --- out of memory ----------------------------------------------------------------------------
class OOMAbove(nn.Module):
    """A fake of a small accelerator: raises torch.OutOfMemoryError for inputs over `limit` px."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.inner, self.limit = ColourNet(), limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if max(x.shape[-2:]) > self.limit:
            raise torch.OutOfMemoryError(f"simulated: {tuple(x.shape)} does not fit")
        return self.inner(x)


class OOMOffCPU(nn.Module):
    """A fake accelerator that is always out of memory: fails on any non-CPU device.

    The test runs it on torch's "meta" device, which stands in for a GPU here (no GPU in CI); the
    real work is done by a ColourNet kept outside the module tree, so moving devices loses nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self._host = [ColourNet()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return self._host[0](x)


def test_out_of_memory_retries_with_smaller_tiles() -> None:
    img = blocks_image(150, 210)
    p = Predictor(OOMAbove(80), device="cpu", tile_size=512, tile_overlap=32, min_tile_size=32)
    with pytest.warns(PredictorWarning, match="retrying with"):
        pred = p.predict(img)
    assert p.tile_size <= 80
    plain = Predictor(ColourNet(), device="cpu").predict(img)
    assert (pred.labels != plain.labels).mean() < 0.005
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the smaller tile size sticks: no new warning
        p.predict(img)


def test_out_of_memory_on_the_accelerator_falls_back_to_the_cpu() -> None:
    messages: list[str] = []
    p = Predictor(OOMOffCPU(), device=torch.device("meta"), tile_size=128, min_tile_size=64,
                  on_warning=messages.append)
    pred = p.predict(blocks_image())
    assert p.device.type == "cpu"
    assert any("continuing on the CPU" in m for m in messages)
    plain = Predictor(ColourNet(), device="cpu").predict(blocks_image())
    assert (pred.labels != plain.labels).mean() < 0.005


def test_out_of_memory_everywhere_is_a_clear_error() -> None:
    p = Predictor(OOMAbove(8), device="cpu", tile_size=64, min_tile_size=32, on_warning=lambda m: None)
    with pytest.raises(PredictionError, match="out of memory on the CPU"):
        p.predict(blocks_image())


# --- devices ------------------------------------------------------------------------------------
def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert auto.type == expected
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(DeviceError):
        resolve_device("cuda:99")
    if not torch.backends.mps.is_available():
        with pytest.raises(DeviceError, match="MPS"):
            resolve_device("mps")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_invalid_settings_are_rejected() -> None:
    for kwargs in ({"tta": "rotate"}, {"large_image": "crop"}, {"tile_size": 64, "tile_overlap": 64},
                   {"probs_dtype": np.int8}, {"mean": (0.5, 0.5)}, {"amp": "fp8"}):
        with pytest.raises(ValueError):
            Predictor(ColourNet(), device="cpu", **kwargs)


# --- a real DeepLab and checkpoints ---------------------------------------------------------------
def test_deeplab_model_runs_plain_and_tiled() -> None:
    from deeplab_studio.ml.zoo import build_model

    torch.manual_seed(0)
    model = build_model("deeplabv3plus_mobilenet", num_classes=3).eval()
    img = noise_image(72, 100)
    plain = Predictor(model, device="cpu").predict(img)
    assert plain.probs.shape == (3, 72, 100)
    tiled = Predictor(model, device="cpu", tile_size=64, tile_overlap=16).predict(img)
    assert tiled.probs.shape == (3, 72, 100)
    np.testing.assert_allclose(tiled.probs.sum(0), 1.0, atol=1e-5)


def test_loaded_checkpoint_supplies_normalisation(tmp_path: Path) -> None:
    checkpoints = pytest.importorskip("deeplab_studio.ml.checkpoints")  # lands with the models team
    load_checkpoint, save_checkpoint = checkpoints.load_checkpoint, checkpoints.save_checkpoint
    from deeplab_studio.ml.zoo import build_model

    model = build_model("deeplabv3plus_mobilenet", num_classes=2)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, arch="deeplabv3plus_mobilenet", num_classes=2, class_names=["bg", "fg"],
                    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    loaded = load_checkpoint(path)
    p = Predictor(loaded, device="cpu")
    assert p.num_classes == 2 and p.class_names == ["bg", "fg"]
    assert p._mean_std == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert p.predict(noise_image(40, 48)).probs.shape == (2, 40, 48)


# --- batches ---------------------------------------------------------------------------------------
def _write_images(folder: Path) -> list[Path]:
    paths = []
    for i in range(4):
        path = folder / f"img{i}.png"
        Image.fromarray(blocks_image(40 + 8 * i, 56, seed=i)).save(path)
        paths.append(path)
    bad = folder / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    paths.insert(2, bad)
    return paths


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_predict_many_keeps_order_and_skips_bad_images(tmp_path: Path, workers: int) -> None:
    paths = _write_images(tmp_path)
    p = Predictor(ColourNet(), device="cpu")
    results = list(p.predict_many(paths, read=read_image, decode_workers=workers))
    assert [r[0] for r in results] == paths
    assert isinstance(results[2][1], ImageReadError) and "broken.jpg" in str(results[2][1])
    for (path, pred), h in zip([r for r in results if r[0].suffix == ".png"], (40, 48, 56, 64)):
        assert pred.labels.shape == (h, 56)


def test_predict_many_cancel_and_early_close(tmp_path: Path) -> None:
    paths = _write_images(tmp_path)
    p = Predictor(ColourNet(), device="cpu")
    seen: list[Path] = []
    with pytest.raises(PredictionCancelled):
        for path, _ in p.predict_many(paths, read=read_image, cancel=lambda: len(seen) >= 2):
            seen.append(path)
    assert seen == paths[:2]
    it = prefetch_images(paths, workers=2, read=read_image)
    assert next(it)[0] == paths[0]
    it.close()  # pending decodes are cancelled, the pool shuts down


def test_banded_upsampling_equals_interpolate() -> None:
    from deeplab_studio.ml.prediction import upsample_rows

    small = torch.rand(3, 13, 17)
    full = F.interpolate(small[None], size=(50, 41), mode="bilinear", align_corners=False)[0]
    bands = torch.cat([upsample_rows(small, 50, 41, y, min(50, y + 7)) for y in range(0, 50, 7)], dim=1)
    torch.testing.assert_close(bands, full, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def demo_model():
    from deeplab_studio.ml.checkpoints import load_checkpoint
    from deeplab_studio.models import SCENES_MODEL, bundled_model_path

    with bundled_model_path(SCENES_MODEL) as path:  # shipped in the package: never skipped
        return load_checkpoint(path)


@pytest.mark.parametrize("options", [{"tile_size": 128, "tile_overlap": 32}, {"tta": "flip"}, {"tta": "ms"},
                                     {"tta": "ms-paper"}], ids=["tiles", "flip", "ms", "ms-paper"])
def test_trained_deeplab_gives_the_same_labels_with_tiles_and_tta(demo_model, options) -> None:
    """A real trained DeepLab v3+ (the demo model, generated scenes): a 240×320 image fits one pass."""
    from deeplab_studio.core.metrics import ConfusionMatrix
    from deeplab_studio.core.scenes import generate_scene

    image, truth = generate_scene(240, 320, seed=7)
    plain = Predictor(demo_model, device="cpu").predict(image)
    other = Predictor(demo_model, device="cpu", **options).predict(image)
    assert (other.labels != plain.labels).mean() < 0.01
    for pred in (plain, other):
        cm = ConfusionMatrix(4)
        cm.update(truth, pred.labels)
        assert cm.miou() > 0.9


def test_downscale_without_probs_matches_with_probs() -> None:
    img = noise_image(150, 200)
    with_probs = Predictor(conv_net(), device="cpu", large_image="downscale", max_side=64).predict(img)
    without = Predictor(conv_net(), device="cpu", large_image="downscale", max_side=64, keep_probs=False).predict(img)
    assert without.probs is None
    np.testing.assert_array_equal(without.labels, with_probs.labels)
    np.testing.assert_allclose(without.confidence, with_probs.confidence, atol=1e-5)
