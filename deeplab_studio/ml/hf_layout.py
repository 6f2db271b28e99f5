"""Hugging Face ``transformers`` weights of TF DeepLab's mobile v3, renamed onto `tf_mobile`.

`MobileNetV2ForSemanticSegmentation` (e.g. ``google/deeplabv3_mobilenet_v2_1.0_513``) is the same
network as `tf_mobile.TFMobileDeepLabV3`: TF "SAME" padding (``tf_padding``), ReLU6, TF's output
stride rule, [image pooling, 1×1 branch] → projection → logits. Its names map one to one:

- ``mobilenet_v2.conv_stem.first_conv`` → ``backbone.features.0``; the stem's ``conv_3x3`` and
  ``reduce_1x1`` → block 1's ``depthwise`` and ``project`` (``features.1``);
- ``mobilenet_v2.layer.<i>.{expand_1x1, conv_3x3, reduce_1x1}`` →
  ``backbone.features.<i+2>.{expand, depthwise, project}``;
- ``segmentation_head.{conv_pool, conv_aspp, conv_projection}`` →
  ``classifier.{image_pooling, aspp0, concat_projection}``, ``segmentation_head.classifier`` →
  ``classifier.logits``; ``convolution``/``normalization`` → ``conv``/``bn``;
- ``mobilenet_v2.conv_1x1`` (the 1280-channel layer, computed but unused by segmentation) is dropped.

Batch-norm epsilons: transformers, like TF DeepLab and `tf_mobile`, uses 1e-5 in the head and
``config.layer_norm_eps`` (1e-3) in the MobileNetV2; a file with another backbone epsilon has its
batch-norm scales rescaled by sqrt((var + 1e-3) / (var + eps)), which makes eval-mode outputs
equal. transformers' own post-processing resizes logits with ``align_corners=False``;
`tf_mobile` keeps the TF graph's ``align_corners=True`` (see the module docstring there).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.labels import LabelSet, LabelSetError
from .errors import HFLayoutError  # noqa: F401 (also imported from here)
from .tf_mobile import BN_EPS, HEAD_BN_EPS

HF_MODEL_TYPE = "mobilenet_v2"
HF_SEGMENTATION = "MobileNetV2ForSemanticSegmentation"
HF_HEAD_EPS = 1e-5  # transformers' MobileNetV2DeepLabV3Plus (and TF DeepLab's ASPP)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
CONFIG_MAX_BYTES = 1024 ** 2
_DEFAULT_LABEL = re.compile(r"LABEL_\d+")

_CONV_BN = {"convolution": "conv", "normalization": "bn"}
_STEM = {"first_conv": "features.0", "conv_3x3": "features.1.depthwise", "reduce_1x1": "features.1.project"}
_BLOCK = {"expand_1x1": "expand", "conv_3x3": "depthwise", "reduce_1x1": "project"}
_HEAD = {"conv_pool": "image_pooling", "conv_aspp": "aspp0", "conv_projection": "concat_projection"}
_RE_STEM = re.compile(r"mobilenet_v2\.conv_stem\.(first_conv|conv_3x3|reduce_1x1)\.(convolution|normalization)\.(\w+)")
_RE_BLOCK = re.compile(r"mobilenet_v2\.layer\.(\d{1,3})\.(expand_1x1|conv_3x3|reduce_1x1)\.(convolution|normalization)\.(\w+)")
_RE_HEAD = re.compile(r"segmentation_head\.(conv_pool|conv_aspp|conv_projection)\.(convolution|normalization)\.(\w+)")
_RE_LOGITS = re.compile(r"segmentation_head\.classifier\.convolution\.(weight|bias)")


@dataclass(frozen=True)
class HFConfig:
    """What ``config.json`` adds to the weights."""

    output_stride: int
    backbone_eps: float
    depth_multiplier: float
    num_labels: int | None
    class_names: list[str] | None


# ------------------------------------------------------------------------------ state dicts

def is_hf_layout(keys: Iterable[str]) -> bool:
    """Keys of a transformers MobileNetV2 (any head)."""
    return any(k.startswith(("mobilenet_v2.", "segmentation_head.")) for k in keys)


def _rename(key: str) -> str | None:
    """Our name for one HF key; None to drop it; the key itself when unknown (reported later)."""
    if key.startswith("mobilenet_v2.conv_1x1."):
        return None
    if m := _RE_STEM.fullmatch(key):
        return f"backbone.{_STEM[m[1]]}.{_CONV_BN[m[2]]}.{m[3]}"
    if m := _RE_BLOCK.fullmatch(key):
        return f"backbone.features.{int(m[1]) + 2}.{_BLOCK[m[2]]}.{_CONV_BN[m[3]]}.{m[4]}"
    if m := _RE_HEAD.fullmatch(key):
        return f"classifier.{_HEAD[m[1]]}.{_CONV_BN[m[2]]}.{m[3]}"
    if m := _RE_LOGITS.fullmatch(key):
        return f"classifier.logits.{m[1]}"
    return key


def _refold_eps(state: dict[str, torch.Tensor], prefix: str, eps: float, target: float) -> None:
    """Scale a batch norm's weight so that eps `target` gives what `eps` gave (eval mode)."""
    weight, var = state.get(prefix + "weight"), state.get(prefix + "running_var")
    if eps == target or weight is None or var is None or weight.shape != var.shape:
        return  # equal already, or missing/mis-shaped (the key check names it)
    var64 = var.to(torch.float64)
    scale = torch.sqrt((var64 + target) / (var64 + eps))
    state[prefix + "weight"] = (weight.to(torch.float64) * scale).to(weight.dtype)


