"""State-dict layouts: recognise a DeepLab state dict from its keys and shapes.

Knows VainF/DeepLabV3Plus-Pytorch's names (our own models use them too) and torchvision's
``deeplabv3_*`` segmentation weights, which are renamed onto the v3 model here, and Hugging Face's
``MobileNetV2ForSemanticSegmentation``, renamed onto `tf_mobile` by `hf_layout`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from . import hf_layout
from .errors import LayoutError  # noqa: F401 (also imported from here)
from .tf_mobile import BN_EPS

Tensors = Mapping[str, torch.Tensor]

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP, torch.compile


@dataclass(frozen=True)
class Layout:
    """What a state dict describes: everything ``build_model`` needs except the stride."""

    arch: str
    num_classes: int
    separable: bool = False
    decoder_convs: int = 1
    source: str = "vainf"  # "vainf", "torchvision", "tf_mobile" or "hf" naming in the original file

    def build_kwargs(self) -> dict:
        return {"num_classes": self.num_classes, "separable": self.separable,
                "decoder_convs": self.decoder_convs}


def strip_wrappers(state: Tensors) -> dict[str, torch.Tensor]:
    """Drop ``module.`` / ``_orig_mod.`` prefixes left by DataParallel or torch.compile."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def is_torchvision_layout(keys) -> bool:
    """torchvision's DeepLabV3 puts the head directly in ``classifier.<i>``."""
    return "classifier.0.convs.0.0.weight" in keys and "classifier.classifier.0.convs.0.0.weight" not in keys


def from_torchvision(state: Tensors) -> dict[str, torch.Tensor]:
    """Rename torchvision ``deeplabv3_*`` weights onto VainF's v3 layout; ``aux_classifier``
    (a training-time head) is dropped."""
    out = {}
    for key, value in state.items():
        if key.startswith("aux_classifier."):
            continue
        if key.startswith("classifier."):
            key = "classifier." + key
        out[key] = value
    return out


def _count_blocks(keys, layer: str) -> int:
    pattern = re.compile(rf"^backbone\.{layer}\.(\d+)\.")
    return len({m.group(1) for k in keys if (m := pattern.match(k))})


def _backbone_of(keys) -> str:
    if "backbone.layer4.0.conv1.weight" in keys:
        blocks = _count_blocks(keys, "layer3")
        depth = {6: 50, 23: 101}.get(blocks)
        if depth is None:
            raise LayoutError(f"ResNet backbone with {blocks} blocks in layer3 is neither "
                              "ResNet-50 (6) nor ResNet-101 (23)")
        return f"resnet{depth}"
    if "backbone.low_level_features.0.0.weight" in keys:
        return "mobilenet"
    if "backbone.block1.rep.0.weight" in keys or any(k.startswith("backbone.block1.") for k in keys):
        raise LayoutError("Xception backbone is not supported (ResNet-50/101, MobileNetV2 and "
                          "MobileNetV3-Large are)")
    if any(k.startswith("backbone.stage4.") or k.startswith("backbone.transition1.") for k in keys):
        raise LayoutError("HRNetV2 backbone is not supported (ResNet-50/101, MobileNetV2 and "
                          "MobileNetV3-Large are)")
    if "backbone.0.0.weight" in keys and "backbone.16.0.weight" in keys:
        return "mobilenet_v3_large"  # torchvision's layout
    sample = sorted(k for k in keys if k.startswith("backbone."))[:3]
    raise LayoutError(f"unknown backbone (first keys: {sample or 'no backbone.* keys'})")


def _tf_mobile_layout(state: Tensors, source: str) -> Layout:
    """TF DeepLab's mobile v3 (our `tf_mobile` names): depth multiplier from the stem's width."""
    stem_weight = state.get("backbone.features.0.conv.weight")
    if stem_weight is None or stem_weight.ndim != 4:
        raise LayoutError("backbone.features.0.conv.weight (the stem) is missing or not a conv weight")
    stem = stem_weight.shape[0]
    arch = {32: "deeplabv3_mobilenetv2_tf", 16: "deeplabv3_mobilenetv2_tf_dm05"}.get(int(stem))
    if arch is None:
        raise LayoutError(f"mobile DeepLab v3 with a {stem}-channel stem: only depth multipliers 1.0 (32) "
                          "and 0.5 (16) are supported")
    logits = state.get("classifier.logits.weight")
    if logits is None or logits.ndim != 4:
        raise LayoutError("classifier.logits.weight is missing or not a conv weight")
    return Layout(arch, int(logits.shape[0]), source=source)


def detect_layout(state: Tensors, *, source: str = "vainf") -> Layout:
    """Architecture, class count, separable convs and decoder depth from VainF-named keys."""
    keys = set(state)
    if source == "hf" or ("classifier.concat_projection.conv.weight" in keys
                          and "backbone.features.0.conv.weight" in keys):
        return _tf_mobile_layout(state, "tf_mobile" if source == "vainf" else source)
    if "classifier.aspp.project.0.weight" in keys and "classifier.project.0.weight" in keys:
        head, aspp = "deeplabv3plus", "classifier.aspp."
    elif "classifier.classifier.0.project.0.weight" in keys:
        head, aspp = "deeplabv3", "classifier.classifier.0."
    else:
        sample = sorted(keys)[:4]
        raise LayoutError(f"no DeepLab v3/v3+ head found (first keys: {sample})")
    backbone = _backbone_of(keys)
    separable = f"{aspp}convs.1.0.body.0.weight" in keys
    decoder_convs = 1
    if head == "deeplabv3plus":
        decoder_convs = 2 if "classifier.classifier.6.weight" in keys else 1
        final = f"classifier.classifier.{3 * decoder_convs}.weight"
    else:
        final = "classifier.classifier.4.weight"
    weight = state.get(final)
    if weight is None or weight.ndim != 4:
        raise LayoutError(f"final classifier weight {final} is missing or not a conv weight")
    return Layout(f"{head}_{backbone}", int(weight.shape[0]), separable, decoder_convs, source)


def normalise(state: Tensors, *, hf_backbone_eps: float = BN_EPS) -> tuple[dict[str, torch.Tensor], Layout]:
    """Strip wrapper prefixes, map torchvision and Hugging Face names, and detect the layout
    (``hf_backbone_eps``: the MobileNetV2's batch-norm epsilon from a Hugging Face config.json)."""
    state = strip_wrappers(state)
    if hf_layout.is_hf_layout(state):
        try:
            state = hf_layout.from_hf(state, backbone_eps=hf_backbone_eps)
        except hf_layout.HFLayoutError as exc:
            raise LayoutError(str(exc)) from None
        return state, detect_layout(state, source="hf")
    if is_torchvision_layout(state):
        state = from_torchvision(state)
        return state, detect_layout(state, source="torchvision")
    return state, detect_layout(state)


def diff_state(expected: Tensors, got: Tensors, *, limit: int = 6) -> str | None:
    """A readable description of missing / unexpected / mis-shaped keys, or None if equal."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k} {tuple(got[k].shape)} (model expects {tuple(expected[k].shape)})"
              for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k].shape)]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches", shapes)):
        if items:
            more = f" … and {len(items) - limit} more" if len(items) > limit else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts) or None
