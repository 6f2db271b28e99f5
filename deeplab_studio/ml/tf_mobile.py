"""TensorFlow DeepLab's mobile DeepLab v3: MobileNetV2 + the mobile ASPP, with TF's conventions.

The network of `google/deeplabv3_mobilenet_v2_*` and the Coral/TFLite `deeplabv3_mnv2_*_pascal`
models: a MobileNetV2 (depth multiplier 1.0 or 0.5) run at output stride 16 (or 8), an ASPP of the
mobile kind — one 1×1 branch `aspp0` and image pooling, no atrous branches, concatenated as
[image pooling, aspp0] — a 1×1 `concat_projection` and the 1×1 `logits`. Where TensorFlow's
conventions change the numbers, they are kept:

- every convolution pads like TF "SAME" (`SameConv2d`): for stride 2 on an even size the extra
  row/column goes at the bottom/right, not on both sides;
- batch norm uses TF's epsilons: 1e-3 in the MobileNetV2, 1e-5 in the ASPP head (converted TFLite
  weights arrive with batch norm folded into the convolutions: the layers are then identities
  that can still be fine-tuned);
- images are scaled as x/127.5 − 1 (the checkpoint stores mean = std = 0.5 for the Predictor);
- the logits are resized to the input with bilinear `align_corners=True`, as the graph does.

Parameter names: `backbone.features.<i>` (0: the stem, 1–17: the inverted residual blocks
`expanded_conv`…`expanded_conv_16`, each with `expand` (absent in block 1), `depthwise`, `project`),
and `classifier.{aspp0, image_pooling, concat_projection, logits}`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # MobileNetV2's batch norm (TF-slim mobilenet)
HEAD_BN_EPS = 1e-5  # DeepLab's ASPP and projection batch norm
# (expansion t, output channels c, repeats n, first stride s) — MobileNetV2's table
_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
           (6, 320, 1, 1))
ASPP_CHANNELS = 256
TF_MEAN = (0.5, 0.5, 0.5)  # x/255 → (x/255 − 0.5)/0.5 = x/127.5 − 1
TF_STD = (0.5, 0.5, 0.5)


def make_divisible(value: float, divisor: int = 8, min_value: int = 8) -> int:
    """TF-slim's channel rounding: to a multiple of `divisor` (at least `min_value`), never below
    90 % of `value`. DeepLab rounds to 8 at depth multiplier 1.0 and not at all (1) otherwise."""
    out = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after) padding of TF "SAME" along one axis."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """`nn.Conv2d` with TF "SAME" padding computed from each input's size (stride and dilation
    may be changed later, e.g. to switch the output stride)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        top, bottom = same_padding(x.shape[-2], kh, sh, dh)
        left, right = same_padding(x.shape[-1], kw, sw, dw)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ConvBNAct(nn.Module):
    """Convolution (no bias), batch norm and an optional activation."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, *, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU6, eps: float = BN_EPS) -> None:
        super().__init__()
        self.conv = SameConv2d(cin, cout, kernel, stride=stride, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=eps)
        self.act = act() if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1×1 expand (ReLU6), 3×3 depthwise (ReLU6), 1×1 linear projection;
    a residual connection when the shape is kept."""

    def __init__(self, cin: int, cout: int, *, stride: int, expansion: int, divisor: int = 8) -> None:
        super().__init__()
        hidden = make_divisible(cin * expansion, divisor) if expansion != 1 else cin
        self.expand = ConvBNAct(cin, hidden) if expansion != 1 else None
        self.depthwise = ConvBNAct(hidden, hidden, 3, stride=stride, groups=hidden)
        self.project = ConvBNAct(hidden, cout, act=None)
        self.residual = stride == 1 and cin == cout
        self.first_stride = stride  # the stride of the ImageNet network (before output-stride changes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class MobileNetV2Features(nn.Module):
    """The MobileNetV2 trunk as DeepLab uses it (no 1280-channel layer): 320×dm channels out."""

    def __init__(self, depth_multiplier: float = 1.0, output_stride: int = 16) -> None:
        super().__init__()
        divisor = 8 if depth_multiplier == 1.0 else 1  # as TF DeepLab builds its MobileNetV2
        stem = make_divisible(32 * depth_multiplier, divisor)
        layers: list[nn.Module] = [ConvBNAct(3, stem, 3, stride=2)]
        cin = stem
        for t, c, n, s in _BLOCKS:
            cout = make_divisible(c * depth_multiplier, divisor)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, stride=s if i == 0 else 1, expansion=t, divisor=divisor))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.out_channels = cin
        self.set_output_stride(output_stride)

    def set_output_stride(self, output_stride: int) -> None:
        """TF's rule: once the target stride is reached, strides become 1 and later layers dilate."""
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output stride must be 8, 16 or 32, not {output_stride}")
        current, rate = 2, 1  # after the stem
        for block in self.features[1:]:
            stride, layer_rate = block.first_stride, rate
            if current == output_stride and stride > 1:
                layer_rate, rate, stride = rate, rate * stride, 1
            else:
                current *= stride
            conv = block.depthwise.conv
            conv.stride, conv.dilation = (stride, stride), (layer_rate, layer_rate)
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class MobileASPPHead(nn.Module):
    """[image pooling, 1×1 branch] → 1×1 projection (ReLU) → 1×1 logits."""

    def __init__(self, cin: int, num_classes: int, channels: int = ASPP_CHANNELS) -> None:
        super().__init__()
        self.aspp0 = ConvBNAct(cin, channels, act=nn.ReLU, eps=HEAD_BN_EPS)
        self.image_pooling = ConvBNAct(cin, channels, act=nn.ReLU, eps=HEAD_BN_EPS)
        self.concat_projection = ConvBNAct(2 * channels, channels, act=nn.ReLU, eps=HEAD_BN_EPS)
        self.dropout = nn.Dropout2d(0.1)  # TF DeepLab trains with dropout before the logits
        self.logits = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pooling(F.adaptive_avg_pool2d(x, 1)).expand(-1, -1, *x.shape[-2:])
        y = self.concat_projection(torch.cat([pooled, self.aspp0(x)], dim=1))
        return self.logits(self.dropout(y))


class TFMobileDeepLabV3(nn.Module):
    """Mobile DeepLab v3; `forward` maps N×3×H×W images scaled to [−1, 1] to logits at input size."""

    def __init__(self, *, arch: str, num_classes: int, depth_multiplier: float, output_stride: int = 16) -> None:
        super().__init__()
        self.backbone = MobileNetV2Features(depth_multiplier, output_stride)
        self.classifier = MobileASPPHead(self.backbone.out_channels, num_classes)
        self.arch, self.num_classes = arch, int(num_classes)
        self.separable, self.decoder_convs = False, 1

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride

    @property
    def aspp(self) -> nn.Module:
        return self.classifier

    def set_output_stride(self, output_stride: int) -> None:
        self.backbone.set_output_stride(output_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)


def identity_batch_norms(model: nn.Module) -> None:
    """Make every batch norm an exact identity (for weights whose batch norm is folded in)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.running_mean.zero_()
            m.running_var.fill_(1.0 - m.eps)
