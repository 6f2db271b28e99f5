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

Data-parallel: ``train(..., nproc=N)`` spawns N local processes (``ml.distributed.run_ranks``:
gloo on the CPU, NCCL with one GPU each); a process that already belongs to a process group (one
of those, or one ``torchrun`` started and ``ml.distributed.init_from_env`` joined) trains as its
rank. ``config.batch_size`` is then the global batch; the resume file is the same (see ``trainer``).

The pieces: ``train_config`` (TrainConfig, TrainProgress, TrainResult; torch-free), ``train_state``
(the typed resume state), ``train_setup`` (the initial model, saving the best), ``train_loop`` (one
step, validation, the schedule) and ``trainer`` (``Trainer``, one run). Their public names are
importable from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from deeplab_studio.ml.datasets import TrainData

from .train_config import (  # noqa: F401  (re-exported)
    RESUME_KEEPS, ProgressFn, ProgressKind, TrainConfig, TrainProgress, TrainResult)
from .train_loop import (  # noqa: F401  (re-exported)
    evaluate_model, make_optimizer, normalizer, poly_lr, resolve_device, train_step)
from .train_setup import TrainError, init_model, transfer_weights  # noqa: F401  (re-exported)
from .train_state import ResumeState, last_state_path, load_train_state  # noqa: F401  (re-exported)
from . import distributed
from .trainer import Trainer


def train(config: TrainConfig, data: TrainData, out_path: str | Path, *,
          progress: ProgressFn | None = None, cancel: Any = None, resume: bool = False, nproc: int = 1) -> TrainResult:
    """Train on ``data`` and keep the best model (by validation mIoU) at ``out_path`` (see ``Trainer``),
    with ``config.cpu_threads`` torch threads for the run (per process).

    ``nproc`` > 1: that many data-parallel processes, spawned here; ``progress`` gets rank 0's
    events and the result is rank 0's. Inside a running process group this process is one rank.
    """
    if nproc < 1:
        raise TrainError(f"the number of processes must be at least 1, not {nproc}")
    if nproc > 1:
        if distributed.current() is not None:
            raise TrainError("this process is already one of a process group (torchrun?): it cannot spawn more")
        if config.batch_size % nproc:
            raise TrainError(f"the batch size {config.batch_size} is not a multiple of the {nproc} processes "
                             "(each takes an equal share)")
        return distributed.run_ranks(_train_rank, nproc, (config, data, str(out_path), resume),
                                     on_event=progress, cancel=cancel)
    threads = torch.get_num_threads()
    if config.cpu_threads:
        torch.set_num_threads(max(1, int(config.cpu_threads)))
    try:
        return Trainer(config, data, out_path, progress=progress, cancel=cancel, resume=resume,
                       dist=distributed.current()).run()
    finally:
        torch.set_num_threads(threads)


def _train_rank(emit: ProgressFn | None, stop: Any, config: TrainConfig, data: TrainData, out_path: str,
                resume: bool) -> TrainResult:
    """One spawned rank of ``train(..., nproc=N)``: join the group, train as that rank."""
    distributed.init_from_env(config.device)
    return train(config, data, out_path, progress=emit, cancel=stop, resume=resume)
