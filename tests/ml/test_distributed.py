"""Data-parallel training on the CPU (gloo): the sharded sampler, two ranks stepping like one process
with their global batch, `train(nproc=2)` (disjoint samples, one loadable checkpoint, resume), a
failing rank's error, and `torchrun -m deeplab_studio train`.

Tiny: 48×48 generated scenes, 32 px crops, DeepLab v3+ MobileNetV2 with separable head, one
thread per process. Spawning ranks imports torch in each, so those tests are marked slow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from deeplab_studio.core.labels import voc_colormap
from deeplab_studio.core.scenes import SCENE_CLASSES, generate_scenes
from deeplab_studio.ml import distributed
from deeplab_studio.ml.augment import AugmentParams
from deeplab_studio.ml.checkpoints import load_checkpoint
from deeplab_studio.ml.datasets import (
    DatasetError, EpochSampler, Sample, SegmentationDataset, TrainData, from_arrays)
from deeplab_studio.ml.train_loop import normalizer, train_step
from deeplab_studio.ml.training import TrainConfig, TrainError, load_train_state, train
from deeplab_studio.ml.zoo import build_model
from deeplab_studio.storage.images import read_image

ARCH = "deeplabv3plus_mobilenet"
GLOBAL_BATCH = 4


def tiny_config(**kw) -> TrainConfig:
    base = dict(arch=ARCH, epochs=1, batch_size=GLOBAL_BATCH, crop=32, lr=0.02, init="random", num_workers=0,
                separable=True, scale=(0.75, 1.5), log_every=1, device="cpu", cpu_threads=1, val_fraction=0.0)
    return TrainConfig(**{**base, **kw})


def scene_samples(n: int, seed: int = 0) -> list[Sample]:
    sc = generate_scenes(n, 48, 48, seed=seed)
    return from_arrays([a for a, _ in sc], [b for _, b in sc], SCENE_CLASSES, val_fraction=0.0, seed=seed).train


# --- the sampler ----------------------------------------------------------------------------
def test_rank_shares_are_disjoint_and_make_up_the_one_process_batches() -> None:
    n, ranks, per_rank, steps = 10, 3, 2, 4
    batch = ranks * per_rank
    one = EpochSampler(n, seed=7, min_items=steps * batch)
    shards = [EpochSampler(n, seed=7, min_items=steps * batch, rank=r, ranks=ranks, batch=per_rank)
              for r in range(ranks)]
    for epoch, start_batch in ((0, 0), (3, 0), (3, 1)):  # a resumed epoch starts at a global batch
        for s in (one, *shards):
            s.set_epoch(epoch, start_batch * batch)
        single = list(one)
        parts = [list(s) for s in shards]
        assert [len(p) for p in parts] == [len(s) for s in shards] == [(steps - start_batch) * per_rank] * ranks
        for k in range(steps - start_batch):  # step k: the ranks' slices, in rank order, are the single batch
            assert sum((p[k * per_rank:(k + 1) * per_rank] for p in parts), []) == single[k * batch:(k + 1) * batch]
        positions = [set(range(r * per_rank, len(single), batch)) for r in range(ranks)]
        assert not set.intersection(*positions)
    # an incomplete last global batch is no rank's: every rank takes the same number of steps
    ragged = [EpochSampler(5, 0, rank=r, ranks=2, batch=2) for r in range(2)]
    assert [len(list(s)) for s in ragged] == [len(s) for s in ragged] == [2, 2]
    with pytest.raises(ValueError):
        EpochSampler(5, 0, rank=2, ranks=2)


# --- two ranks step like one process -----------------------------------------------------------
def _steps(samples: list[Sample], ctx: distributed.DistContext | None, *, steps: int, global_count: bool = True
           ) -> dict[str, torch.Tensor]:
    """``steps`` SGD steps of a seeded model in eval mode (BatchNorm statistics and dropout off, so
    a step depends on the batch alone) on this rank's share of the global batches; the weights."""
    torch.manual_seed(0)
    model = build_model(ARCH, num_classes=len(SCENE_CLASSES), separable=True).eval()
    rank, ranks = (ctx.rank, ctx.world_size) if ctx else (0, 1)
    net = distributed.wrap_model(model, ctx, sync_bn=False) if ctx else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    per_rank = GLOBAL_BATCH // ranks
    sampler = EpochSampler(len(samples), 3, min_items=steps * GLOBAL_BATCH, rank=rank, ranks=ranks, batch=per_rank)
    # crops of 40 px from 48 px scenes scaled by 0.5-1: padded with ignored pixels, a different count per crop
    data = SegmentationDataset(samples, len(SCENE_CLASSES), AugmentParams(crop=40, scale=(0.5, 1.0), jitter=0.2))
    norm = normalizer(torch.device("cpu"))
    for images, labels in islice(DataLoader(data, batch_size=per_rank, sampler=sampler), steps):
        if global_count:
            train_step(net, optimizer, scaler, norm(images), labels, all_sum=ctx.all_sum if ctx else None, ranks=ranks)
        else:  # each rank's loss over its own labelled pixels, DDP's mean of the gradients
            train_step(net, optimizer, scaler, norm(images), labels)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _steps_rank(emit, stop, samples: list[Sample], steps: int) -> tuple[dict, dict]:
    """A spawned rank: the weights after ``steps`` data-parallel steps, with the loss normalised by
    all ranks' labelled pixels (as training does) and, for contrast, by the rank's own."""
    ctx = distributed.init_from_env("cpu")
    return _steps(samples, ctx, steps=steps), _steps(samples, ctx, steps=steps, global_count=False)


