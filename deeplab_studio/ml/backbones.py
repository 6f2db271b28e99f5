"""Dilated backbones for DeepLab: ResNet-50/101 (torchvision) and MobileNetV2 (VainF layout).

Each builder returns a :class:`FeatureExtractor` yielding ``{"out": deep features,
"low_level": stride-4 features}``; :func:`set_backbone_output_stride` re-dilates a built
backbone in place (8 or 16) without touching its weights.
"""

from __future__ import annotations

import pickle
import warnings
from collections import OrderedDict
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet

from . import hub

OUTPUT_STRIDES = (8, 16)


class FeatureExtractor(nn.ModuleDict):
    """Runs its children in order and returns the outputs of ``return_layers`` by new name."""

    def __init__(self, layers: Iterable[tuple[str, nn.Module]], return_layers: dict[str, str]):
        super().__init__(OrderedDict(layers))
        missing = set(return_layers) - set(self.keys())
        if missing:
            raise ValueError(f"return layers {sorted(missing)} are not in the backbone")
        self.return_layers = dict(return_layers)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


def _check_os(output_stride: int) -> None:
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")


def _load_imagenet(module: nn.Module, url: str, rename, what: str) -> None:
    """Load ImageNet weights from ``url`` into ``module``; offline → warning, random init."""
    try:
        path = hub.download(url, timeout=5.0)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (hub.WeightsUnavailable, RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        warnings.warn(f"ImageNet weights for the {what} backbone are unavailable ({reason}); "
                      "it starts from random initialisation", RuntimeWarning, stacklevel=3)
        return
    renamed = {}
    for key, value in state.items():
        new = rename(key)
        if new is not None:
            renamed[new] = value
    module.load_state_dict(renamed, strict=True)


# --------------------------------------------------------------------------- ResNet

_RESNET_WEIGHTS = {
    "resnet50": resnet.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": resnet.ResNet101_Weights.IMAGENET1K_V1,
}


def _resnet_dilate(output_stride: int) -> list[bool]:
    """torchvision's replace_stride_with_dilation for layer2..layer4."""
    return [False, False, True] if output_stride == 16 else [False, True, True]


def resnet_backbone(depth: int, *, output_stride: int = 16, low_level: bool = True,
                    pretrained: bool = False) -> FeatureExtractor:
    """Dilated ResNet-50/101 trunk (``conv1`` … ``layer4``), 2048-channel output."""
    _check_os(output_stride)
    name = f"resnet{depth}"
    if name not in _RESNET_WEIGHTS:
        raise ValueError(f"unsupported ResNet depth {depth} (50 or 101)")
    net = getattr(resnet, name)(weights=None, replace_stride_with_dilation=_resnet_dilate(output_stride))
    if pretrained:
        _load_imagenet(net, _RESNET_WEIGHTS[name].url, lambda k: k, name)
    keep = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    returns = {"layer4": "out", "layer1": "low_level"} if low_level else {"layer4": "out"}
    return FeatureExtractor(((k, getattr(net, k)) for k in keep), returns)


def _configure_resnet(backbone: FeatureExtractor, output_stride: int) -> None:
    """Set strides/dilations of layer2..4 exactly as torchvision builds them for this OS."""
    dilation = 1
    for layer_name, dilate in zip(("layer2", "layer3", "layer4"), _resnet_dilate(output_stride)):
        blocks = list(backbone[layer_name])
        previous, stride = dilation, 2
        if dilate:
            dilation *= stride
            stride = 1
        for i, block in enumerate(blocks):
            d = previous if i == 0 else dilation
            s = stride if i == 0 else 1
            block.conv2.stride, block.conv2.dilation, block.conv2.padding = (s, s), (d, d), (d, d)
            block.stride = s
            if block.downsample is not None:
                block.downsample[0].stride = (s, s)


# ------------------------------------------------------------------------ MobileNetV2

MOBILENET_V2_URL = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"
# t (expansion), c (channels), n (repeats), s (stride)
_MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
_LOW_LEVEL_BLOCKS = 4  # features[0:4] end at stride 4 with 24 channels


class ConvBNReLU6(nn.Sequential):
    """Unpadded conv, BN, ReLU6 (padding is applied to the block input, as in VainF)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, 0, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand 1×1, depthwise 3×3 (atrous), project 1×1; residual if shapes
    match. The input is zero-padded for the depthwise kernel before the expansion."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, dilation: int, expand: int) -> None:
        super().__init__()
        hidden = int(round(in_ch * expand))
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU6(in_ch, hidden, kernel_size=1))
        layers += [ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)]
        self.conv = nn.Sequential(*layers)
        self.in_ch, self.out_ch = in_ch, out_ch
        self.set_stride_dilation(stride, dilation)

    @property
    def depthwise(self) -> nn.Conv2d:
        return self.conv[-3][0]

    def set_stride_dilation(self, stride: int, dilation: int) -> None:
        self.stride = stride
        self.depthwise.stride = (stride, stride)
        self.depthwise.dilation = (dilation, dilation)
        self.pad = dilation  # 3×3 kernel with this dilation: (2·d) total, split evenly
        self.use_residual = stride == 1 and self.in_ch == self.out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(F.pad(x, (self.pad, self.pad, self.pad, self.pad)))
        return x + y if self.use_residual else y


def _mobilenet_schedule(output_stride: int) -> list[tuple[int, int]]:
    """(stride, dilation) of each inverted-residual block (features 1..17) for an OS."""
    schedule, current, dilation = [], 2, 1
    for _t, _c, n, s in _MOBILENET_V2_SETTINGS:
        previous = dilation
        if current == output_stride:
            stride, dilation = 1, dilation * s
        else:
            stride, current = s, current * s
        schedule += [(stride, previous)] + [(1, dilation)] * (n - 1)
    return schedule


def mobilenet_v2_backbone(*, output_stride: int = 16, low_level: bool = True,
                          pretrained: bool = False) -> FeatureExtractor:
    """MobileNetV2 trunk split as VainF does: ``low_level_features`` = features[0:4] (24 ch,
    stride 4), ``high_level_features`` = features[4:18] (320 ch); the last 1×1 conv is dropped."""
    _check_os(output_stride)
    features: list[nn.Module] = [ConvBNReLU6(3, 32, stride=2)]
    in_ch = 32
    schedule = iter(_mobilenet_schedule(output_stride))
    for t, c, n, _s in _MOBILENET_V2_SETTINGS:
        for _ in range(n):
            stride, dilation = next(schedule)
            features.append(InvertedResidual(in_ch, c, stride, dilation, t))
            in_ch = c
    for m in nn.Sequential(*features).modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    low = nn.Sequential(OrderedDict((str(i), m) for i, m in enumerate(features[:_LOW_LEVEL_BLOCKS])))
    high = nn.Sequential(OrderedDict((str(i), m) for i, m in enumerate(features)
                                     if i >= _LOW_LEVEL_BLOCKS))
    returns = {"high_level_features": "out"}
    if low_level:
        returns["low_level_features"] = "low_level"
    extractor = FeatureExtractor([("low_level_features", low), ("high_level_features", high)],
                                 returns)
    if pretrained:
        _load_imagenet(extractor, MOBILENET_V2_URL, _rename_torchvision_mobilenet, "MobileNetV2")
    return extractor


def _rename_torchvision_mobilenet(key: str) -> str | None:
    """torchvision ``features.i.*`` → VainF's split; the last conv and the classifier drop."""
    parts = key.split(".")
    if parts[0] != "features" or int(parts[1]) >= 18:
        return None
    group = "low_level_features" if int(parts[1]) < _LOW_LEVEL_BLOCKS else "high_level_features"
    return ".".join([group] + parts[1:])


def _configure_mobilenet(backbone: FeatureExtractor, output_stride: int) -> None:
    blocks = [m for part in ("low_level_features", "high_level_features")
              for m in backbone[part] if isinstance(m, InvertedResidual)]
    for block, (stride, dilation) in zip(blocks, _mobilenet_schedule(output_stride), strict=True):
        block.set_stride_dilation(stride, dilation)


# ------------------------------------------------------- MobileNetV3-Large (torchvision)

MOBILENET_V3_LARGE_URL = "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth"


def mobilenet_v3_large_backbone(*, output_stride: int = 16, low_level: bool = False,
                                pretrained: bool = False) -> FeatureExtractor:
    """torchvision's dilated MobileNetV3-Large trunk (``0`` … ``16``, 960 channels), as used by
    torchvision's ``deeplabv3_mobilenet_v3_large``; output stride 16 only."""
    if output_stride != 16:
        raise ValueError("the MobileNetV3-Large backbone supports output stride 16 only")
    if low_level:
        raise ValueError("the MobileNetV3-Large backbone has no DeepLab v3+ variant here")
    from torchvision.models import mobilenet_v3_large

    net = mobilenet_v3_large(weights=None, dilated=True)
    if pretrained:
        _load_imagenet(net, MOBILENET_V3_LARGE_URL, lambda k: k, "MobileNetV3-Large")
    return FeatureExtractor(((str(i), m) for i, m in enumerate(net.features)),
                            {str(len(net.features) - 1): "out"})


def set_backbone_output_stride(backbone: FeatureExtractor, output_stride: int) -> None:
    """Re-dilate a backbone built by this module for output stride 8 or 16 (weights kept)."""
    _check_os(output_stride)
    if "16" in backbone and "layer4" not in backbone:
        if output_stride != 16:
            raise ValueError("the MobileNetV3-Large backbone supports output stride 16 only")
        return
    if "layer4" in backbone:
        _configure_resnet(backbone, output_stride)
    elif "high_level_features" in backbone:
        _configure_mobilenet(backbone, output_stride)
    else:
        raise TypeError("not a backbone built by deeplab_studio.ml.backbones")
