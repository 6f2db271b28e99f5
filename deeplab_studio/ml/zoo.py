"""Model registry: DeepLab v3 / v3+ on ResNet-50/101 and MobileNetV2 (VainF naming), and
TensorFlow DeepLab's mobile DeepLab v3 (`deeplabv3_mobilenetv2_tf[_dm05]`, see `tf_mobile`).

>>> model = build_model("deeplabv3plus_mobilenet", num_classes=21, output_stride=16)
>>> model.eval()(torch.zeros(1, 3, 97, 131)).shape     # logits at input size
torch.Size([1, 21, 97, 131])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .arch_names import ARCH_NAMES
from .backbones import (FeatureExtractor, mobilenet_v2_backbone, mobilenet_v3_large_backbone,
                        resnet_backbone, set_backbone_output_stride)
from .blocks import DeepLabHead, DeepLabHeadV3Plus, aspp_rates
from .tf_mobile import TFMobileDeepLabV3


@dataclass(frozen=True)
class ArchSpec:
    """What a registered architecture is made of."""

    name: str
    head: str  # "deeplabv3", "deeplabv3plus" or "tf_mobile" (TF DeepLab's mobile v3)
    backbone: str  # "resnet50", "resnet101", "mobilenetv2", "mobilenetv3_large" or "tf_mobilenetv2"
    in_channels: int
    low_level_channels: int
    fixed_rates: tuple[int, int, int] | None = None  # ASPP rates the weights were trained with
    depth_multiplier: float = 1.0  # tf_mobile only

    @property
    def output_strides(self) -> tuple[int, ...]:
        return (16,) if self.fixed_rates else (8, 16)

    def rates(self, output_stride: int) -> tuple[int, int, int]:
        if output_stride not in self.output_strides:
            raise ValueError(f"{self.name} supports output stride "
                             f"{' or '.join(map(str, self.output_strides))}, not {output_stride}")
        return self.fixed_rates or aspp_rates(output_stride)


class DeepLabV3(nn.Module):
    """Backbone + head; ``forward`` returns logits N×C×H×W at the input size (bilinear).

    Besides the weights it remembers how it was built (``arch``, ``num_classes``,
    ``output_stride``, ``separable``, ``decoder_convs``) so checkpoints can describe it.
    """

    def __init__(self, backbone: FeatureExtractor, classifier: nn.Module, *, arch: str,
                 num_classes: int, output_stride: int, separable: bool, decoder_convs: int):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.arch = arch
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.separable = separable
        self.decoder_convs = decoder_convs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        logits = self.classifier(self.backbone(x))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    @property
    def aspp(self) -> nn.Module:
        return self.classifier.aspp


def _registry(specs: list[ArchSpec]) -> dict[str, ArchSpec]:
    """The specs by name: exactly ``arch_names.ARCH_NAMES``, in its order (else this module
    refuses to import: the torch-free list and the registry cannot drift apart)."""
    names = tuple(spec.name for spec in specs)
    if names != ARCH_NAMES:
        raise ImportError(f"ml.zoo registers {names}, but ml.arch_names.ARCH_NAMES lists {ARCH_NAMES}")
    return {spec.name: spec for spec in specs}


def _vainf(head: str) -> list[ArchSpec]:
    """VainF's three backbones under one head ("deeplabv3plus" or "deeplabv3")."""
    return [ArchSpec(f"{head}_resnet50", head, "resnet50", 2048, 256),
            ArchSpec(f"{head}_resnet101", head, "resnet101", 2048, 256),
            ArchSpec(f"{head}_mobilenet", head, "mobilenetv2", 320, 24)]


_REGISTRY: dict[str, ArchSpec] = _registry([
    *_vainf("deeplabv3plus"), *_vainf("deeplabv3"),
    # torchvision's own MobileNetV3 DeepLab v3 (layout of its released weights, ASPP 12/24/36 at OS 16)
    ArchSpec("deeplabv3_mobilenet_v3_large", "deeplabv3", "mobilenetv3_large", 960, 40, fixed_rates=(12, 24, 36)),
    # TensorFlow DeepLab's mobile v3 (the Coral/TFLite and Hugging Face google/deeplabv3_mobilenet_v2_* models)
    ArchSpec("deeplabv3_mobilenetv2_tf", "tf_mobile", "tf_mobilenetv2", 320, 0),
    ArchSpec("deeplabv3_mobilenetv2_tf_dm05", "tf_mobile", "tf_mobilenetv2", 160, 0, depth_multiplier=0.5),
])


def list_archs() -> list[str]:
    """Registered architecture names, e.g. ``deeplabv3plus_resnet50`` (= ``arch_names.ARCH_NAMES``)."""
    return list(_REGISTRY)


def arch_spec(arch: str) -> ArchSpec:
    try:
        return _REGISTRY[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(_REGISTRY)}") from None