@pytest.mark.slow
def test_two_ranks_of_batch_b_step_like_one_process_of_batch_2b(one_torch_thread) -> None:
    samples = scene_samples(8)
    single = _steps(samples, None, steps=2)
    ddp, ddp_local_count = distributed.run_ranks(_steps_rank, 2, (samples, 2))
    torch.manual_seed(0)
    start = build_model(ARCH, num_classes=len(SCENE_CLASSES), separable=True).state_dict()

    def gap(a: dict, b: dict) -> float:
        return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)

    moved, diff, naive = gap(single, start), gap(ddp, single), gap(ddp_local_count, single)
    print(f"weights moved {moved:.2e}; 2 ranks vs 1 process {diff:.2e}; per-rank loss normalisation {naive:.2e}")
    assert moved > 1e-3  # the steps did change the weights
    assert diff < 1e-5 * moved  # summation order only (measured: 7e-9 of a 7.6e-2 move)
    assert naive > 10 * diff  # the check tells the two normalisations apart


# --- train(nproc=2) ------------------------------------------------------------------------------
class LoggedReader:
    """Reads an image (storage's reader) and notes its name in ``<log>/rank<RANK>.txt``."""

    def __init__(self, log: Path) -> None:
        self.log = log

    def __call__(self, path: Path) -> np.ndarray:
        with open(self.log / f"rank{os.environ.get('RANK', '-')}.txt", "a", encoding="utf-8") as fh:
            fh.write(Path(path).stem + "\n")
        return read_image(path)


def logged_data(folder: Path, n_train: int) -> TrainData:
    """``n_train`` scene images read through a LoggedReader (labels in memory), 2 in-memory val images."""
    folder.mkdir()
    scenes = generate_scenes(n_train + 2, 48, 48, seed=1)
    train_samples = []
    for i, (image, labels) in enumerate(scenes[:n_train]):
        Image.fromarray(image).save(folder / f"s{i}.png")
        train_samples.append(Sample(folder / f"s{i}.png", labels, f"s{i}", read_image=LoggedReader(folder)))
    val = [Sample(a, b, f"v{i}") for i, (a, b) in enumerate(scenes[n_train:])]
    return TrainData(train_samples, val, list(SCENE_CLASSES), source="logged scenes")


def reads(folder: Path) -> dict[str, list[str]]:
    out = {}
    for f in sorted(folder.glob("rank*.txt")):
        out[f.stem] = f.read_text(encoding="utf-8").split()
        f.unlink()
    return out


@pytest.mark.slow
def test_two_gloo_processes_train_on_disjoint_shares_write_one_checkpoint_and_resume(tmp_path: Path) -> None:
    data = logged_data(tmp_path / "data", 8)
    out = tmp_path / "model.safetensors"
    events = []
    result = train(tiny_config(epochs=1), data, out, progress=events.append, nproc=2)
    assert result.saved and not result.cancelled and result.steps == 2 and result.epochs_done == 1
    seen = reads(tmp_path / "data")
    assert sorted(seen) == ["rank0", "rank1"]  # both ranks read images, no other process did
    assert len(seen["rank0"]) == len(seen["rank1"]) == 4
    assert not set(seen["rank0"]) & set(seen["rank1"])
    assert set(seen["rank0"]) | set(seen["rank1"]) == {f"s{i}" for i in range(8)}
    kinds = [e.kind for e in events]  # rank 0's events only, each once
    assert kinds.count("epoch") == 1 and kinds.count("done") == 1 and kinds.count("step") == 2
    assert sum("data-parallel: 2 processes (gloo)" in e.message for e in events) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "model.last.pt", "model.safetensors"]
    loaded = load_checkpoint(out, device="cpu")
    assert loaded.arch == ARCH and loaded.class_names == list(SCENE_CLASSES)
    assert load_train_state(result.last_path).step == 2

    resumed = train(tiny_config(epochs=2), data, out, progress=events.append, resume=True, nproc=2)
    assert resumed.steps == 4 and resumed.epochs_done == 2 and not resumed.cancelled
    assert any("resuming at epoch 2, step 2" in e.message for e in events)
    seen = reads(tmp_path / "data")
    assert len(seen["rank0"]) == len(seen["rank1"]) == 4 and not set(seen["rank0"]) & set(seen["rank1"])
    # the same resume file goes on in one process (global batch and steps mean the same)
    alone = train(tiny_config(epochs=3), data, out, resume=True)
    assert alone.steps == 6 and alone.epochs_done == 3
    assert load_train_state(alone.last_path).step == 6


