"""Hugging Face MobileNetV2ForSemanticSegmentation folders and files load onto tf_mobile and give
transformers' own numbers (random weights and batch-norm statistics, nothing downloaded)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from deeplab_studio.core.labels import VOC_CLASSES
from deeplab_studio.ml.checkpoints import CheckpointError, load_checkpoint, save_checkpoint

transformers = pytest.importorskip("transformers")
from transformers import (MobileNetV2Config, MobileNetV2ForImageClassification,  # noqa: E402
                          MobileNetV2ForSemanticSegmentation, MobileNetV2ImageProcessor)

TOL = 1e-4
SIZES = [(513, 513), (320, 480)]


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights; batch-norm statistics measured on random images, then perturbed, so that
    every batch norm matters (the head's pooled branch gets variances near its 1e-5 epsilon)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if key.endswith(("bias", "normalization.weight")):
                value.copy_(torch.randn(value.shape, generator=gen) * 0.2 + key.endswith("weight"))
            elif key.endswith("weight"):
                value.copy_(torch.randn(value.shape, generator=gen) * (2 / value[0].numel()) ** 0.5)
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for bn in norms:
            bn.momentum = None  # a plain average over the calibration batch
            bn.reset_running_stats()
        model.train()(pixel_values=torch.randn(4, 3, 97, 97, generator=gen))
        for bn in norms:
            bn.running_mean.add_(torch.randn(bn.running_mean.shape, generator=gen) * 0.3 * bn.running_var.sqrt())
            bn.running_var.mul_(torch.empty(bn.running_var.shape).uniform_(0.3, 3.0, generator=gen))
    return model.eval()


def hf_model(depth_multiplier: float = 1.0, *, seed: int = 0, **config) -> MobileNetV2ForSemanticSegmentation:
    config = {"depth_divisible_by": 8 if depth_multiplier == 1.0 else 1, "output_stride": 8,
              "num_labels": 21, "classifier_dropout_prob": 0.1, **config}
    cfg = MobileNetV2Config(depth_multiplier=depth_multiplier, **config)
    return randomize(MobileNetV2ForSemanticSegmentation(cfg), seed)


@pytest.fixture(scope="module", params=[1.0, 0.5], ids=["dm1.0", "dm0.5"])
def hf_folder(request, tmp_path_factory) -> tuple[MobileNetV2ForSemanticSegmentation, Path]:
    dm = request.param
    model = hf_model(dm, id2label=dict(enumerate(VOC_CLASSES)), seed=int(dm * 10))
    folder = tmp_path_factory.mktemp(f"hf_dm{dm}")
    model.save_pretrained(folder)
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    return model, folder


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory) -> Path:
    """A dm 0.5 folder to damage in the error tests."""
    folder = tmp_path_factory.mktemp("hf_small")
    hf_model(0.5, seed=3).save_pretrained(folder)
    return folder


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "model"))


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_folder_gives_transformers_logits(hf_folder, size):
    model, folder = hf_folder
    loaded = load_checkpoint(folder)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(size[1]))
    with torch.no_grad():
        theirs = model(pixel_values=x).logits
        ours_low = loaded.model.classifier(loaded.model.backbone(x))
        ours = loaded.model(x)
    assert ours_low.shape == theirs.shape
    assert theirs.abs().max() > 1.0  # the comparison is not between near-zero tensors
    assert (ours_low - theirs).abs().max() < TOL
    # full resolution: our forward is TF's align_corners=True resize of the same logits ...
    expected = F.interpolate(theirs, size=size, mode="bilinear", align_corners=True)
    assert (ours - expected).abs().max() < TOL
    # ... and transformers' post-processing (align_corners=False) of our low-resolution logits
    # gives its segmentation map exactly: the resize mode is the only difference.
    post = MobileNetV2ImageProcessor().post_process_semantic_segmentation
    hf_map = post(type("Out", (), {"logits": theirs})(), target_sizes=[size])[0]
    ours_map = post(type("Out", (), {"logits": ours_low})(), target_sizes=[size])[0]
    assert (hf_map == ours_map).float().mean() > 0.999


def test_folder_description(hf_folder):
    model, folder = hf_folder
    loaded = load_checkpoint(folder)
    dm = model.config.depth_multiplier
    assert loaded.arch == ("deeplabv3_mobilenetv2_tf" if dm == 1.0 else "deeplabv3_mobilenetv2_tf_dm05")
    assert loaded.num_classes == 21 and loaded.class_names == list(VOC_CLASSES)
    assert loaded.meta["class_names_assumed"] is False and loaded.meta["format"] == "huggingface"
    assert loaded.mean == (0.5, 0.5, 0.5) and loaded.std == (0.5, 0.5, 0.5)  # x/127.5 - 1
    assert loaded.output_stride == 8 == loaded.model.output_stride  # config.json's
    assert not loaded.model.training


def test_output_stride_16_matches_transformers(hf_folder):
    model, folder = hf_folder
    theirs_model = MobileNetV2ForSemanticSegmentation.from_pretrained(folder, output_stride=16).eval()
    loaded = load_checkpoint(folder, output_stride=16)
    x = torch.randn(1, 3, 161, 130, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = theirs_model(pixel_values=x).logits
        ours = loaded.model.classifier(loaded.model.backbone(x))
    assert loaded.output_stride == 16 and (ours - theirs).abs().max() < TOL


def test_bare_safetensors_file_and_pytorch_bin(hf_folder, tmp_path):
    model, folder = hf_folder
    reference = load_checkpoint(folder).model.state_dict()
    bare = load_checkpoint(folder / "model.safetensors")  # no config.json: defaults
    assert bare.arch == load_checkpoint(folder).arch and bare.output_stride == 8
    assert bare.class_names == list(VOC_CLASSES) and bare.meta["class_names_assumed"] is True
    assert bare.mean == (0.5, 0.5, 0.5)
    pt = tmp_path / "pt"
    pt.mkdir()
    shutil.copy(folder / "config.json", pt)
    torch.save(model.state_dict(), pt / "pytorch_model.bin")
    for loaded in (bare, load_checkpoint(pt)):
        state = loaded.model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in reference.items())


def test_resaved_in_our_format_keeps_the_numbers(hf_folder, tmp_path):
    _, folder = hf_folder
    loaded = load_checkpoint(folder)
    out = save_checkpoint(tmp_path / "ours.safetensors", loaded.model, arch=loaded.arch,
                          num_classes=loaded.num_classes, class_names=loaded.class_names,
                          output_stride=loaded.output_stride, mean=loaded.mean, std=loaded.std)
    again = load_checkpoint(out)
    x = torch.randn(1, 3, 67, 90)
    with torch.no_grad():
        assert torch.equal(again.model(x), loaded.model(x))
    assert again.mean == (0.5, 0.5, 0.5) and again.class_names == list(VOC_CLASSES)


def test_default_label_names_are_not_class_names(small_folder, tmp_path):
    folder = _copy(small_folder, tmp_path)  # transformers' LABEL_0..LABEL_20
    assert load_checkpoint(folder).class_names == list(VOC_CLASSES)  # 21 classes: VOC's, assumed
    _edit_config(folder, id2label={str(i): f"thing {i}" for i in range(21)})
    assert load_checkpoint(folder).class_names == [f"thing {i}" for i in range(21)]


def _classifier_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    MobileNetV2ForImageClassification(MobileNetV2Config(depth_multiplier=0.35, num_labels=3)).save_pretrained(folder)
    return folder


BAD = {
    "other model type": (lambda f: _edit_config(f, model_type="bert"), "describes a 'bert' model"),
    "config not json": (lambda f: (f / "config.json").write_text("{not json"), "not readable JSON"),
    "config a list": (lambda f: (f / "config.json").write_text("[1, 2]"), "a JSON object"),
    "no config": (lambda f: (f / "config.json").unlink(), "no config.json"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), "no model.safetensors or pytorch_model.bin"),
    "sharded": (lambda f: ((f / "model.safetensors").unlink(),
                           (f / "model.safetensors.index.json").write_text("{}")), "sharded"),
    "pytorch padding": (lambda f: _edit_config(f, tf_padding=False), "tf_padding=False"),
    "activation": (lambda f: _edit_config(f, hidden_act="gelu"), "hidden_act='gelu'"),
    "output stride 32": (lambda f: _edit_config(f, output_stride=32), "output_stride 32"),
    "label values": (lambda f: _edit_config(f, id2label={str(i): i for i in range(21)}), "must be strings"),
    "label count": (lambda f: _edit_config(f, id2label={"0": "a", "1": "b"}), "2 classes but the weights have 21"),
    "depth multiplier": (lambda f: _edit_config(f, depth_multiplier=1.0), "depth multiplier 1.0 but"),
    "classifier folder": (lambda f: (shutil.rmtree(f), shutil.copytree(_classifier_folder(f.parent / "c"), f)),
                          "MobileNetV2ForImageClassification"),
}


def _drop_key(folder: Path, key: str) -> None:
    state = safetensors.torch.load_file(folder / "model.safetensors")
    del state[key]
    safetensors.torch.save_file(state, folder / "model.safetensors")


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_folder_is_one_line(small_folder, tmp_path, case):
    damage, words = BAD[case]
    folder = _copy(small_folder, tmp_path)
    damage(folder)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(folder)
    message = str(info.value)
    assert words in message and "\n" not in message, message


@pytest.mark.parametrize("key, words", [
    ("mobilenet_v2.layer.3.conv_3x3.normalization.running_var",
     "missing keys: backbone.features.5.depthwise.bn.running_var"),
    ("segmentation_head.classifier.convolution.weight", "classifier.logits.weight is missing"),
    ("mobilenet_v2.conv_stem.first_conv.convolution.weight", "the stem) is missing"),
])
def test_missing_keys_are_one_line(small_folder, tmp_path, key, words):
    folder = _copy(small_folder, tmp_path)
    _drop_key(folder, key)
    for path in (folder, folder / "model.safetensors"):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert words in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_without_num_batches_tracked(small_folder, tmp_path):
    """Converted files may lack the counters; they are added (0), nothing else changes."""
    folder = _copy(small_folder, tmp_path)
    state = safetensors.torch.load_file(folder / "model.safetensors")
    safetensors.torch.save_file({k: v for k, v in state.items() if "num_batches_tracked" not in k},
                                folder / "model.safetensors")
    state = load_checkpoint(folder).model.state_dict()
    assert int(state["backbone.features.3.expand.bn.num_batches_tracked"]) == 0


def test_other_shapes_are_one_line(tmp_path):
    """transformers' own dm 0.5 (widths rounded to 8) and a classifier's bare weights."""
    folder = tmp_path / "dm05_div8"
    hf_model(0.5, depth_divisible_by=8).save_pretrained(folder)
    with pytest.raises(CheckpointError, match="depth_divisible_by=8 are not supported"):
        load_checkpoint(folder)
    weights = _classifier_folder(tmp_path / "c") / "model.safetensors"
    with pytest.raises(CheckpointError, match="without a segmentation head"):
        load_checkpoint(weights)
