"""Train or fine-tune a DeepLab model: ``train(config, data, out_path, progress=..., cancel=...)``.

The recipe of the DeepLab papers: random scale 0.5–2.0, crop with padding to 255, flip, mild
colour jitter; pixel-wise cross-entropy ignoring 255; SGD with momentum and the poly learning
rate ``lr·(1 - step/total)^0.9`` (AdamW optional); optionally frozen BatchNorm statistics for
small batches (always for weights with batch norm folded in, such as the bundled VOC model); inputs
normalised as the initial model expects (its checkpoint's mean/std; ImageNet's for new models, TF
DeepLab's 0.5/0.5 for its architectures); mixed precision on CUDA. Every epoch the validation split is scored with a
confusion matrix and, when its mIoU improves, the model is written atomically in the project's
own checkpoint format with a training summary. A resume state (``<out stem>.last.pt``: only
tensors and plain containers, loadable with ``weights_only=True``) is written atomically after
every epoch and on cancel, so ``train(..., resume=True)`` continues from the exact step (with the
saved run's batch size, crop, schedule and seed: ``RESUME_KEEPS``; only epochs, device, threads change).

Built to be driven by a GUI worker: ``progress(TrainProgress)`` is called from the training
thread, ``cancel`` (a callable or anything with ``is_set()``) is polled before every step.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from deeplab_studio.core.labels import IGNORE
from deeplab_studio.core.metrics import ConfusionMatrix
from deeplab_studio.ml.augment import IMAGENET_MEAN, IMAGENET_STD, AugmentParams
from deeplab_studio.ml.datasets import EpochSampler, EvalDataset, SegmentationDataset, TrainData
from deeplab_studio.ml.train_setup import (  # noqa: F401  (re-exported)
    DEFAULT_ARCH, STATE_FORMAT, STATE_VERSION, TrainError, atomic_torch_save, class_head_keys, init_model,
    last_state_path, load_train_state, save_best, transfer_weights)


@dataclass
class TrainConfig:
    """Everything that defines a training run (plain values, so it travels in JSON)."""

    arch: str | None = None  # None: the init checkpoint's arch, else deeplabv3plus_mobilenet
    epochs: int = 30
    batch_size: int = 8
    crop: int = 321
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    optimizer: str = "sgd"  # "sgd" or "adamw"
    poly_power: float = 0.9
    backbone_lr_mult: float | None = None  # None: 0.1 for a pretrained backbone, else 1
    freeze_bn: bool = False
    device: str = "auto"
    amp: bool = True  # used on CUDA only
    num_workers: int | None = None  # None: up to 4, fewer on small machines
    cpu_threads: int | None = None  # torch intra-op threads while training on the CPU (None: as set)
    seed: int = 0
    val_fraction: float = 0.2
    init: str | None = None  # None/"imagenet": ImageNet backbone if available; "random"; a bundled model; a checkpoint
    output_stride: int = 16
    separable: bool = False  # depthwise-separable ASPP/decoder convs (lighter; new models only)
    scale: tuple[float, float] = (0.5, 2.0)
    jitter: float = 0.2
    log_every: int = 10  # steps between "step" progress events

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise TrainError(f"optimizer must be 'sgd' or 'adamw', not {self.optimizer!r}")
        for name in ("epochs", "batch_size", "crop", "log_every"):
            if int(getattr(self, name)) < 1:
                raise TrainError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.lr <= 0:
            raise TrainError(f"lr must be positive, not {self.lr}")
        if self.output_stride not in (8, 16):
            raise TrainError(f"output_stride must be 8 or 16, not {self.output_stride}")
        if not 0 <= self.val_fraction < 1:
            raise TrainError(f"val_fraction must be in [0, 1), not {self.val_fraction}")
        self.scale = (float(self.scale[0]), float(self.scale[1]))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scale"] = list(self.scale)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if k == "scale" else v) for k, v in d.items() if k in known})


#: what a resumed run takes from the saved one, whatever it is given (the step, the sampler
#: position and the schedule only mean the same with these); epochs, device, threads may change
RESUME_KEEPS = ("arch", "init", "batch_size", "crop", "lr", "momentum", "weight_decay", "optimizer", "poly_power",
                "backbone_lr_mult", "freeze_bn", "seed", "separable", "scale", "jitter")


@dataclass
class TrainProgress:
    """One progress event: ``kind`` is "message", "step", "epoch" or "done"."""

    kind: str
    step: int = 0
    total_steps: int = 0
    epoch: int = 0  # 1-based epoch in progress / just finished
    epochs: int = 0
    loss: float | None = None  # mean training loss since the previous event (epoch: whole epoch)
    lr: float = 0.0
    val_miou: float | None = None
    best_miou: float | None = None
    eta_s: float | None = None
    images_per_s: float | None = None
    message: str = ""


@dataclass
class TrainResult:
    out_path: Path
    last_path: Path
    saved: bool  # a best checkpoint exists at out_path
    best_miou: float | None
    best_epoch: int | None
    epochs_done: int
    steps: int
    cancelled: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    seconds: float = 0.0


ProgressFn = Callable[[TrainProgress], None]


def resolve_device(name: str) -> torch.device:
    """"auto" → CUDA if available, else MPS, else CPU; otherwise the named device (checked)."""
    if name in ("auto", "", None):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise TrainError(f"unknown device {name!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"device {name!r} requested but CUDA is not available")
    return dev


def _is_cancelled(cancel: Any) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def poly_lr(base_lr: float, step: int, total_steps: int, power: float = 0.9) -> float:
    """The DeepLab 'poly' schedule: ``base_lr · (1 - step/total)^power``."""
    return base_lr * max(0.0, 1.0 - step / max(1, total_steps)) ** power


# --- model set-up --------------------------------------------------------------------------
def _set_bn_frozen(model: nn.Module) -> None:
    """BatchNorm layers to eval mode: running statistics stay as they are (weights still train)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def make_optimizer(model: nn.Module, config: TrainConfig, pretrained: bool) -> torch.optim.Optimizer:
    mult = config.backbone_lr_mult if config.backbone_lr_mult is not None else (0.1 if pretrained else 1.0)
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad]
    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    groups = [{"params": backbone, "lr": config.lr * mult, "initial_lr": config.lr * mult},
              {"params": head, "lr": config.lr, "initial_lr": config.lr}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


# --- the loop ------------------------------------------------------------------------------
def _worker_init(_: int) -> None:
    """Loader workers ignore Ctrl-C: the main process turns it into a clean cancel."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _workers(config: TrainConfig) -> int:
    if config.num_workers is not None:
        return max(0, int(config.num_workers))
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def normalizer(device: torch.device, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 N×3×H×W batches → float ``(x/255 - mean) / std`` on ``device`` (ImageNet's by default)."""
    m = torch.tensor(tuple(mean), device=device, dtype=torch.float32).view(1, 3, 1, 1) * 255
    s = torch.tensor(tuple(std), device=device, dtype=torch.float32).view(1, 3, 1, 1) * 255
    return lambda x: (x.to(device, non_blocking=True).float() - m) / s


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               images: torch.Tensor, labels: torch.Tensor, *, amp: bool = False) -> torch.Tensor:
    """One optimisation step on a normalised batch; returns the (detached) mean pixel loss.

    Cross-entropy over the labelled pixels (255 ignored); a batch with none gives loss 0, not NaN.
    """
    target = labels.long()
    with torch.autocast(images.device.type, dtype=torch.float16, enabled=amp):
        logits = model(images)
    loss = F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="sum") \
        / (target != IGNORE).sum().clamp(min=1)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: DataLoader, num_classes: int, device: torch.device, *,
                   amp: bool = False, cancel: Any = None, mean=IMAGENET_MEAN, std=IMAGENET_STD
                   ) -> ConfusionMatrix | None:
    """Confusion matrix of ``model`` over ``loader`` (uint8 images, labels); None if cancelled."""
    was_training = model.training
    model.eval()
    norm = normalizer(device, mean, std)
    cm = ConfusionMatrix(num_classes, ignore_index=IGNORE)
    try:
        for images, labels in loader:
            if _is_cancelled(cancel):
                return None
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                pred = model(norm(images)).argmax(1)
            for gt, p in zip(labels.numpy(), pred.cpu().numpy().astype(np.uint8)):
                cm.update(gt, p)
    finally:
        model.train(was_training)
    return cm


