"""``Trainer``: one training run as an object — set up (or resumed), epochs, validation, saving.

``ml.training.train`` is the public entry point; it builds a ``Trainer`` and calls ``run()``.
The run's position (step, epoch, best score, history) lives on the trainer; everything needed to
continue it exactly is a ``ResumeState`` (``ml.train_state``), saved after every epoch and on cancel.

Data-parallel (``dist``, a rank of a process group: ``ml.distributed``): the model is wrapped in
DistributedDataParallel; ``config.batch_size`` is the global batch, split evenly over the ranks,
and the ``EpochSampler`` gives each rank its slice of every global batch, so the steps, epochs and
resume state mean what they mean for one process (a run may resume with another number of
processes). Every rank starts from the same seed and keeps the same RNG stream, so rank 0's saved
RNG state is every rank's. Validation is shared out and the confusion matrices summed; a cancel on
any rank stops all of them at the same step. Only rank 0 reports progress and writes files.
BatchNorm: SyncBatchNorm on GPUs (statistics over the global batch); on the CPU, where torch has
no SyncBatchNorm, each rank normalises with its own crops and rank 0's running statistics are
broadcast with every forward (DDP's default) — small per-rank batches want ``freeze_bn``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader

from deeplab_studio.core.metrics import ConfusionMatrix
from deeplab_studio.ml.augment import IMAGENET_MEAN, IMAGENET_STD, AugmentParams
from deeplab_studio.ml.datasets import EvalDataset, SegmentationDataset, TrainData
from deeplab_studio.ml.samplers import EpochSampler

from .distributed import DistContext, wrap_model
from .errors import TrainError
from .train_config import RESUME_KEEPS, ProgressFn, ProgressKind, TrainConfig, TrainProgress, TrainResult
from .train_loop import (
    evaluate_model, is_cancelled, loader_workers, make_optimizer, normalizer, poly_lr, resolve_device, set_bn_frozen,
    train_step, worker_init)
from .train_setup import init_model, save_best
from .train_state import ResumeState, last_state_path


@dataclass
class _Pace:
    """This session's timing (a resumed run starts a new one): step rate and validation time."""

    started: float
    steps: int = 0
    val_seconds: float = 0.0
    val_runs: int = 0

    def train_seconds(self) -> float:
        return time.monotonic() - self.started - self.val_seconds

    def eta(self, steps_left: int, validations_left: int) -> float:
        """Seconds left: steps at this session's rate plus the remaining validations."""
        per_step = self.train_seconds() / max(1, self.steps)
        per_val = self.val_seconds / self.val_runs if self.val_runs else 0.0
        return per_step * steps_left + per_val * validations_left


class _Trained(NamedTuple):
    """What the training part of an epoch ended with."""

    batch: int  # batches of the epoch done
    loss: float  # mean loss over them
    lr: float  # the head's learning rate at the last step
    cancelled: bool


def resumed_config(config: TrainConfig, state: ResumeState, source: Path, say: Any) -> TrainConfig:
    """``config`` with the saved run's ``RESUME_KEEPS`` (said when they differ); TrainError when the
    saved run is for another architecture or output stride."""
    saved = state.config
    if config.arch not in (None, saved.arch) or config.output_stride != saved.output_stride:
        raise TrainError(f"{source}: saved for {saved.arch} at output stride {saved.output_stride}")
    kept = {k: getattr(saved, k) for k in RESUME_KEEPS}
    changed = [f"{k} {kept[k]!r} (not {getattr(config, k)!r})" for k in RESUME_KEEPS
               if k not in ("arch", "init") and getattr(config, k) != kept[k]]
    if changed:
        say("resuming with the saved run's " + ", ".join(changed))
    return TrainConfig.from_dict({**config.to_dict(), **kept})