def from_hf(state: Mapping[str, torch.Tensor], *, backbone_eps: float = BN_EPS) -> dict[str, torch.Tensor]:
    """Rename a transformers ``MobileNetV2ForSemanticSegmentation`` state dict onto `tf_mobile`'s
    names, fold the epsilon difference into the batch-norm scales, add missing
    ``num_batches_tracked``. Raises HFLayoutError for a model of another shape."""
    if not any(k.startswith("segmentation_head.") for k in state):
        raise HFLayoutError("a Hugging Face MobileNetV2 without a segmentation head (an image classifier?); "
                            f"only {HF_SEGMENTATION} weights can be used")
    if any(k.startswith("mobilenet_v2.conv_stem.expand_1x1.") for k in state):
        raise HFLayoutError("a MobileNetV2 with first_layer_is_expansion=False (an extra 1×1 layer in the "
                            "stem) is not TF DeepLab's network")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = _rename(key)
        if new is not None:
            out[new] = value
    _check_widths(out)
    for prefix in {k.rsplit(".", 1)[0] + "." for k in out if k.endswith(".bn.running_var")}:
        if prefix.startswith("classifier."):
            _refold_eps(out, prefix, HF_HEAD_EPS, HEAD_BN_EPS)
        else:
            _refold_eps(out, prefix, backbone_eps, BN_EPS)
        out.setdefault(prefix + "num_batches_tracked", torch.zeros((), dtype=torch.long))
    return out


def _check_widths(state: Mapping[str, torch.Tensor]) -> None:
    """transformers rounds widths to multiples of ``depth_divisible_by`` (8 by default); at depth
    multiplier 0.5 TF DeepLab rounds to 1 (block 2 has 12 channels, not 16)."""
    stem = state.get("backbone.features.0.conv.weight")
    block2 = state.get("backbone.features.2.project.conv.weight")
    if stem is None or block2 is None or stem.ndim != 4 or block2.ndim != 4:
        return
    if int(stem.shape[0]) == 16 and int(block2.shape[0]) != 12:
        raise HFLayoutError(f"depth multiplier 0.5 with {block2.shape[0]} channels in the second block: "
                            "TF DeepLab's 0.5 network (depth_divisible_by=1) has 12; models with "
                            "depth_divisible_by=8 are not supported")


# ------------------------------------------------------------------------------ folders

