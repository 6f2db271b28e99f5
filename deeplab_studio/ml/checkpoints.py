"""Checkpoint files: our ``.safetensors`` format, VainF ``.pth`` files, torchvision weights,
Hugging Face ``MobileNetV2ForSemanticSegmentation`` folders (config.json + weights, see `hf_layout`).

Our format is a safetensors file whose header metadata maps ``"deeplab_studio"`` to a JSON
object (format version, arch, classes, colours, output stride, normalisation, head options,
training summary). PyTorch files are only ever read with ``torch.load(weights_only=True)``;
the numpy scalar types VainF checkpoints carry (``best_score``) are the only extra types
allowed, so a pickle that would run code is refused before anything runs. A zip that would
inflate past a memory budget, odd tensors (sparse, quantized, meta, non-float, NaN) and odd
keys are refused with one line too (see ``checkpoint_safety``).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import nn

from ..core.atomic_file import write_bytes_atomic
from ..core.labels import VOC_CLASSES, voc_colormap
from . import checkpoint_safety as safety
from . import hf_layout, hub
from .checkpoint_safety import CheckpointError
from .layouts import Layout, LayoutError, detect_layout, diff_state, normalise, strip_wrappers
from .tf_mobile import BN_EPS, TF_MEAN, TF_STD
from .zoo import arch_spec, build_model, list_archs

FORMAT_NAME = "deeplab_studio.checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "deeplab_studio"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Output strides the originals were trained at: VainF's released models use 16, torchvision's 8;
# Hugging Face's google/deeplabv3_mobilenet_v2_* configs (and TF DeepLab's evaluation) use 8.
_DEFAULT_STRIDE = {"vainf": 16, "torchvision": 8, "tf_mobile": 16, "hf": 8}

TORCHVISION_WEIGHTS = {
    "deeplabv3_resnet50": "https://download.pytorch.org/models/deeplabv3_resnet50_coco-cd0a2569.pth",
    "deeplabv3_resnet101": "https://download.pytorch.org/models/deeplabv3_resnet101_coco-586e9e4e.pth",
    "deeplabv3_mobilenet_v3_large":
        "https://download.pytorch.org/models/deeplabv3_mobilenet_v3_large-fc3c493d.pth",
}


@dataclass
class LoadedModel:
    """A model ready for inference (eval mode, on the requested device) and its description."""

    model: nn.Module
    arch: str
    num_classes: int
    class_names: list[str] | None
    class_colors: list[tuple[int, int, int]] | None
    output_stride: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    meta: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ saving

def _triple(values: Sequence[float], what: str) -> tuple[float, float, float]:
    out = tuple(float(v) for v in values)
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{what} must be three finite numbers, got {values!r}")
    return out  # type: ignore[return-value]


def _colors(colors, n: int) -> list[list[int]] | None:
    if colors is None:
        return None
    out = [[int(c) for c in rgb] for rgb in np.asarray(colors).tolist()]
    if len(out) != n or any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in out):
        raise ValueError(f"class_colors must be {n} RGB triples in 0..255")
    return out


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, arch: str, num_classes: int,
                    class_names: Sequence[str] | None = None,
                    class_colors: Sequence[Sequence[int]] | None = None,
                    output_stride: int = 16, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD,
                    training: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` as a ``.safetensors`` checkpoint with metadata, atomically.

    The layout is re-detected from the weights, so a file that this function writes can
    always be loaded back; ``arch``/``num_classes`` must agree with the weights.
    """
    path = Path(path)
    state = {k: v.detach().to("cpu").contiguous()
             for k, v in strip_wrappers(model.state_dict()).items()}
    try:
        layout = detect_layout(state)
    except LayoutError as exc:
        raise ValueError(f"cannot save this model as a DeepLab checkpoint: {exc}") from None
    if layout.arch != arch or layout.num_classes != int(num_classes):
        raise ValueError(f"model weights are {layout.arch} with {layout.num_classes} classes, "
                         f"not {arch} with {num_classes}")
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
    names = None if class_names is None else [str(n) for n in class_names]
    if names is not None and len(names) != layout.num_classes:
        raise ValueError(f"{len(names)} class names for {layout.num_classes} classes")
    meta = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "arch": arch,
        "num_classes": layout.num_classes, "class_names": names,
        "class_colors": _colors(class_colors, layout.num_classes),
        "output_stride": int(output_stride), "mean": _triple(mean, "mean"),
        "std": _triple(std, "std"), "separable": layout.separable,
        "decoder_convs": layout.decoder_convs, "training": dict(training or {}),
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
    }
    try:
        text = json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"training summary must be plain JSON data: {exc}") from None
    data = safetensors.torch.save(state, metadata={METADATA_KEY: text})
    write_bytes_atomic(path, data)
    return path