def train(config: TrainConfig, data: TrainData, out_path: str | Path, *,
          progress: ProgressFn | None = None, cancel: Any = None, resume: bool = False) -> TrainResult:
    """Train on ``data`` and keep the best model (by validation mIoU) at ``out_path``."""
    threads = torch.get_num_threads()
    if config.cpu_threads:
        torch.set_num_threads(max(1, int(config.cpu_threads)))
    try:
        return _train(config, data, out_path, progress=progress, cancel=cancel, resume=resume)
    finally:
        torch.set_num_threads(threads)


def _train(config: TrainConfig, data: TrainData, out_path: str | Path, *, progress: ProgressFn | None,
           cancel: Any, resume: bool) -> TrainResult:
    t_start = time.monotonic()
    out_path = Path(out_path)
    last_path = last_state_path(out_path)
    emit = progress or (lambda p: None)

    def say(msg: str) -> None:
        emit(TrainProgress("message", message=msg))

    if not data.train:
        raise TrainError("no training images")
    if not out_path.parent.is_dir():
        raise TrainError(f"{out_path.parent}: output folder does not exist")
    device = resolve_device(config.device)
    use_amp = bool(config.amp and device.type == "cuda")
    state = load_train_state(last_path) if resume else None
    if state is not None:
        if state["class_names"] != list(data.class_names):
            raise TrainError(f"{last_path}: saved for classes {state['class_names']}, not {data.class_names}")
        saved = TrainConfig.from_dict(state["config"])
        if config.arch not in (None, saved.arch) or config.output_stride != saved.output_stride:
            raise TrainError(f"{last_path}: saved for {saved.arch} at output stride {saved.output_stride}")
        kept = {k: getattr(saved, k) for k in RESUME_KEEPS}
        changed = [f"{k} {kept[k]!r} (not {getattr(config, k)!r})" for k in RESUME_KEEPS
                   if k not in ("arch", "init") and getattr(config, k) != kept[k]]
        if changed:
            say("resuming with the saved run's " + ", ".join(changed))
        config = TrainConfig.from_dict({**config.to_dict(), **kept})

    torch.manual_seed(config.seed)
    if state is None:
        model, arch, pretrained, init_info = init_model(config.init, config.arch, list(data.class_names),
                                                        output_stride=config.output_stride,
                                                        separable=config.separable, say=say)
    else:
        from deeplab_studio.ml.zoo import build_model

        arch, pretrained, init_info = state["arch"], bool(state["pretrained"]), dict(state["init_info"])
        model = build_model(arch, num_classes=data.num_classes, output_stride=config.output_stride,
                            **init_info.get("build", {}))
        model.load_state_dict(state["model"], strict=True)
    model.to(device)
    mean, std = init_info.get("mean", IMAGENET_MEAN), init_info.get("std", IMAGENET_STD)  # as the model expects
    freeze_bn = config.freeze_bn or bool(init_info.get("freeze_bn"))  # folded batch norm stays an identity
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels
    optimizer = make_optimizer(model, config, pretrained)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)

    bs = config.batch_size
    steps_per_epoch = math.ceil(max(len(data.train), bs) / bs)
    total_steps = steps_per_epoch * config.epochs
    sampler = EpochSampler(len(data.train), config.seed, min_items=steps_per_epoch * bs)
    params = AugmentParams(crop=config.crop, scale=config.scale, jitter=config.jitter)
    workers = _workers(config)
    # own generator: creating a loader iterator must not draw from the global RNG (exact resume)
    loader_kw = dict(num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                     generator=torch.Generator().manual_seed(config.seed),
                     worker_init_fn=_worker_init if workers > 0 else None)
    train_loader = DataLoader(SegmentationDataset(data.train, data.num_classes, params), batch_size=bs,
                              sampler=sampler, drop_last=True, **loader_kw)
    val_loader = DataLoader(EvalDataset(data.val, data.num_classes), batch_size=1, **loader_kw) if data.val else None

    step, epoch, start_batch = 0, 0, 0
    best_miou: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = []
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if use_amp and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step, epoch, start_batch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        best_miou, best_epoch = state["best_miou"], state["best_epoch"]
        history = list(state["history"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng"):
            torch.cuda.set_rng_state_all(list(state["cuda_rng"]))
        say(f"resuming at epoch {epoch + 1}, step {step}")
    say(f"{data.source}: {len(data.train)} training, {len(data.val)} validation images; "
        f"{steps_per_epoch} steps/epoch on {device.type}")
    if step >= total_steps:
        raise TrainError(f"{last_path}: already trained {step} steps of {total_steps}; raise --epochs to go on")

    def summary() -> dict[str, Any]:
        return {"data": data.source, "data_info": data.info, "epochs": config.epochs,
                "epochs_done": len(history), "steps": step, "best_miou": best_miou, "best_epoch": best_epoch,
                "class_names": list(data.class_names), "arch": arch, "config": config.to_dict(),
                "init": init_info, "history": history, "train_images": len(data.train),
                "val_images": len(data.val)}

    def save_state(batch_in_epoch: int) -> None:
        atomic_torch_save({
            "format": STATE_FORMAT, "version": STATE_VERSION, "arch": arch, "pretrained": pretrained,
            "init_info": init_info, "class_names": list(data.class_names), "config": config.to_dict(),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if use_amp else {},
            "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "best_miou": best_miou,
            "best_epoch": best_epoch, "history": history, "torch_rng": torch.get_rng_state(),
            "cuda_rng": list(torch.cuda.get_rng_state_all()) if device.type == "cuda" else [],
        }, last_path)

    norm = normalizer(device, mean, std)
    cancelled = False
    t_run, steps_run, val_seconds, val_runs = time.monotonic(), 0, 0.0, 0

    def eta() -> float:
        """Seconds left: steps at this run's step rate plus the remaining validations."""
        per_step = (time.monotonic() - t_run - val_seconds) / max(1, steps_run)
        per_val = val_seconds / val_runs if val_runs else 0.0
        return per_step * (total_steps - step) + per_val * (config.epochs - epoch)

    while epoch < config.epochs and not cancelled:
        model.train()
        if freeze_bn:  # again each epoch: validation switches the model to eval and back
            _set_bn_frozen(model)
        sampler.set_epoch(epoch, start_batch * bs)
        batch_i, epoch_loss, epoch_n = start_batch, 0.0, 0
        log_loss, log_n = torch.zeros((), device=device), 0
        lr_now = poly_lr(config.lr, step, total_steps, config.poly_power)
        for images, labels in train_loader:
            if _is_cancelled(cancel):
                cancelled = True
                break
            for g in optimizer.param_groups:
                g["lr"] = poly_lr(g["initial_lr"], step, total_steps, config.poly_power)
            lr_now = optimizer.param_groups[-1]["lr"]
            loss = train_step(model, optimizer, scaler, norm(images), labels.to(device, non_blocking=True),
                              amp=use_amp)
            step, batch_i, steps_run = step + 1, batch_i + 1, steps_run + 1
            log_loss += loss
            log_n += 1
            if step % config.log_every == 0 or batch_i == steps_per_epoch:
                mean_loss = float(log_loss) / log_n
                epoch_loss, epoch_n = epoch_loss + mean_loss * log_n, epoch_n + log_n
                log_loss.zero_()
                log_n = 0
                rate = steps_run * bs / max(time.monotonic() - t_run - val_seconds, 1e-9)
                emit(TrainProgress("step", step, total_steps, epoch + 1, config.epochs, mean_loss, lr_now,
                                   history[-1]["val_miou"] if history else None, best_miou, eta(), rate))
        if cancelled:
            save_state(batch_i)
            say(f"cancelled at step {step}; " + ("best model kept" if best_epoch else "no model saved yet"))
            break
        t_val = time.monotonic()
        cm = evaluate_model(model, val_loader, data.num_classes, device, amp=use_amp, cancel=cancel,
                            mean=mean, std=std) if val_loader is not None else None
        if val_loader is not None and cm is None:  # cancelled during validation: redo it on resume
            cancelled = True
            save_state(batch_i)
            break
        val_seconds, val_runs = val_seconds + time.monotonic() - t_val, val_runs + 1
        miou = cm.miou() if cm is not None else None
        miou = None if miou is None or math.isnan(miou) else float(miou)
        history.append({"epoch": epoch + 1, "step": step, "loss": epoch_loss / max(1, epoch_n), "lr": lr_now,
                        "val_miou": miou, "val_iou": [None if math.isnan(v) else float(v) for v in cm.iou()]
                        if cm is not None else None, "seconds": round(time.monotonic() - t_start, 3)})
        epoch, start_batch = epoch + 1, 0
        improved = miou is None or best_miou is None or miou > best_miou
        if improved:
            best_miou, best_epoch = (miou if miou is not None else best_miou), epoch
            save_best(out_path, model, arch, list(data.class_names), data.class_colors, config.output_stride,
                      summary(), mean=mean, std=std)
        save_state(0)
        emit(TrainProgress("epoch", step, total_steps, epoch, config.epochs, history[-1]["loss"], lr_now, miou,
                           best_miou, eta(), message="new best" if improved else ""))
    result = TrainResult(out_path, last_path, out_path.is_file() and best_epoch is not None, best_miou, best_epoch,
                         len(history), step, cancelled, history, list(data.class_names),
                         time.monotonic() - t_start)
    emit(TrainProgress("done", step, total_steps, epoch, config.epochs, None, 0.0, None, best_miou, 0.0,
                       message="cancelled" if cancelled else "finished"))
    return result