@pytest.mark.slow
def test_a_cancel_stops_every_rank_after_the_same_step_and_the_run_resumes(tmp_path: Path) -> None:
    data = logged_data(tmp_path / "data", 16)  # 4 steps per epoch
    out = tmp_path / "model.safetensors"
    stop = threading.Event()
    events = []

    def on_event(event) -> None:
        events.append(event)
        if event.kind == "step":
            stop.set()  # after the first step: the ranks see it a step or two later, all at the same one

    result = train(tiny_config(epochs=1), data, out, progress=on_event, cancel=stop, nproc=2)
    assert result.cancelled and 1 <= result.steps < 4 and not result.saved
    state = load_train_state(result.last_path)
    assert (state.step, state.epoch, state.batch_in_epoch) == (result.steps, 0, result.steps)
    seen = reads(tmp_path / "data")  # the same number of batches on both ranks (one read ahead at most)
    assert len(seen["rank0"]) == len(seen["rank1"]) in (2 * result.steps, 2 * result.steps + 2)
    assert not set(seen["rank0"]) & set(seen["rank1"])
    resumed = train(tiny_config(epochs=1), data, out, resume=True, nproc=2)
    assert not resumed.cancelled and resumed.steps == 4 and resumed.saved
    seen = reads(tmp_path / "data")
    assert len(seen["rank0"]) == len(seen["rank1"]) == 2 * (4 - result.steps)


def test_a_batch_the_processes_cannot_share_is_refused_before_any_spawn(tmp_path: Path) -> None:
    data = TrainData(scene_samples(4), [], list(SCENE_CLASSES))
    with pytest.raises(TrainError, match="not a multiple of the 3 processes"):
        train(tiny_config(batch_size=4), data, tmp_path / "m.safetensors", nproc=3)
    with pytest.raises(TrainError, match="at least 1"):
        train(tiny_config(), data, tmp_path / "m.safetensors", nproc=0)


@pytest.mark.slow
def test_an_error_in_one_rank_stops_the_run_with_its_message(tmp_path: Path) -> None:
    data = logged_data(tmp_path / "data", 8)
    (tmp_path / "data" / "s5.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="s5.png"):  # the rank's own error, raised here
        train(tiny_config(), data, tmp_path / "m.safetensors", nproc=2)
    assert not (tmp_path / "m.safetensors").exists()


def test_cli_nproc_is_checked_before_anything_starts(tmp_path: Path, monkeypatch, capsys) -> None:
    from deeplab_studio.cli import main

    write_voc(tmp_path / "voc", 6)
    args = ["train", str(tmp_path / "voc"), "--out", str(tmp_path / "m.safetensors"), "--init", "random",
            "--arch", ARCH, "--batch-size", "4"]

    def error(extra: list[str]) -> str:
        assert main([*args, *extra]) == 2
        return capsys.readouterr().err

    assert "--nproc must be at least 1" in error(["--nproc", "0"])
    assert "batch size 4 is not a multiple of the 3 processes" in error(["--nproc", "3"])
    for key, value in dict(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="1").items():
        monkeypatch.setenv(key, value)  # as torchrun starts a rank
    assert distributed.launched_by_torchrun()
    assert "torchrun started this process as one rank: leave out --nproc" in error(["--nproc", "2"])
    assert not (tmp_path / "m.safetensors").exists()


# --- torchrun ----------------------------------------------------------------------------------
def write_voc(root: Path, n: int) -> None:
    """A VOC folder of ``n`` generated scenes, the last two the val split."""
    sets = root / "ImageSets" / "Segmentation"
    for d in (root / "JPEGImages", root / "SegmentationClass", sets):
        d.mkdir(parents=True)
    palette = voc_colormap(256).astype(np.uint8).ravel().tolist()
    ids = [f"img{i}" for i in range(n)]
    for i, (image, labels) in zip(ids, generate_scenes(n, 48, 48, seed=2)):
        Image.fromarray(image).save(root / "JPEGImages" / f"{i}.jpg", quality=95)
        png = Image.fromarray(labels.astype(np.uint8), mode="P")
        png.putpalette(palette)
        png.save(root / "SegmentationClass" / f"{i}.png")
    (sets / "train.txt").write_text("\n".join(ids[:-2]) + "\n")
    (sets / "val.txt").write_text("\n".join(ids[-2:]) + "\n")
    (root / "class_names.txt").write_text("\n".join(SCENE_CLASSES) + "\n")


@pytest.mark.slow
def test_torchrun_starts_one_rank_per_process_and_rank_0_prints_and_writes(tmp_path: Path) -> None:
    write_voc(tmp_path / "voc", 10)
    out = tmp_path / "model.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "deeplab_studio", "train", str(tmp_path / "voc"), "--out", str(out), "--arch", ARCH,
           "--init", "random", "--separable", "--epochs", "1", "--batch-size", "4", "--crop", "32",
           "--workers", "0", "--device", "cpu", "--threads", "1", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("data-parallel: 2 processes (gloo), 2 crops each per step") == 1, proc.stderr
    assert proc.stderr.count("finished after 2 steps") == 1, proc.stderr
    assert load_checkpoint(out, device="cpu").class_names == list(SCENE_CLASSES)
    assert load_train_state(out.with_name("model.last.pt")).step == 2
