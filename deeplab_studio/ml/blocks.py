"""DeepLab building blocks: ASPP, separable convolution, the v3 and v3+ heads.

Module and parameter names follow VainF/DeepLabV3Plus-Pytorch so that its state dicts load
with ``strict=True`` (``tests/data/state_dict_keys/vainf_*.txt`` lists every key).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ASPP_CHANNELS = 256
LOW_LEVEL_CHANNELS = 48


def aspp_rates(output_stride: int) -> tuple[int, int, int]:
    """Atrous rates of the three 3×3 ASPP branches for an output stride (paper, section 4.1)."""
    if output_stride == 16:
        return (6, 12, 18)
    if output_stride == 8:
        return (12, 24, 36)
    raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")


class SeparableConv2d(nn.Module):
    """Atrous depthwise-separable convolution: ``body.0`` depthwise, ``body.1`` pointwise."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 padding: int = 1, dilation: int = 1, bias: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, dilation=dilation,
                      groups=in_channels, bias=bias),
            nn.Conv2d(in_channels, out_channels, 1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def conv3x3(in_channels: int, out_channels: int, *, dilation: int = 1,
            separable: bool = False) -> nn.Module:
    """A bias-free 3×3 (atrous) convolution keeping the spatial size, plain or separable."""
    if separable:
        return SeparableConv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
    return nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)


class ASPPConv(nn.Sequential):
    """One atrous 3×3 branch of ASPP: conv, BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int, *,
                 separable: bool = False) -> None:
        super().__init__(
            conv3x3(in_channels, out_channels, dilation=dilation, separable=separable),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    @property
    def atrous_conv(self) -> nn.Conv2d:
        """The conv that carries the dilation (the depthwise one when separable)."""
        return self[0].body[0] if isinstance(self[0], SeparableConv2d) else self[0]

    @property
    def dilation(self) -> int:
        return int(self.atrous_conv.dilation[0])

    def set_dilation(self, dilation: int) -> None:
        self.atrous_conv.dilation = (dilation, dilation)
        self.atrous_conv.padding = (dilation, dilation)


class ASPPPooling(nn.Sequential):
    """Image-level branch of ASPP: global average pool, 1×1 conv, BN, ReLU, upsample.

    BatchNorm over a 1×1 map has one value per channel at batch size 1, so in training mode
    with a batch of one the BN normalises with its running statistics instead of failing.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pool, conv, bn, relu = self
        y = conv(pool(x))
        if bn.training and y.shape[0] == 1:
            y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                             training=False, eps=bn.eps)
        else:
            y = bn(y)
        y = relu(y)
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1×1, three atrous 3×3 and an image-pooling branch."""

    def __init__(self, in_channels: int, rates: Sequence[int], *,
                 out_channels: int = ASPP_CHANNELS, separable: bool = False) -> None:
        super().__init__()
        if len(rates) != 3:
            raise ValueError(f"ASPP needs three atrous rates, got {list(rates)}")
        branches: list[nn.Module] = [nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )]
        branches += [ASPPConv(in_channels, out_channels, r, separable=separable) for r in rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(5 * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
        )

    @property
    def rates(self) -> tuple[int, ...]:
        return tuple(branch.dilation for branch in self.convs[1:4])

    def set_rates(self, rates: Sequence[int]) -> None:
        for branch, rate in zip(self.convs[1:4], rates, strict=True):
            branch.set_dilation(int(rate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


def _init_head(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class DeepLabHead(nn.Module):
    """DeepLab v3 head: ASPP, 3×3 conv, BN, ReLU, 1×1 classifier (all in ``classifier``)."""

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int], *,
                 separable: bool = False) -> None:
        super().__init__()
        self.classifier = nn.Sequential(
            ASPP(in_channels, rates, separable=separable),
            conv3x3(ASPP_CHANNELS, ASPP_CHANNELS, separable=separable),
            nn.BatchNorm2d(ASPP_CHANNELS),
            nn.ReLU(inplace=True),
            nn.Conv2d(ASPP_CHANNELS, num_classes, 1),
        )
        _init_head(self)

    @property
    def aspp(self) -> ASPP:
        return self.classifier[0]

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.classifier(features["out"])


class DeepLabHeadV3Plus(nn.Module):
    """DeepLab v3+ head: ASPP on the deep features, decoder fusing a 48-channel projection of
    the stride-4 features, then ``decoder_convs`` 3×3 convs (1 = VainF, 2 = the paper)."""

    def __init__(self, in_channels: int, low_level_channels: int, num_classes: int,
                 rates: Sequence[int], *, separable: bool = False, decoder_convs: int = 1) -> None:
        super().__init__()
        if decoder_convs not in (1, 2):
            raise ValueError(f"decoder_convs must be 1 or 2, got {decoder_convs}")
        self.project = nn.Sequential(
            nn.Conv2d(low_level_channels, LOW_LEVEL_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(LOW_LEVEL_CHANNELS),
            nn.ReLU(inplace=True),
        )
        self.aspp = ASPP(in_channels, rates, separable=separable)
        layers: list[nn.Module] = []
        channels = LOW_LEVEL_CHANNELS + ASPP_CHANNELS
        for _ in range(decoder_convs):
            layers += [conv3x3(channels, ASPP_CHANNELS, separable=separable),
                       nn.BatchNorm2d(ASPP_CHANNELS), nn.ReLU(inplace=True)]
            channels = ASPP_CHANNELS
        layers.append(nn.Conv2d(ASPP_CHANNELS, num_classes, 1))
        self.classifier = nn.Sequential(*layers)
        _init_head(self)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        low = self.project(features["low_level"])
        high = self.aspp(features["out"])
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([low, high], dim=1))
