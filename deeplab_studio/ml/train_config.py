"""The plain values of a training run, without torch: its config, its progress events and its result.

``TrainConfig`` defines a run (JSON-safe; stored in checkpoints and resume states),
``TrainProgress`` is one event for a progress callback (keyword-only; ``kind`` a ``ProgressKind``,
a ``str`` enum, so ``event.kind == "step"`` holds), ``TrainResult`` what ``train`` returns.
Importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any, Callable

from .errors import TrainError


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
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if k == "scale" else v) for k, v in d.items() if k in known})


#: what a resumed run takes from the saved one, whatever it is given (the step, the sampler
#: position and the schedule only mean the same with these); epochs, device, threads may change
RESUME_KEEPS = ("arch", "init", "batch_size", "crop", "lr", "momentum", "weight_decay", "optimizer", "poly_power",
                "backbone_lr_mult", "freeze_bn", "seed", "separable", "scale", "jitter")


class ProgressKind(str, Enum):
    """What a ``TrainProgress`` reports; equal (and hashing equal) to its plain string."""

    MESSAGE = "message"  # a line of text for the user
    STEP = "step"  # every ``log_every`` steps and at the end of an epoch
    EPOCH = "epoch"  # an epoch was validated (and saved when it improved: message "new best")
    DONE = "done"  # the run ended (message "finished" or "cancelled")

    def __str__(self) -> str:
        return self.value


@dataclass(kw_only=True)
class TrainProgress:
    """One progress event (built by keyword only)."""

    kind: ProgressKind
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

    def __post_init__(self) -> None:
        self.kind = ProgressKind(self.kind)  # a plain string is accepted and checked


ProgressFn = Callable[[TrainProgress], None]


@dataclass
class TrainResult:
    """How a run ended: where the best model and the resume state are, and what it reached."""

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
