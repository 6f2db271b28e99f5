"""The typed resume state and progress events: the version-1 file format, strict reading, kinds as strings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from deeplab_studio.ml.errors import TrainError
from deeplab_studio.ml.train_config import ProgressKind, TrainConfig, TrainProgress
from deeplab_studio.ml.train_state import _FIELDS, ResumeState, load_train_state


def version1_dict(**over) -> dict:
    """A resume state exactly as the training loop wrote it before ResumeState existed."""
    return {"format": "deeplab-studio-train-state", "version": 1, "arch": "deeplabv3plus_mobilenet",
            "pretrained": False, "init_info": {"init": "random", "build": {"separable": True, "decoder_convs": 1},
                                               "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                               "freeze_bn": False},
            "class_names": ["background", "a"], "config": {**TrainConfig(epochs=3).to_dict(), "future_key": 1},
            "model": {"w": torch.ones(2)}, "optimizer": {"state": {}, "param_groups": []}, "scaler": {},
            "step": 4, "epoch": 2, "batch_in_epoch": 0, "best_miou": 0.5, "best_epoch": 1,
            "history": [{"epoch": 1, "val_miou": 0.5}], "torch_rng": torch.get_rng_state(), "cuda_rng": [],
            **over}


def test_a_version1_file_reads_and_writes_back_the_same_keys(tmp_path: Path) -> None:
    path = tmp_path / "m.last.pt"
    torch.save(version1_dict(), path)
    state = load_train_state(path)
    assert state.config == TrainConfig(epochs=3) and state.step == 4 and state.best_miou == 0.5
    assert torch.equal(state.model["w"], torch.ones(2))
    state.save(path)
    again = torch.load(path, weights_only=True)  # plain data only
    assert set(again) == set(version1_dict()) and again["config"] == TrainConfig(epochs=3).to_dict()
    back = ResumeState.from_dict(again)
    assert torch.equal(back.torch_rng, state.torch_rng) and torch.equal(back.model["w"], state.model["w"])
    assert (back.arch, back.history, back.best_epoch, back.config) == (state.arch, state.history, 1, state.config)
    assert set(_FIELDS) == {f.name for f in dataclasses.fields(ResumeState)}


@pytest.mark.parametrize("change, message", [
    ({"format": "other"}, "not a deeplab-studio resume state"),
    ({"version": 2}, "version 2 is not readable"),
    ({"step": "4"}, "'step' is a str"),
    ({"step": True}, "'step' is a bool"),
    ({"best_miou": "high"}, "'best_miou' is a str"),
    ({"config": {"epochs": 0}}, "'config' is unusable"),
])
def test_anything_else_is_refused_by_name(tmp_path: Path, change: dict, message: str) -> None:
    path = tmp_path / "x.last.pt"
    torch.save(version1_dict(**change), path)
    with pytest.raises(TrainError, match=message) as info:
        load_train_state(path)
    assert str(path) in str(info.value)
    broken = version1_dict()
    del broken["history"]
    with pytest.raises(TrainError, match="lacks 'history'"):
        ResumeState.from_dict(broken)


def test_progress_events_are_keyword_only_and_their_kind_compares_as_a_string() -> None:
    with pytest.raises(TypeError):
        TrainProgress("step", 1)  # type: ignore[misc]
    ev = TrainProgress(kind="step", step=3)
    assert ev.kind is ProgressKind.STEP and ev.kind == "step" and f"{ev.kind}" == "step"
    assert {"step"} <= {ev.kind} and ev.kind in ("message", "step")
    with pytest.raises(ValueError):
        TrainProgress(kind="stepped")
