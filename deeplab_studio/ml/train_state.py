"""The resume state of a training run: ``<out stem>.last.pt`` beside the best model.

``ResumeState`` is its typed form. On disk it is a ``torch.save`` of a plain dict (tensors,
numbers, strings, lists and dicts only: ``ResumeState.to_dict``), written atomically and read back
with ``torch.load(weights_only=True)``, so nothing is ever unpickled; ``from_dict`` checks every
key and type and refuses anything else with a ``TrainError`` naming the file. The keys are those
of format version 1, so resume files written before this class existed are read unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from deeplab_studio.core.atomic_file import write_atomic

from .errors import TrainError
from .train_config import TrainConfig

STATE_FORMAT = "deeplab-studio-train-state"
STATE_VERSION = 1


def last_state_path(out_path: str | Path) -> Path:
    """Where the resume state of a run writing ``out_path`` lives: ``<stem>.last.pt`` beside it."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.stem + ".last.pt")


def _optional_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _optional_int(v: Any) -> int | None:
    return None if v is None else int(v)


#: field → (the types its stored value may have, how it becomes the field's value)
_FIELDS: dict[str, tuple[tuple[type, ...], Any]] = {
    "arch": ((str,), str), "pretrained": ((bool,), bool), "init_info": ((dict,), dict),
    "class_names": ((list,), list), "config": ((dict,), TrainConfig.from_dict), "model": ((dict,), dict),
    "optimizer": ((dict,), dict), "scaler": ((dict,), dict), "step": ((int,), int), "epoch": ((int,), int),
    "batch_in_epoch": ((int,), int), "best_miou": ((float, int, type(None)), _optional_float),
    "best_epoch": ((int, type(None)), _optional_int), "history": ((list,), list),
    "torch_rng": ((torch.Tensor,), lambda t: t), "cuda_rng": ((list,), list),
}


@dataclass(kw_only=True, eq=False)  # tensors inside: == would be ambiguous
class ResumeState:
    """Everything a run needs to continue at the exact step it stopped at."""

    arch: str
    pretrained: bool  # the backbone started from trained weights (sets the backbone's lr factor)
    init_info: dict[str, Any]  # init_model's summary: build options, mean/std, freeze_bn, classes kept
    class_names: list[str]
    config: TrainConfig
    model: dict[str, torch.Tensor]  # the weights, on the CPU
    optimizer: dict[str, Any]
    scaler: dict[str, Any]  # the AMP grad scaler's state; {} without AMP
    step: int  # optimisation steps done
    epoch: int  # 0-based epoch in progress (the number of validated epochs)
    batch_in_epoch: int  # batches of that epoch done (0 after a validated epoch)
    best_miou: float | None
    best_epoch: int | None
    history: list[dict[str, Any]]  # one dict per validated epoch
    torch_rng: torch.Tensor  # the CPU generator's state
    cuda_rng: list[torch.Tensor]  # every CUDA generator's state; [] off CUDA

    def to_dict(self) -> dict[str, Any]:
        """The on-disk form: format, version and one key per field (the config as a plain dict)."""
        out: dict[str, Any] = {"format": STATE_FORMAT, "version": STATE_VERSION}
        for f in fields(self):
            out[f.name] = getattr(self, f.name)
        out["config"] = self.config.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Any, source: str | Path = "resume state") -> ResumeState:
        """The state of an on-disk dict; TrainError naming ``source`` for anything else."""
        if not isinstance(d, dict) or d.get("format") != STATE_FORMAT:
            raise TrainError(f"{source}: not a deeplab-studio resume state")
        if not isinstance(d.get("version"), int) or d["version"] > STATE_VERSION:
            raise TrainError(f"{source}: resume state version {d.get('version')!r} is not readable by this program")
        values = {}
        for name, (types, convert) in _FIELDS.items():
            if name not in d:
                raise TrainError(f"{source}: the resume state lacks {name!r}")
            if not isinstance(d[name], types) or (types == (int,) and isinstance(d[name], bool)):
                raise TrainError(f"{source}: the resume state's {name!r} is a {type(d[name]).__name__}")
            try:
                values[name] = convert(d[name])
            except (TrainError, TypeError, ValueError) as exc:
                raise TrainError(f"{source}: the resume state's {name!r} is unusable ({exc})") from None
        return cls(**values)

    def save(self, path: Path) -> None:
        """Write the state atomically (the previous file stays whole until the new one is)."""
        state = self.to_dict()
        write_atomic(path, lambda fh: torch.save(state, fh))

    @classmethod
    def load(cls, path: str | Path) -> ResumeState:
        """Read a state written by ``save`` (``weights_only``: no object is ever unpickled)."""
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise TrainError(f"{path}: no resume state (nothing to resume)") from None
        except Exception as exc:  # torch raises many types for corrupt files
            raise TrainError(f"{path}: unreadable resume state ({exc})") from None
        return cls.from_dict(raw, path)


def load_train_state(path: str | Path) -> ResumeState:
    """A resume state written by ``train`` (see ``ResumeState.load``)."""
    return ResumeState.load(path)