# ----------------------------------------------------------------------------- reading

def _sniff(path: Path) -> str:
    """'safetensors', 'torch' (zip or legacy pickle) or raise for anything else."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(path, "the file is empty")
    with open(path, "rb") as fh:
        head = fh.read(262)
    if head[:4] == b"PK\x03\x04":
        return "torch"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if 8 + header_len > size:
            raise CheckpointError(path, "truncated safetensors file (header runs past the end)")
        return "safetensors"
    if head[257:262] == b"ustar":
        raise CheckpointError(path, "a PyTorch file in the pre-1.0 .tar format, which cannot be "
                              "read safely; re-save it with a current PyTorch")
    raise CheckpointError(path, "not a checkpoint: neither a safetensors nor a PyTorch file")


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for bad files
        raise CheckpointError(path, f"corrupt or truncated safetensors file ({exc})") from None
    return tensors, meta


def _extract_state(path: Path, obj: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights inside a loaded PyTorch object, plus any extras worth keeping."""
    extras: dict[str, Any] = {}
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"not a checkpoint: holds a {type(obj).__name__}, not a dict")
    state: Any = obj
    for key in ("model_state", "state_dict", "model"):
        if isinstance(obj.get(key), Mapping):
            state = obj[key]
            extras["container_key"] = key
            break
    for key in ("cur_itrs", "best_score", "epoch"):
        value = obj.get(key)
        if isinstance(value, (int, float, np.generic)) and not isinstance(value, bool):
            extras[key] = value.item() if isinstance(value, np.generic) else value
    weights = (torch.Tensor, torch.UntypedStorage, torch.TypedStorage)
    if not any(isinstance(v, weights) for v in state.values()):
        top = ", ".join(sorted(map(str, obj))[:6])
        raise CheckpointError(path, f"not a checkpoint: no model weights found (keys: {top})")
    problem = safety.state_problem(state)
    if problem:
        raise CheckpointError(path, f"not a usable state dict: {problem}")
    return dict(state), extras


