"""The stateless pieces of a training run: device, optimiser, schedule, one step, validation.

``Trainer`` (``ml.trainer``) strings them together; benchmarks and tests use them one by one.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from deeplab_studio.core.labels import IGNORE
from deeplab_studio.core.metrics import ConfusionMatrix
from deeplab_studio.ml.augment import IMAGENET_MEAN, IMAGENET_STD

from .cancel import is_cancelled
from .device import resolve_device as device_named
from .errors import DeviceError, TrainError
from .train_config import TrainConfig


def resolve_device(name: str | None) -> torch.device:
    """``ml.device.resolve_device`` (``""`` or None meaning "auto"), its error as a TrainError."""
    try:
        return device_named(name or "auto")
    except DeviceError as exc:
        raise TrainError(str(exc)) from None


def poly_lr(base_lr: float, step: int, total_steps: int, power: float = 0.9) -> float:
    """The DeepLab 'poly' schedule: ``base_lr · (1 - step/total)^power``."""
    return base_lr * max(0.0, 1.0 - step / max(1, total_steps)) ** power


# --- model set-up --------------------------------------------------------------------------
def set_bn_frozen(model: nn.Module) -> None:
    """BatchNorm layers to eval mode: running statistics stay as they are (weights still train)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def make_optimizer(model: nn.Module, config: TrainConfig, pretrained: bool) -> torch.optim.Optimizer:
    """SGD (or AdamW) with two groups: the backbone at ``lr · backbone_lr_mult`` (default 0.1 when
    pretrained, else 1) and the rest at ``lr``; each remembers its ``initial_lr`` for the schedule."""
    mult = config.backbone_lr_mult if config.backbone_lr_mult is not None else (0.1 if pretrained else 1.0)
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad]
    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    groups = [{"params": backbone, "lr": config.lr * mult, "initial_lr": config.lr * mult},
              {"params": head, "lr": config.lr, "initial_lr": config.lr}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


# --- the loop ------------------------------------------------------------------------------
def worker_init(_: int) -> None:
    """Loader workers ignore Ctrl-C: the main process turns it into a clean cancel."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def loader_workers(config: TrainConfig, ranks: int = 1) -> int:
    """Loader processes per training process: as configured, else up to 4 (the cores shared out
    among ``ranks`` training processes, one core left for each one's loop)."""
    if config.num_workers is not None:
        return max(0, int(config.num_workers))
    return max(0, min(4, (os.cpu_count() or 1) // max(1, ranks) - 1))


def normalizer(device: torch.device, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 N×3×H×W batches → float ``(x/255 - mean) / std`` on ``device`` (ImageNet's by default)."""
    m = torch.tensor(tuple(mean), device=device, dtype=torch.float32).view(1, 3, 1, 1) * 255
    s = torch.tensor(tuple(std), device=device, dtype=torch.float32).view(1, 3, 1, 1) * 255
    return lambda x: (x.to(device, non_blocking=True).float() - m) / s


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               images: torch.Tensor, labels: torch.Tensor, *, amp: bool = False,
               all_sum: Callable[[torch.Tensor], torch.Tensor] | None = None, ranks: int = 1) -> torch.Tensor:
    """One optimisation step on a normalised batch; returns the (detached) mean pixel loss.

    Cross-entropy over the labelled pixels (255 ignored); a batch with none gives loss 0, not NaN.
    Data-parallel (``model`` a DDP module of ``ranks`` processes, ``all_sum`` summing over them):
    the loss is divided by the labelled pixels of all ranks' batches and multiplied by ``ranks``,
    so DDP's mean of the gradients is the gradient of one process's step on the whole global batch
    (the ranks' mean of the returned losses is its loss).
    """
    target = labels.long()
    with torch.autocast(images.device.type, dtype=torch.float16, enabled=amp):
        logits = model(images)
    labelled = (target != IGNORE).sum()
    if all_sum is not None:
        labelled = all_sum(labelled)
    loss = F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="sum") \
        * ranks / labelled.clamp(min=1)
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
            if is_cancelled(cancel):
                return None
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                pred = model(norm(images)).argmax(1)
            for gt, p in zip(labels.numpy(), pred.cpu().numpy().astype(np.uint8)):
                cm.update(gt, p)
    finally:
        model.train(was_training)
    return cm