def find_weights(folder: Path) -> Path:
    """``model.safetensors`` (preferred) or ``pytorch_model.bin`` inside a Hugging Face folder."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    if (folder / "model.safetensors.index.json").exists() or (folder / "pytorch_model.bin.index.json").exists():
        raise HFLayoutError("sharded Hugging Face weights (*.index.json) are not supported")
    raise HFLayoutError(f"no {' or '.join(WEIGHT_FILES)} in this folder")


def _number(config: Mapping, key: str, default: float, kinds: tuple[type, ...] = (int, float)) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise HFLayoutError(f"config.json: {key} must be a number, not {value!r}")
    return value


def _class_names(config: Mapping) -> list[str] | None:
    """id2label as a list of validated names; None when absent or transformers' LABEL_<i>."""
    id2label = config.get("id2label")
    if id2label is None:
        return None
    if not isinstance(id2label, Mapping) or not id2label:
        raise HFLayoutError("config.json: id2label must be a non-empty object")
    try:
        by_index = {int(k): v for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise HFLayoutError("config.json: id2label keys must be class indices") from None
    if sorted(by_index) != list(range(len(by_index))):
        raise HFLayoutError(f"config.json: id2label must number its classes 0..{len(by_index) - 1}")
    names = [by_index[i] for i in range(len(by_index))]
    if not all(isinstance(n, str) for n in names):
        raise HFLayoutError("config.json: id2label values must be strings")
    if all(_DEFAULT_LABEL.fullmatch(n) for n in names):
        return None
    try:
        return LabelSet(names).names
    except LabelSetError as exc:
        raise HFLayoutError(f"config.json: id2label: {exc}") from None


def _check_kind(config: Mapping) -> None:
    if config.get("model_type") != HF_MODEL_TYPE:
        raise HFLayoutError(f"config.json describes a {config.get('model_type')!r} model, not "
                            f"{HF_MODEL_TYPE!r} ({HF_SEGMENTATION})")
    archs = config.get("architectures")
    if archs is not None and (not isinstance(archs, list) or HF_SEGMENTATION not in archs):
        raise HFLayoutError(f"config.json: architectures {archs!r} are not {HF_SEGMENTATION}")
    for key, want in (("tf_padding", True), ("hidden_act", "relu6"), ("first_layer_is_expansion", True),
                      ("num_channels", 3)):
        if config.get(key, want) != want:
            raise HFLayoutError(f"config.json: {key}={config.get(key)!r} is not TF DeepLab's "
                                f"network (needs {want!r})")


def read_config(path: Path) -> HFConfig:
    """Parse and check a transformers ``config.json`` of a MobileNetV2 segmentation model."""
    try:
        if path.stat().st_size > CONFIG_MAX_BYTES:
            raise HFLayoutError(f"config.json is larger than {CONFIG_MAX_BYTES // 1024} KiB")
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HFLayoutError("not a file, nor a Hugging Face model folder (no config.json)") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise HFLayoutError(f"config.json is not readable JSON ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(config, dict):
        raise HFLayoutError("config.json must hold a JSON object")
    _check_kind(config)
    stride = _number(config, "output_stride", 32, (int,))
    if stride not in (8, 16):
        raise HFLayoutError(f"config.json: output_stride {stride} is not supported (8 or 16)")
    eps = _number(config, "layer_norm_eps", 1e-3)
    if not eps > 0:
        raise HFLayoutError(f"config.json: layer_norm_eps must be positive, not {eps!r}")
    labels = config.get("num_labels")
    labels = None if labels is None else int(_number(config, "num_labels", 0, (int,)))
    names = _class_names(config)
    if names is not None and labels is not None and len(names) != labels:
        raise HFLayoutError(f"config.json: {len(names)} labels in id2label but num_labels is {labels}")
    return HFConfig(int(stride), float(eps), float(_number(config, "depth_multiplier", 1.0)),
                    labels, names)


def check_against(config: HFConfig, depth_multiplier: float, num_classes: int) -> None:
    """Refuse a config.json that disagrees with the weights it came with."""
    if abs(config.depth_multiplier - depth_multiplier) > 1e-9:
        raise HFLayoutError(f"config.json says depth multiplier {config.depth_multiplier} but the "
                            f"weights are {depth_multiplier}")
    count = config.num_labels if config.class_names is None else len(config.class_names)
    if count is not None and count != num_classes:
        raise HFLayoutError(f"config.json lists {count} classes but the weights have {num_classes}")
