"""GPU checks (marked ``gpu``; skipped without CUDA by tests/ml/conftest.py), run by
benchmarks/gpu_check.sh: autocast and channels_last inference against fp32, the out-of-memory
fallback to tiles and to the CPU, AMP training steps, DDP with NCCL, the tile budget on the GPU.

The models are the bundled VOC model (inference) and a tiny DeepLab v3+ MobileNetV2 (training);
the images the real VOC images in tests/data/voc_real. Every Predictor gets its own copy of the
model (a Predictor moves its module to its device).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab_studio.core.scenes import SCENE_CLASSES, generate_scenes
from deeplab_studio.ml import distributed
from deeplab_studio.ml.checkpoints import load_checkpoint
from deeplab_studio.ml.datasets import from_arrays
from deeplab_studio.ml.predictor import Predictor
from deeplab_studio.ml.tile_budget import TileBudget, available_bytes, measure_cost_per_pixel
from deeplab_studio.ml.train_loop import normalizer, train_step
from deeplab_studio.ml.trainer import Trainer
from deeplab_studio.ml.training import TrainConfig, load_train_state, train
from deeplab_studio.ml.zoo import build_model
from deeplab_studio.models import VOC_MODEL, bundled_model_path
from deeplab_studio.storage.images import read_image

pytestmark = pytest.mark.gpu
VOC_IMAGES = Path(__file__).resolve().parents[1] / "data" / "voc_real" / "images"
ARCH = "deeplabv3plus_mobilenet"


def voc_model():
    """A fresh CPU copy of the bundled VOC model (a Predictor moves the module it is given)."""
    with bundled_model_path(VOC_MODEL) as path:
        return load_checkpoint(path, device="cpu")


def voc_images() -> list[np.ndarray]:
    return [read_image(p) for p in sorted(VOC_IMAGES.iterdir())]


def large_photo(height: int = 3000, width: int = 4000) -> np.ndarray:
    """A real VOC photo upscaled to ``width``×``height`` (12 MP by default)."""
    return np.asarray(Image.fromarray(read_image(VOC_IMAGES / "2011_000025.jpg")).resize((width, height),
                                                                                       Image.BILINEAR))


def agreement(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(sum((x == y).sum() for x, y in zip(a, b)) / sum(x.size for x in a))


def tiny_config(**kw) -> TrainConfig:
    base = dict(arch=ARCH, epochs=2, batch_size=4, crop=64, lr=0.02, init="random", num_workers=0, separable=True,
                log_every=1, device="cuda", amp=True, val_fraction=0.25)
    return TrainConfig(**{**base, **kw})


def scene_data(n: int = 12):
    sc = generate_scenes(n, 96, 96, seed=0)
    return from_arrays([a for a, _ in sc], [b for _, b in sc], SCENE_CLASSES, val_fraction=0.25, seed=0)


# --- inference -----------------------------------------------------------------------------------
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_and_channels_last_agree_with_fp32_on_real_images(amp: str) -> None:
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    images = voc_images()
    reference = Predictor(voc_model(), device="cpu", amp=None, keep_probs=False)
    fp32 = Predictor(voc_model(), device="cuda", amp=None, keep_probs=False)  # channels_last, fp32
    mixed = Predictor(voc_model(), device="cuda", amp=amp, keep_probs=False)
    conv = next(p for p in mixed.model.parameters() if p.ndim == 4)
    assert conv.is_cuda and conv.is_contiguous(memory_format=torch.channels_last)
    ref = [reference.predict(im).labels for im in images]
    got32 = [fp32.predict(im).labels for im in images]
    got = [mixed.predict(im).labels for im in images]
    a32, amix = agreement(ref, got32), agreement(ref, got)
    print(f"argmax agreement with CPU fp32 on {len(images)} VOC images: cuda fp32 channels_last {a32:.4%}, "
          f"{amp} autocast channels_last {amix:.4%}")
    assert a32 >= 0.99 and amix >= 0.99


def test_out_of_memory_falls_back_to_smaller_tiles_with_the_right_labels() -> None:
    image = large_photo()
    messages: list[str] = []
    predictor = Predictor(voc_model(), device="cuda", tile_size=4096, amp=None, keep_probs=False,
                          on_warning=messages.append)
    predictor.predict(image[:512, :512].copy())  # cuDNN set up before the limit
    total = torch.cuda.get_device_properties(predictor.device).total_memory
    torch.cuda.empty_cache()
    try:  # 1 GiB: a 12 MP forward needs several, a 1000 px tile a few hundred MB
        torch.cuda.set_per_process_memory_fraction((1 << 30) / total, predictor.device)
        got = predictor.predict(image)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, predictor.device)
        torch.cuda.empty_cache()
    print("warnings:", *messages, f"tile size now {predictor.tile_size}", sep="\n  ")
    assert messages and all("out of memory" in m and "px tiles" in m for m in messages)
    assert predictor.device.type == "cuda" and predictor.tile_size < 4000
    reference = Predictor(voc_model(), device="cuda", tile_size=predictor.tile_size,
                          tile_overlap=predictor.tile_overlap, amp=None, keep_probs=False).predict(image)
    assert agreement([reference.labels], [got.labels]) >= 0.999


def test_out_of_memory_even_with_the_smallest_tiles_moves_to_the_cpu_with_the_right_labels() -> None:
    image = large_photo(1100, 1100)
    messages: list[str] = []
    predictor = Predictor(voc_model(), device="cuda", tile_size=1024, min_tile_size=512, amp=None, keep_probs=False,
                          on_warning=messages.append)
    torch.cuda.empty_cache()
    try:  # nothing more than what is allocated already (the weights): every forward fails
        torch.cuda.set_per_process_memory_fraction(1e-6, predictor.device)
        got = predictor.predict(image)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, torch.device("cuda"))
        torch.cuda.empty_cache()
    print("warnings:", *messages, sep="\n  ")
    assert predictor.device.type == "cpu" and "continuing on the CPU" in messages[-1]
    assert "retrying with 512px tiles" in messages[0]
    reference = Predictor(voc_model(), device="cpu", tile_size=512, tile_overlap=predictor.tile_overlap, amp=None,
                          keep_probs=False).predict(image)
    np.testing.assert_array_equal(got.labels, reference.labels)


def test_the_tile_budget_measures_the_model_on_the_gpu_and_runs_12_mp_whole_when_it_fits() -> None:
    loaded = voc_model()
    cuda = torch.device("cuda")
    model = loaded.model.to(cuda).eval()
    fp32 = measure_cost_per_pixel(model, cuda)
    bf16 = measure_cost_per_pixel(model.to(memory_format=torch.channels_last), cuda, amp_dtype=torch.bfloat16,
                                  channels_last=True)
    free = available_bytes(cuda)
    print(f"{loaded.arch} on {torch.cuda.get_device_name(cuda)}: {fp32:.0f} B/px fp32, {bf16:.0f} B/px bf16 "
          f"channels_last; {free / 2**30:.1f} GiB free")
    assert 0 < bf16 < 2 * fp32 and free > 0
    image = large_photo()
    calls: list[tuple[int, int]] = []
    predictor = Predictor(voc_model(), device="cuda", tile_size="auto", keep_probs=False)
    predictor.predict(image, progress=lambda done, n: calls.append((done, n)))
    fits = TileBudget().tile_for(3000, 4000, model=predictor.model, device=cuda, channels=21, keep_probs=False,
                                 amp_dtype=torch.bfloat16, channels_last=True) == 4000
    assert (calls == [(1, 1)]) == fits
    print(f"12 MP with tile_size='auto': {'whole' if fits else f'{predictor.tile_size} px tiles'}")


# --- training ------------------------------------------------------------------------------------
def test_amp_steps_run_in_half_precision_keep_the_loss_finite_and_change_the_weights() -> None:
    cuda = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(ARCH, num_classes=4, separable=True).to(cuda).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dtypes: list[torch.dtype] = []
    model.classifier.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda")
    norm = normalizer(cuda)
    sc = generate_scenes(8, 64, 64, seed=3)
    images = torch.from_numpy(np.stack([a for a, _ in sc]).transpose(0, 3, 1, 2).copy())
    labels = torch.from_numpy(np.stack([b for _, b in sc])).to(cuda)
    losses = [float(train_step(model, optimizer, scaler, norm(images), labels, amp=True)) for _ in range(8)]
    print("AMP losses:", [f"{v:.4f}" for v in losses], "scale", scaler.get_scale())
    assert dtypes and all(d == torch.float16 for d in dtypes)
    assert all(np.isfinite(losses)) and min(losses[1:]) < losses[0]  # overflowing steps are skipped, not all
    moved = max(float((model.state_dict()[k].float() - before[k].float()).abs().max()) for k in before)
    assert moved > 1e-3


def test_a_training_run_on_the_gpu_with_amp_saves_a_model_that_loads(tmp_path: Path) -> None:
    out = tmp_path / "model.safetensors"
    events = []
    result = train(tiny_config(), scene_data(), out, progress=events.append)
    assert result.saved and result.steps > 0
    assert all(np.isfinite(e.loss) for e in events if e.kind == "step")
    state = load_train_state(result.last_path)
    assert state.scaler and np.isfinite(state.scaler["scale"])  # the grad scaler ran
    assert load_checkpoint(out, device="cuda").class_names == list(SCENE_CLASSES)


def _trainer_rank(emit, stop, config: TrainConfig, data, out: str):
    """A spawned rank that runs the Trainer as its rank even in a group of one (the DDP code path)."""
    ctx = distributed.init_from_env(config.device)
    result = Trainer(config, data, out, progress=emit, cancel=stop, dist=ctx).run()
    return result, ctx.backend, ctx.world_size


def test_one_rank_nccl_smoke(tmp_path: Path) -> None:
    out = tmp_path / "model.safetensors"
    events = []
    result, backend, world = distributed.run_ranks(_trainer_rank, 1, (tiny_config(), scene_data(), str(out)),
                                                   on_event=events.append)
    assert (backend, world) == ("nccl", 1) and result.saved and not result.cancelled
    assert any("1 processes (nccl)" in e.message and "synchronised" in e.message for e in events)
    assert load_checkpoint(out, device="cpu").class_names == list(SCENE_CLASSES)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason=f"DDP with NCCL needs 2 GPUs; "
                                                          f"{torch.cuda.device_count()} visible")
def test_ddp_with_nccl_on_two_gpus(tmp_path: Path) -> None:
    out = tmp_path / "model.safetensors"
    events = []
    result = train(tiny_config(), scene_data(), out, progress=events.append, nproc=2)
    assert result.saved and result.epochs_done == 2
    assert any("2 processes (nccl), 2 crops each" in e.message and "synchronised" in e.message for e in events)
    assert load_checkpoint(out, device="cpu").arch == ARCH
    assert load_train_state(result.last_path).step == result.steps
