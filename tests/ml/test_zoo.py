"""Model zoo: layouts equal VainF's state dicts, shapes at OS 8/16, output-stride switching."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from deeplab_studio.ml import backbones, zoo
from deeplab_studio.ml.blocks import ASPP
from deeplab_studio.ml.zoo import build_model, list_archs, set_output_stride

KEYS = Path(__file__).resolve().parents[1] / "data" / "state_dict_keys"
ARCHS = ["deeplabv3plus_resnet50", "deeplabv3plus_resnet101", "deeplabv3plus_mobilenet",
         "deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_mobilenet"]


def reference_layout(arch: str) -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in (KEYS / f"vainf_{arch}.txt").read_text().splitlines():
        key, shape = line.split("\t")
        rows.append((key, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    return rows


def layout(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def test_registry_names() -> None:
    assert sorted(list_archs()) == sorted(ARCHS + ["deeplabv3_mobilenet_v3_large", "deeplabv3_mobilenetv2_tf",
                                                  "deeplabv3_mobilenetv2_tf_dm05"])
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("deeplabv3plus_xception", num_classes=21)
    for arch in list_archs():  # a named builder for each, torchvision style
        assert callable(getattr(zoo, arch))
    assert zoo.deeplabv3_mobilenet(num_classes=2, output_stride=8).arch == "deeplabv3_mobilenet"


def test_the_torch_free_name_list_is_the_registry() -> None:
    import dataclasses
    import subprocess
    import sys

    from deeplab_studio.ml.arch_names import ARCH_NAMES, DEFAULT_ARCH

    assert list_archs() == list(ARCH_NAMES) and DEFAULT_ARCH in ARCH_NAMES
    code = "import sys, deeplab_studio.ml.arch_names; print(sorted({'torch', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    specs = [zoo.arch_spec(a) for a in ARCH_NAMES]
    with pytest.raises(ImportError, match="ARCH_NAMES lists"):  # a drifted registry refuses to import
        zoo._registry(specs[:-1] + [dataclasses.replace(specs[-1], name="deeplabv3_other")])


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dict_equals_vainf_layout(arch: str) -> None:
    assert layout(build_model(arch, num_classes=21)) == reference_layout(arch)


def test_mobilenet_v3_large_matches_torchvision_layout() -> None:
    """torchvision's released deeplabv3_mobilenet_v3_large keys, head renamed, aux dropped."""
    rows = []
    for line in (KEYS / "tv_deeplabv3_mobilenet_v3_large.txt").read_text().splitlines():
        key, shape = line.split("\t")
        if key.startswith("aux_classifier."):
            continue
        key = "classifier." + key if key.startswith("classifier.") else key
        rows.append((key, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    model = build_model("deeplabv3_mobilenet_v3_large", num_classes=21)
    assert layout(model) == rows
    assert model.aspp.rates == (12, 24, 36)
    with pytest.raises(ValueError, match="output stride 16"):
        build_model("deeplabv3_mobilenet_v3_large", num_classes=21, output_stride=8)
    with pytest.raises(ValueError, match="output stride 16"):
        set_output_stride(model, 8)


def _separable_layout(rows):
    """VainF --separable_conv: each 3×3 conv of the head becomes body.0 (dw) + body.1 (pw)."""
    out = []
    for key, shape in rows:
        if key.startswith("classifier.") and len(shape) == 4 and shape[2:] == (3, 3):
            stem = key[: -len(".weight")]
            out += [(f"{stem}.body.0.weight", (shape[1], 1, 3, 3)),
                    (f"{stem}.body.1.weight", (shape[0], shape[1], 1, 1))]
        else:
            out.append((key, shape))
    return out


@pytest.mark.parametrize("arch", ["deeplabv3plus_mobilenet", "deeplabv3_mobilenet"])
def test_separable_layout(arch: str) -> None:
    model = build_model(arch, num_classes=21, separable=True)
    assert layout(model) == _separable_layout(reference_layout(arch))
    assert any(".body.0." in k for k in model.state_dict())


def test_paper_decoder_has_two_3x3_convs() -> None:
    model = build_model("deeplabv3plus_mobilenet", num_classes=21, decoder_convs=2)
    sd = model.state_dict()
    assert sd["classifier.classifier.0.weight"].shape == (256, 304, 3, 3)
    assert sd["classifier.classifier.3.weight"].shape == (256, 256, 3, 3)
    assert sd["classifier.classifier.6.weight"].shape == (21, 256, 1, 1)
    with pytest.raises(ValueError):
        build_model("deeplabv3_mobilenet", num_classes=21, decoder_convs=2)


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_gives_logits_at_input_size(arch: str, output_stride: int) -> None:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=3, output_stride=output_stride).eval()
    rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
    assert model.aspp.rates == rates
    with torch.no_grad():
        out = model(torch.randn(1, 3, 97, 131))
    assert out.shape == (1, 3, 97, 131)
    assert torch.isfinite(out).all()


def test_feature_strides() -> None:
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for os_ in (8, 16):
            for net in (backbones.mobilenet_v2_backbone(output_stride=os_).eval(),
                        backbones.resnet_backbone(50, output_stride=os_).eval()):
                feats = net(x)
                assert feats["out"].shape[-1] == 64 // os_
                assert feats["low_level"].shape[-1] == 16


@pytest.mark.parametrize("arch", ["deeplabv3plus_mobilenet", "deeplabv3plus_resnet50"])
def test_set_output_stride_equals_fresh_build(arch: str) -> None:
    torch.manual_seed(1)
    m16 = build_model(arch, num_classes=4, output_stride=16).eval()
    m8 = build_model(arch, num_classes=4, output_stride=8).eval()
    m8.load_state_dict(m16.state_dict())
    x = torch.randn(1, 3, 65, 71)
    with torch.no_grad():
        want8, want16 = m8(x), m16(x)
        set_output_stride(m16, 8)
        assert m16.output_stride == 8 and m16.aspp.rates == (12, 24, 36)
        torch.testing.assert_close(m16(x), want8)
        set_output_stride(m16, 16)
        torch.testing.assert_close(m16(x), want16)
    with pytest.raises(ValueError):
        set_output_stride(m16, 32)


class _VainFPlusResNet(nn.Module):
    """An independent reference: VainF's DeepLabV3+ ResNet as its code assembles it, from
    torchvision's ResNet (`replace_stride_with_dilation`), IntermediateLayerGetter and ASPP plus
    VainF's decoder (48-channel 1×1 projection of layer1, ASPP upsampled to it, concat, 3×3 conv,
    1×1 classifier, bilinear upsampling to the input). No code from `ml.blocks`/`ml.backbones`."""

    def __init__(self, depth: int, num_classes: int, output_stride: int) -> None:
        super().__init__()
        import torchvision
        from torchvision.models._utils import IntermediateLayerGetter
        from torchvision.models.segmentation.deeplabv3 import ASPP as TorchvisionASPP

        dilate = [False, False, True] if output_stride == 16 else [False, True, True]
        resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None, replace_stride_with_dilation=dilate)
        self.backbone = IntermediateLayerGetter(resnet, return_layers={"layer4": "out", "layer1": "low_level"})
        self.classifier = nn.Module()
        self.classifier.project = nn.Sequential(nn.Conv2d(256, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU())
        self.classifier.aspp = TorchvisionASPP(2048, [6, 12, 18] if output_stride == 16 else [12, 24, 36])
        self.classifier.classifier = nn.Sequential(nn.Conv2d(304, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256),
                                                   nn.ReLU(), nn.Conv2d(256, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        head = self.classifier
        low = head.project(feats["low_level"])
        high = torch.nn.functional.interpolate(head.aspp(feats["out"]), size=low.shape[2:], mode="bilinear",
                                               align_corners=False)
        out = head.classifier(torch.cat([low, high], dim=1))
        return torch.nn.functional.interpolate(out, size=x.shape[2:], mode="bilinear", align_corners=False)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_outputs_equal_an_independent_vainf_reference(output_stride: int) -> None:
    """VainF's code cannot run here; its ResNet-50 v3+ is rebuilt from torchvision parts above.
    The same random weights (BN statistics too) load strictly into both and give the same logits."""
    model = build_model("deeplabv3plus_resnet50", num_classes=5, output_stride=output_stride).eval()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=gen) + 0.5 if key.endswith("running_var")
                            else torch.randn(value.shape, generator=gen) * 0.05)
    reference = _VainFPlusResNet(50, 5, output_stride).eval()
    reference.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(1, 3, 65, 77, generator=gen)
    with torch.no_grad():
        want = reference(x)
        torch.testing.assert_close(model(x), want, rtol=1e-4, atol=1e-4)
    assert want.abs().max() > 0.1  # random weights that reach the output


def test_aspp_trains_at_batch_size_one() -> None:
    aspp = ASPP(8, (1, 2, 3), out_channels=4).train()
    out = aspp(torch.randn(1, 8, 9, 9))
    out.sum().backward()
    assert out.shape == (1, 4, 9, 9)
    model = build_model("deeplabv3plus_mobilenet", num_classes=2).train()
    model(torch.randn(2, 3, 33, 33)).mean().backward()


def test_pretrained_backbone_from_hub_cache(tmp_path, monkeypatch) -> None:
    """torchvision MobileNetV2 ImageNet weights in the hub cache map onto VainF's split."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    source = torchvision.models.mobilenet_v2(weights=None).state_dict()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(source, cache / "mobilenet_v2-b0353104.pth")
    model = build_model("deeplabv3plus_mobilenet", num_classes=21, pretrained_backbone=True)
    sd = model.state_dict()
    torch.testing.assert_close(sd["backbone.low_level_features.0.0.weight"], source["features.0.0.weight"])
    torch.testing.assert_close(sd["backbone.high_level_features.17.conv.3.running_var"],
                               source["features.17.conv.3.running_var"])


def test_pretrained_backbone_offline_warns_and_uses_random_init(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    # A closed local port: the download fails at once, as it does offline.
    monkeypatch.setattr(backbones, "MOBILENET_V2_URL", "http://127.0.0.1:9/mobilenet_v2-b0353104.pth")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_model("deeplabv3_mobilenet", num_classes=2, pretrained_backbone=True)
    assert any("random initialisation" in str(w.message) for w in caught)
    assert isinstance(model, nn.Module)
    assert not list((tmp_path / "hub" / "checkpoints").glob("*"))
