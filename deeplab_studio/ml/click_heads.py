"""Where click correction cuts each registered DeepLab network in two.

`cut_network(model, x, where)` runs everything up to the cut once (the backbone, the ASPP and, for
`where="head"`, the head's 3×3 convolutions) and returns a `HeadCut`: the cached features at the
cut, where a per-channel scale and bias act, and the rest of the head, which is local (no image
pooling), so its logits at a feature cell need only that cell plus a `halo` of cells around it.

The cuts of each architecture:

- DeepLab v3 (`DeepLabHead`, VainF and torchvision): "aspp", after the ASPP (256 channels,
  stride 16; the rest is a 3×3 conv, batch norm, ReLU and the 1×1 classifier, halo 1); "head",
  after that 3×3 conv (the rest is per cell).
- DeepLab v3+ (`DeepLabHeadV3Plus`): "aspp", after the ASPP, upsampled to the stride-4 decoder
  grid (a per-channel affine map commutes with bilinear resizing, so this is the same as acting
  before it), the 48 low-level channels cached beside it and the whole decoder as the rest;
  "head", after the decoder's last 3×3 conv (the rest is per cell).
- TF DeepLab's mobile v3 (`TFMobileDeepLabV3`), either way: on the concatenated [image pooling,
  1×1 branch] (512 channels) before `concat_projection`, so the projection's ReLU keeps the change
  non-linear; its head has only 1×1 convolutions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DeepLabHead, DeepLabHeadV3Plus, SeparableConv2d
from .tf_mobile import TFMobileDeepLabV3


@dataclass
class Cells:
    """Patches of the cached features around some grid cells: gathered once, modulated each step."""

    features: torch.Tensor  # N×C×p×p
    extra: torch.Tensor | None  # N×E×p×p
    valid: torch.Tensor  # N×1×p×p: 1 inside the grid, 0 beyond it


@dataclass
class HeadCut:
    """A network cut after its ASPP, with the features at the cut cached for one image.

    `features` (1×C×h×w) is what the scale and bias act on; `extra` (1×E×h×w or None) is
    concatenated in front of the modulated features before `rest` (the v3+ low-level features).
    """

    features: torch.Tensor
    extra: torch.Tensor | None
    rest: Callable[[torch.Tensor], torch.Tensor]
    halo: int
    align_corners: bool  # how the network resizes its logits to the input

    @property
    def channels(self) -> int:
        return int(self.features.shape[1])

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of the feature grid the logits come out at."""
        return int(self.features.shape[-2]), int(self.features.shape[-1])

    def logits(self, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """1×K×h×w logits of the modulated features on the whole grid."""
        feats = self.features * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
        if self.extra is not None:
            feats = torch.cat([self.extra, feats], dim=1)
        return self.rest(feats)

    def gather(self, rows: torch.Tensor, cols: torch.Tensor) -> Cells:
        """The (2·halo+1)² patches of cached features around grid cells (`rows[i]`, `cols[i]`)."""
        h, w = self.grid
        offsets = torch.arange(-self.halo, self.halo + 1, device=rows.device)
        pr = rows[:, None] + offsets  # N×p
        pc = cols[:, None] + offsets
        valid = ((pr >= 0) & (pr < h))[:, :, None] & ((pc >= 0) & (pc < w))[:, None, :]
        ri, ci = pr.clamp(0, h - 1)[:, :, None], pc.clamp(0, w - 1)[:, None, :]

        def take(t: torch.Tensor) -> torch.Tensor:  # 1×C×h×w -> N×C×p×p, read channels-last
            return t[0].permute(1, 2, 0)[ri, ci].permute(0, 3, 1, 2).contiguous()

        extra = take(self.extra) if self.extra is not None else None
        return Cells(take(self.features), extra, valid[:, None].to(self.features.dtype))

    def cell_logits(self, cells: Cells, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """N×K logits of the modulated features at the gathered cells.

        Each cell's head runs on its patch without padding, every convolution seeing zeros beyond
        the grid (as the network's zero padding), so every value equals the whole-grid answer at
        a cost that does not grow with the image."""
        feats = cells.features * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
        if cells.extra is not None:
            feats = torch.cat([cells.extra, feats], dim=1)
        if self.halo == 0:  # the cells side by side as one 1×N image: one fast 1×1 convolution each
            return self.rest(feats[:, :, 0, 0].T[None, :, None, :])[0, :, 0, :].T
        out, _ = _valid_forward(self.rest, feats, cells.valid)
        return out[:, :, 0, 0]


def _valid_forward(module: nn.Module, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`module` on patches without padding: each convolution sees its input zeroed where `valid` is
    0 (beyond the feature grid, as the network's zero padding there) and shrinks the patch by its
    reach, so only the cells whose whole field of view is in the patch come out."""
    if isinstance(module, nn.Conv2d):
        reach = (module.kernel_size[0] - 1) // 2 * module.dilation[0]
        y = F.conv2d(x * valid, module.weight, module.bias, module.stride, 0, module.dilation, module.groups)
        return y, (valid[:, :, reach : valid.shape[2] - reach, reach : valid.shape[3] - reach] if reach else valid)
    if isinstance(module, nn.Sequential):
        for child in module:
            x, valid = _valid_forward(child, x, valid)
        return x, valid
    if isinstance(module, SeparableConv2d):
        return _valid_forward(module.body, x, valid)
    if any(True for _ in module.parameters()) and not isinstance(module, nn.BatchNorm2d):
        raise TypeError(f"click correction cannot run a {type(module).__name__} on patches")
    return module(x), valid  # batch norm (eval), activations, dropout: per cell


def _halo(module: nn.Module) -> int:
    """Feature cells a stack of convolutions looks beyond each output cell (sum of kernel reaches)."""
    reach = 0
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            reach += (m.kernel_size[0] - 1) // 2 * m.dilation[0]
    return reach


def _cut_tf_mobile(model: TFMobileDeepLabV3, x: torch.Tensor) -> HeadCut:
    head = model.classifier
    feats = model.backbone(x)
    pooled = head.image_pooling(F.adaptive_avg_pool2d(feats, 1)).expand(-1, -1, *feats.shape[-2:])
    concat = torch.cat([pooled, head.aspp0(feats)], dim=1)

    def rest(z: torch.Tensor) -> torch.Tensor:
        return head.logits(head.dropout(head.concat_projection(z)))

    return HeadCut(concat, None, rest, halo=0, align_corners=True)


def _split_after_last_3x3(layers: nn.Sequential) -> tuple[nn.Sequential, nn.Sequential]:
    """(the layers up to the last 3×3 convolution, the rest: batch norm, ReLU, the 1×1 classifier)."""
    last = max(i for i, m in enumerate(layers)
               if isinstance(m, SeparableConv2d) or (isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1))
    return layers[: last + 1], layers[last + 1 :]


def _cut_v3(model: nn.Module, x: torch.Tensor, where: str) -> HeadCut:
    layers = model.classifier.classifier  # ASPP, 3×3 conv, BN, ReLU, 1×1 classifier
    aspp = layers[0](model.backbone(x)["out"])
    if where == "aspp":
        return HeadCut(aspp, None, layers[1:], halo=_halo(layers[1:]), align_corners=False)
    before, rest = _split_after_last_3x3(layers[1:])
    return HeadCut(before(aspp), None, rest, halo=0, align_corners=False)


def _cut_v3plus(model: nn.Module, x: torch.Tensor, where: str) -> HeadCut:
    head: DeepLabHeadV3Plus = model.classifier
    feats = model.backbone(x)
    low = head.project(feats["low_level"])
    high = F.interpolate(head.aspp(feats["out"]), size=low.shape[-2:], mode="bilinear", align_corners=False)
    if where == "aspp":
        return HeadCut(high, low, head.classifier, halo=_halo(head.classifier), align_corners=False)
    before, rest = _split_after_last_3x3(head.classifier)
    return HeadCut(before(torch.cat([low, high], dim=1)), None, rest, halo=0, align_corners=False)


def supports(model: nn.Module) -> bool:
    """Whether `cut_network` knows where to cut `model`."""
    if isinstance(model, TFMobileDeepLabV3):
        return True
    classifier = getattr(model, "classifier", None)
    return hasattr(model, "backbone") and isinstance(classifier, (DeepLabHead, DeepLabHeadV3Plus))


def cut_network(model: nn.Module, x: torch.Tensor, where: str = "aspp") -> HeadCut:
    """Run `model` on the normalised 1×3×H×W input `x` up to its cut (see the module docstring).

    `where` = "head" cuts DeepLab v3 and v3+ after the last 3×3 convolution of the head instead
    (then the rest is per cell: batch norm, ReLU and the 1×1 classifier); TF mobile has one cut."""
    if where not in ("aspp", "head"):
        raise ValueError(f"where must be 'aspp' or 'head', not {where!r}")
    if isinstance(model, TFMobileDeepLabV3):
        return _cut_tf_mobile(model, x)
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, DeepLabHeadV3Plus):
        return _cut_v3plus(model, x, where)
    if isinstance(classifier, DeepLabHead):
        return _cut_v3(model, x, where)
    raise TypeError(f"click correction does not know where to cut a {type(model).__name__} "
                    "(DeepLab v3, v3+ and TF DeepLab's mobile v3 are supported)")


__all__ = ["Cells", "HeadCut", "cut_network", "supports"]