_BACKBONES: dict[str, Callable[..., FeatureExtractor]] = {
    "resnet50": lambda **kw: resnet_backbone(50, **kw),
    "resnet101": lambda **kw: resnet_backbone(101, **kw),
    "mobilenetv2": mobilenet_v2_backbone,
    "mobilenetv3_large": mobilenet_v3_large_backbone,
}


def build_model(arch: str, *, num_classes: int, output_stride: int = 16,
                pretrained_backbone: bool = False, separable: bool = False,
                decoder_convs: int = 1) -> nn.Module:
    """Build a DeepLab model with VainF/DeepLabV3Plus-Pytorch parameter names.

    ``output_stride`` 16 (ASPP rates 6/12/18) or 8 (12/24/36); ``pretrained_backbone`` loads
    torchvision's ImageNet weights (offline: warning, random init); ``separable`` uses
    depthwise-separable 3×3 convs in ASPP and decoder; ``decoder_convs=2`` is the paper's
    decoder (two 3×3 convs, v3+ only). Returns the model in training mode.
    """
    spec = arch_spec(arch)
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if spec.head == "tf_mobile":
        if separable or decoder_convs != 1 or pretrained_backbone:
            raise ValueError(f"{arch} has no separable, decoder or pretrained-backbone options")
        spec.rates(output_stride)  # checks the stride
        return TFMobileDeepLabV3(arch=arch, num_classes=int(num_classes),
                                 depth_multiplier=spec.depth_multiplier, output_stride=output_stride)
    if decoder_convs != 1 and spec.head != "deeplabv3plus":
        raise ValueError("decoder_convs applies to deeplabv3plus_* models only")
    rates = spec.rates(output_stride)
    plus = spec.head == "deeplabv3plus"
    backbone = _BACKBONES[spec.backbone](output_stride=output_stride, low_level=plus,
                                         pretrained=pretrained_backbone)
    if plus:
        head: nn.Module = DeepLabHeadV3Plus(spec.in_channels, spec.low_level_channels, num_classes,
                                            rates, separable=separable, decoder_convs=decoder_convs)
    else:
        head = DeepLabHead(spec.in_channels, num_classes, rates, separable=separable)
    return DeepLabV3(backbone, head, arch=arch, num_classes=int(num_classes),
                     output_stride=output_stride, separable=separable, decoder_convs=decoder_convs)


def set_output_stride(model: nn.Module, output_stride: int) -> nn.Module:
    """Switch a built model between output stride 8 and 16 in place (same weights)."""
    rates = arch_spec(model.arch).rates(output_stride)
    if isinstance(model, TFMobileDeepLabV3):
        model.set_output_stride(output_stride)
        return model
    set_backbone_output_stride(model.backbone, output_stride)
    model.aspp.set_rates(rates)
    model.output_stride = output_stride
    return model


# Named builders, torchvision style: ``deeplabv3plus_resnet50(num_classes=21)``.

def deeplabv3plus_resnet50(**kwargs) -> DeepLabV3:
    """DeepLab v3+ on a dilated ResNet-50 (see :func:`build_model` for the options)."""
    return build_model("deeplabv3plus_resnet50", **kwargs)


def deeplabv3plus_resnet101(**kwargs) -> DeepLabV3:
    """DeepLab v3+ on a dilated ResNet-101."""
    return build_model("deeplabv3plus_resnet101", **kwargs)


def deeplabv3plus_mobilenet(**kwargs) -> DeepLabV3:
    """DeepLab v3+ on MobileNetV2."""
    return build_model("deeplabv3plus_mobilenet", **kwargs)


def deeplabv3_resnet50(**kwargs) -> DeepLabV3:
    """DeepLab v3 on a dilated ResNet-50."""
    return build_model("deeplabv3_resnet50", **kwargs)


def deeplabv3_resnet101(**kwargs) -> DeepLabV3:
    """DeepLab v3 on a dilated ResNet-101."""
    return build_model("deeplabv3_resnet101", **kwargs)


def deeplabv3_mobilenet(**kwargs) -> DeepLabV3:
    """DeepLab v3 on MobileNetV2."""
    return build_model("deeplabv3_mobilenet", **kwargs)


def deeplabv3_mobilenet_v3_large(**kwargs) -> DeepLabV3:
    """torchvision's DeepLab v3 on MobileNetV3-Large (output stride 16 only)."""
    return build_model("deeplabv3_mobilenet_v3_large", **kwargs)


def deeplabv3_mobilenetv2_tf(**kwargs) -> TFMobileDeepLabV3:
    """TensorFlow DeepLab's mobile DeepLab v3 on MobileNetV2 (depth multiplier 1.0)."""
    return build_model("deeplabv3_mobilenetv2_tf", **kwargs)


def deeplabv3_mobilenetv2_tf_dm05(**kwargs) -> TFMobileDeepLabV3:
    """The same with depth multiplier 0.5."""
    return build_model("deeplabv3_mobilenetv2_tf_dm05", **kwargs)