class Trainer:
    """Trains on ``data`` and keeps the best model (by validation mIoU) at ``out_path``.

    ``progress(TrainProgress)`` is called from the calling thread; ``cancel`` (a callable or
    anything with ``is_set()``) is polled before every step and every validation image.
    """

    def __init__(self, config: TrainConfig, data: TrainData, out_path: str | Path, *,
                 progress: ProgressFn | None = None, cancel: Any = None, resume: bool = False,
                 dist: DistContext | None = None) -> None:
        self.started = time.monotonic()
        self.data, self.cancel, self.dist = data, cancel, dist
        self.out_path = Path(out_path)
        self.last_path = last_state_path(self.out_path)
        self.is_main = dist is None or dist.is_main
        self._emit = progress if progress is not None and self.is_main else (lambda p: None)
        if not data.train:
            raise TrainError("no training images")
        if not self.out_path.parent.is_dir():
            raise TrainError(f"{self.out_path.parent}: output folder does not exist")
        self.device = dist.device if dist is not None else resolve_device(config.device)
        self.amp = bool(config.amp and self.device.type == "cuda")
        state = ResumeState.load(self.last_path) if resume else None
        if state is not None:
            if state.class_names != list(data.class_names):
                raise TrainError(f"{self.last_path}: saved for classes {state.class_names}, not {data.class_names}")
            config = resumed_config(config, state, self.last_path, self.say)
        self.config = config
        torch.manual_seed(config.seed)
        self._build_model(state)
        self._build_loaders()
        self.step, self.epoch, self.start_batch = 0, 0, 0
        self.best_miou: float | None = None
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        if state is not None:
            self._restore(state)
        self.say(f"{data.source}: {len(data.train)} training, {len(data.val)} validation images; "
                 f"{self.steps_per_epoch} steps/epoch on {self.device.type}")
        if dist is not None:
            bn = "frozen" if self.freeze_bn else "synchronised" if self.device.type == "cuda" else "per process"
            self.say(f"data-parallel: {dist.world_size} processes ({dist.backend}), {self.rank_batch} crops each "
                     f"per step; BatchNorm statistics {bn}")
        if self.step >= self.total_steps:
            raise TrainError(f"{self.last_path}: already trained {self.step} steps of {self.total_steps}; "
                             "raise --epochs to go on")
        self.pace = _Pace(time.monotonic())

    # --- set-up ------------------------------------------------------------------------------
    def say(self, message: str) -> None:
        self._emit(TrainProgress(kind=ProgressKind.MESSAGE, message=message))

    def _build_model(self, state: ResumeState | None) -> None:
        """The model (fresh from ``config.init`` or the saved weights), optimiser and grad scaler."""
        config, names = self.config, list(self.data.class_names)
        if state is None:
            self.model, self.arch, self.pretrained, self.init_info = init_model(
                config.init, config.arch, names, output_stride=config.output_stride, separable=config.separable,
                say=self.say)
        else:
            from deeplab_studio.ml.zoo import build_model

            self.arch, self.pretrained, self.init_info = state.arch, state.pretrained, dict(state.init_info)
            self.model = build_model(self.arch, num_classes=len(names), output_stride=config.output_stride,
                                     **self.init_info.get("build", {}))
            self.model.load_state_dict(state.model, strict=True)
        self.model.to(self.device)
        self.mean = self.init_info.get("mean", IMAGENET_MEAN)  # as the model expects its inputs
        self.std = self.init_info.get("std", IMAGENET_STD)
        self.freeze_bn = config.freeze_bn or bool(self.init_info.get("freeze_bn"))  # folded BN stays an identity
        self.net = self.model  # what the step runs: the model, or its DDP wrapper
        if self.dist is not None:
            self.net = wrap_model(self.model, self.dist, sync_bn=self.device.type == "cuda" and not self.freeze_bn)
            self.model = self.net.module  # SyncBatchNorm layers share the parameters and state-dict keys
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels
        self.optimizer = make_optimizer(self.model, config, self.pretrained)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.norm = normalizer(self.device, self.mean, self.std)

    def _build_loaders(self) -> None:
        config, data, bs = self.config, self.data, self.config.batch_size
        rank, ranks = (self.dist.rank, self.dist.world_size) if self.dist is not None else (0, 1)
        if bs % ranks:
            raise TrainError(f"the batch size {bs} is not a multiple of the {ranks} processes (each takes an equal share)")
        self.rank_batch = bs // ranks
        self.steps_per_epoch = math.ceil(max(len(data.train), bs) / bs)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.sampler = EpochSampler(len(data.train), config.seed, min_items=self.steps_per_epoch * bs,
                                    rank=rank, ranks=ranks, batch=self.rank_batch if ranks > 1 else 1)
        params = AugmentParams(crop=config.crop, scale=config.scale, jitter=config.jitter)
        workers = loader_workers(config, ranks)
        # own generator: creating a loader iterator must not draw from the global RNG (exact resume)
        kw: dict[str, Any] = dict(num_workers=workers, pin_memory=self.device.type == "cuda",
                                  persistent_workers=workers > 0, generator=torch.Generator().manual_seed(config.seed),
                                  worker_init_fn=worker_init if workers > 0 else None)
        self.train_loader = DataLoader(SegmentationDataset(data.train, data.num_classes, params),
                                       batch_size=self.rank_batch, sampler=self.sampler, drop_last=True, **kw)
        val = data.val[rank::ranks]  # each rank scores its share; the matrices are summed
        self.val_loader = DataLoader(EvalDataset(val, data.num_classes), batch_size=1, **kw) if data.val else None

    def _restore(self, state: ResumeState) -> None:
        """Continue where ``state`` stopped: optimiser, scaler, position, best score, RNGs."""
        self.optimizer.load_state_dict(state.optimizer)
        if self.amp and state.scaler:
            self.scaler.load_state_dict(state.scaler)
        self.step, self.epoch, self.start_batch = state.step, state.epoch, state.batch_in_epoch
        self.best_miou, self.best_epoch = state.best_miou, state.best_epoch
        self.history = list(state.history)
        torch.set_rng_state(state.torch_rng)
        if self.device.type == "cuda" and state.cuda_rng:
            torch.cuda.set_rng_state_all(list(state.cuda_rng))
        self.say(f"resuming at epoch {self.epoch + 1}, step {self.step}")

    # --- the run -----------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train the remaining epochs (or until cancelled); the last event is a "done" one."""
        cancelled = False
        while self.epoch < self.config.epochs and not cancelled:
            cancelled = not self.run_epoch()
        if self.dist is not None:
            self.dist.barrier()  # rank 0's files are written before any rank returns
        saved = self.out_path.is_file() and self.best_epoch is not None
        result = TrainResult(self.out_path, self.last_path, saved, self.best_miou, self.best_epoch,
                             len(self.history), self.step, cancelled, self.history, list(self.data.class_names),
                             time.monotonic() - self.started)
        self._emit(TrainProgress(kind=ProgressKind.DONE, step=self.step, total_steps=self.total_steps,
                                 epoch=self.epoch, epochs=self.config.epochs, best_miou=self.best_miou, eta_s=0.0,
                                 message="cancelled" if cancelled else "finished"))
        return result

    def run_epoch(self) -> bool:
        """Train the rest of the current epoch, validate, save; False when cancelled (state saved)."""
        trained = self.train_batches()
        if trained.cancelled:
            self.save_state(trained.batch)
            self.say(f"cancelled at step {self.step}; "
                     + ("best model kept" if self.best_epoch else "no model saved yet"))
            return False
        t_val = time.monotonic()
        cm = self.validate()
        if self.val_loader is not None and cm is None:  # cancelled during validation: redone on resume
            self.save_state(trained.batch)
            return False
        self.pace.val_seconds += time.monotonic() - t_val
        self.pace.val_runs += 1
        miou = cm.miou() if cm is not None else None
        miou = None if miou is None or math.isnan(miou) else float(miou)
        self.history.append({
            "epoch": self.epoch + 1, "step": self.step, "loss": trained.loss, "lr": trained.lr, "val_miou": miou,
            "val_iou": [None if math.isnan(v) else float(v) for v in cm.iou()] if cm is not None else None,
            "seconds": round(time.monotonic() - self.started, 3)})
        self.epoch, self.start_batch = self.epoch + 1, 0
        improved = miou is None or self.best_miou is None or miou > self.best_miou
        if improved:
            self.best_miou, self.best_epoch = (miou if miou is not None else self.best_miou), self.epoch
            self.save_checkpoint()
        self.save_state(0)
        self._emit(TrainProgress(kind=ProgressKind.EPOCH, step=self.step, total_steps=self.total_steps,
                                 epoch=self.epoch, epochs=self.config.epochs, loss=trained.loss, lr=trained.lr,
                                 val_miou=miou, best_miou=self.best_miou, eta_s=self._eta(),
                                 message="new best" if improved else ""))
        return True

    def train_batches(self) -> _Trained:
        """The optimisation steps of the current epoch from ``start_batch`` on, with "step" events."""
        config, bs = self.config, self.config.batch_size
        self.model.train()
        if self.freeze_bn:  # again each epoch: validation switches the model to eval and back
            set_bn_frozen(self.model)
        self.sampler.set_epoch(self.epoch, self.start_batch * bs)
        batch, epoch_loss, epoch_n = self.start_batch, 0.0, 0
        log_loss, log_n = torch.zeros((), device=self.device), 0
        lr = poly_lr(config.lr, self.step, self.total_steps, config.poly_power)
        all_sum, ranks = (self.dist.all_sum, self.dist.world_size) if self.dist is not None else (None, 1)
        for images, labels in self.train_loader:
            if self.cancelled():
                return _Trained(batch, epoch_loss / max(1, epoch_n), lr, True)
            for g in self.optimizer.param_groups:
                g["lr"] = poly_lr(g["initial_lr"], self.step, self.total_steps, config.poly_power)
            lr = self.optimizer.param_groups[-1]["lr"]
            loss = train_step(self.net, self.optimizer, self.scaler, self.norm(images),
                              labels.to(self.device, non_blocking=True), amp=self.amp, all_sum=all_sum, ranks=ranks)
            self.step, batch, self.pace.steps = self.step + 1, batch + 1, self.pace.steps + 1
            log_loss += loss
            log_n += 1
            if self.step % config.log_every == 0 or batch == self.steps_per_epoch:
                mean_loss = (self.dist.mean(float(log_loss)) if self.dist is not None else float(log_loss)) / log_n
                epoch_loss, epoch_n = epoch_loss + mean_loss * log_n, epoch_n + log_n
                log_loss.zero_()
                log_n = 0
                rate = self.pace.steps * bs / max(self.pace.train_seconds(), 1e-9)
                self._emit(TrainProgress(
                    kind=ProgressKind.STEP, step=self.step, total_steps=self.total_steps, epoch=self.epoch + 1,
                    epochs=config.epochs, loss=mean_loss, lr=lr,
                    val_miou=self.history[-1]["val_miou"] if self.history else None, best_miou=self.best_miou,
                    eta_s=self._eta(), images_per_s=rate))
        return _Trained(batch, epoch_loss / max(1, epoch_n), lr, False)

    def cancelled(self) -> bool:
        """Whether to stop before the next step (data-parallel: whether any rank was asked to)."""
        asked = is_cancelled(self.cancel)
        return self.dist.any(asked) if self.dist is not None else asked

    def validate(self) -> ConfusionMatrix | None:
        """The confusion matrix over the validation split; None without one or when cancelled
        (data-parallel: the sum of the ranks' matrices; None when any rank was cancelled)."""
        if self.val_loader is None:
            return None
        cm = evaluate_model(self.model, self.val_loader, self.data.num_classes, self.device, amp=self.amp,
                            cancel=self.cancel, mean=self.mean, std=self.std)
        if self.dist is None:
            return cm
        parts = self.dist.gather(cm)
        if any(p is None for p in parts):
            return None
        total = parts[0]
        for part in parts[1:]:
            total.merge(part)
        return total

    def _eta(self) -> float:
        return self.pace.eta(self.total_steps - self.step, self.config.epochs - self.epoch)

    # --- saving ------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The training summary stored in the best checkpoint."""
        data = self.data
        return {"data": data.source, "data_info": data.info, "epochs": self.config.epochs,
                "epochs_done": len(self.history), "steps": self.step, "best_miou": self.best_miou,
                "best_epoch": self.best_epoch, "class_names": list(data.class_names), "arch": self.arch,
                "config": self.config.to_dict(), "init": self.init_info, "history": self.history,
                "train_images": len(data.train), "val_images": len(data.val)}

    def save_checkpoint(self) -> None:
        """The current model as the best one, in the own checkpoint format (atomic; rank 0 only)."""
        if not self.is_main:
            return
        save_best(self.out_path, self.model, self.arch, list(self.data.class_names), self.data.class_colors,
                  self.config.output_stride, self.summary(), mean=self.mean, std=self.std)

    def resume_state(self, batch_in_epoch: int) -> ResumeState:
        """Everything needed to continue from here (``batch_in_epoch`` batches into the epoch)."""
        cuda = self.device.type == "cuda"
        return ResumeState(
            arch=self.arch, pretrained=self.pretrained, init_info=self.init_info,
            class_names=list(self.data.class_names), config=self.config,
            model={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            optimizer=self.optimizer.state_dict(), scaler=self.scaler.state_dict() if self.amp else {},
            step=self.step, epoch=self.epoch, batch_in_epoch=batch_in_epoch, best_miou=self.best_miou,
            best_epoch=self.best_epoch, history=self.history, torch_rng=torch.get_rng_state(),
            cuda_rng=list(torch.cuda.get_rng_state_all()) if cuda else [])

    def save_state(self, batch_in_epoch: int) -> None:
        """The resume state (atomic; rank 0 only)."""
        if self.is_main:
            self.resume_state(batch_in_epoch).save(self.last_path)