def _own_meta(path: Path, raw: dict[str, str]) -> dict[str, Any] | None:
    text = raw.get(METADATA_KEY)
    if text is None:
        return None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(path, f"damaged metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(path, "damaged metadata (not a DeepLab Studio checkpoint header)")
    version = meta.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(path, f"checkpoint format version {version!r} is newer than this "
                              f"DeepLab Studio understands ({FORMAT_VERSION})")
    if meta.get("arch") not in list_archs():
        raise CheckpointError(path, f"unknown architecture {meta.get('arch')!r}")
    try:
        n = int(meta["num_classes"])
        meta["mean"] = _triple(meta.get("mean", IMAGENET_MEAN), "mean")
        meta["std"] = _triple(meta.get("std", IMAGENET_STD), "std")
        if min(meta["std"]) <= 0:
            raise ValueError("std must be positive")
        meta["class_colors"] = _colors(meta.get("class_colors"), n)
        names = meta.get("class_names")
        if names is not None and (not isinstance(names, list) or len(names) != n
                                  or not all(isinstance(name, str) for name in names)):
            raise ValueError(f"class_names must be a list of {n} strings")
        if meta.get("output_stride", 16) not in (8, 16):
            raise ValueError(f"output_stride {meta.get('output_stride')!r} is not 8 or 16")
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(path, f"damaged metadata ({exc})") from None
    return meta


def read_metadata(path: str | os.PathLike) -> dict[str, Any] | None:
    """Our header metadata without loading the weights (None for other kinds of file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    if _sniff(path) != "safetensors":
        return None
    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as fh:
            raw = fh.metadata() or {}
    except Exception as exc:
        raise CheckpointError(path, f"corrupt or truncated safetensors file ({exc})") from None
    return _own_meta(path, raw)


def _default_classes(n: int) -> tuple[list[str] | None, list[tuple[int, int, int]] | None]:
    """21-class files from VainF/torchvision are Pascal VOC models; others carry no names."""
    if n == len(VOC_CLASSES):
        return list(VOC_CLASSES), [tuple(int(v) for v in c) for c in voc_colormap(n)]
    return None, None


def _build_and_load(path: Path, state: dict[str, torch.Tensor], layout: Layout,
                    output_stride: int) -> nn.Module:
    try:
        model = build_model(layout.arch, output_stride=output_stride, **layout.build_kwargs())
    except ValueError as exc:
        raise CheckpointError(path, str(exc)) from None
    expected = model.state_dict()
    problem = diff_state(expected, state)
    if problem:
        raise CheckpointError(path, f"weights do not fit {layout.arch}: {problem}")
    problem = safety.value_problem(expected, state)
    if problem:
        raise CheckpointError(path, f"unusable weights: {problem}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(path, f"weights do not fit {layout.arch}: {str(exc).splitlines()[-1]}") from None
    return model


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                    output_stride: int | None = None) -> LoadedModel:
    """Load any supported checkpoint into an eval-mode model on ``device``.

    ``path`` may also be a Hugging Face model folder (config.json with model.safetensors or
    pytorch_model.bin). ``output_stride`` overrides the stride stored in (or assumed for) the
    file: 16 for ours unless saved otherwise and for VainF files, 8 for torchvision weights, the
    config's (else 8) for Hugging Face weights.
    Raises CheckpointError (naming the file) for every file that cannot be used.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "file not found")
    hf: hf_layout.HFConfig | None = None
    if path.is_dir():
        try:
            hf = hf_layout.read_config(path / "config.json")
            path = hf_layout.find_weights(path)
        except hf_layout.HFLayoutError as exc:
            raise CheckpointError(path, str(exc)) from None
    if not path.is_file():
        raise CheckpointError(path, "not a file")
    if output_stride not in (None, 8, 16):
        raise CheckpointError(path, f"output stride must be 8 or 16, not {output_stride}")
    kind = _sniff(path)
    extras: dict[str, Any] = {}
    own: dict[str, Any] | None = None
    if kind == "safetensors":
        state, raw = _read_safetensors(path)
        own = _own_meta(path, raw)
    else:
        state, extras = _extract_state(path, safety.load_pth(path))
    try:
        state, layout = normalise(state, hf_backbone_eps=hf.backbone_eps if hf else BN_EPS)
        if hf is not None and layout.source != "hf":
            raise LayoutError("config.json is a Hugging Face MobileNetV2's but the weights are not")
        if hf is not None:
            hf_layout.check_against(hf, arch_spec(layout.arch).depth_multiplier, layout.num_classes)
    except (LayoutError, hf_layout.HFLayoutError) as exc:
        raise CheckpointError(path, f"not a supported segmentation checkpoint: {exc}") from None

    if own is not None:
        if (own["arch"], own.get("num_classes")) != (layout.arch, layout.num_classes):
            raise CheckpointError(path, f"metadata says {own['arch']} with {own.get('num_classes')} "
                                  f"classes but the weights are {layout.arch} with {layout.num_classes}")
        stride = output_stride or int(own.get("output_stride", 16))
        names, colors = own.get("class_names"), own.get("class_colors")
        colors = [tuple(c) for c in colors] if colors else None
        mean, std = own["mean"], own["std"]
        meta = {"format": "deeplab_studio", **own}
    else:
        strides = arch_spec(layout.arch).output_strides if layout.arch in list_archs() else (8, 16)
        default = hf.output_stride if hf else _DEFAULT_STRIDE[layout.source]
        stride = output_stride or (strides[0] if len(strides) == 1 else default)
        names, colors = _default_classes(layout.num_classes)
        assumed = names is not None
        if hf is not None and hf.class_names is not None:
            names, assumed = hf.class_names, False
        tf_net = arch_spec(layout.arch).head == "tf_mobile"  # inputs scaled to x/127.5 - 1
        mean, std = (TF_MEAN, TF_STD) if tf_net else (IMAGENET_MEAN, IMAGENET_STD)
        fmt = layout.source if kind == "torch" else "safetensors_state_dict"
        fmt = "huggingface" if layout.source == "hf" else fmt
        meta = {"format": fmt, "arch": layout.arch, "separable": layout.separable,
                "decoder_convs": layout.decoder_convs, "class_names_assumed": assumed,
                **extras}
    meta["path"] = str(path)
    model = _build_and_load(path, state, layout, stride)
    try:
        model = model.to(device).eval()
    except (RuntimeError, AssertionError) as exc:
        raise CheckpointError(path, f"cannot move the model to {device}: {exc}") from None
    return LoadedModel(model=model, arch=layout.arch, num_classes=layout.num_classes,
                       class_names=list(names) if names else None, class_colors=colors,
                       output_stride=stride, mean=mean, std=std, meta=meta)


def fetch_torchvision_weights(name: str, progress: hub.Progress | None = None, *,
                              timeout: float = 10.0, verify: bool = False) -> Path:
    """Path to torchvision's pretrained ``deeplabv3_*`` (COCO with VOC labels) weights in the
    torch hub cache, downloading them (hash-checked) when absent; then ``load_checkpoint``.

    A cached file is used without network; its hash is re-checked only with ``verify=True``.
    """
    url = TORCHVISION_WEIGHTS.get(name)
    if url is None:
        raise CheckpointError(name, f"no torchvision weights of that name; known: "
                              f"{', '.join(TORCHVISION_WEIGHTS)}")
    try:
        return hub.download(url, progress=progress, timeout=timeout, verify=verify)
    except hub.WeightsUnavailable as exc:
        raise CheckpointError(hub.cached_path(url), str(exc)) from None
