"""TF DeepLab's mobile v3: the architecture, the TFLite converter (parity with LiteRT on real VOC
images) and `deeplab-studio convert`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab_studio.cli import main
from deeplab_studio.ml.checkpoints import load_checkpoint
from deeplab_studio.ml.tf_mobile import same_padding
from deeplab_studio.ml.zoo import build_model, set_output_stride

DATA = Path(__file__).resolve().parents[1] / "data"
CORAL = DATA / "coral_deeplabv3_mnv2_pascal"
LABELS = CORAL / "pascal_voc_segmentation_labels.txt"
VAL = sorted((DATA / "voc_real" / "images").glob("*.png"))  # the seven 513×513 val crops
TFLITE = {"deeplabv3_mobilenetv2_tf": CORAL / "deeplabv3_mnv2_pascal_quant.tflite",
          "deeplabv3_mobilenetv2_tf_dm05": CORAL / "deeplabv3_mnv2_dm05_pascal_quant.tflite"}


@pytest.mark.parametrize("size, stride, dilation, expected", [
    (513, 2, 1, (1, 1)), (512, 2, 1, (0, 1)), (33, 1, 2, (2, 2)), (7, 2, 1, (1, 1)), (8, 1, 1, (1, 1))])
def test_same_padding_is_tensorflows(size: int, stride: int, dilation: int, expected: tuple[int, int]) -> None:
    assert same_padding(size, 3, stride, dilation) == expected


@pytest.mark.parametrize("arch, params", [("deeplabv3_mobilenetv2_tf", 2_113_557),
                                          ("deeplabv3_mobilenetv2_tf_dm05", 697_013)])
def test_architecture_shapes_and_output_stride(arch: str, params: int) -> None:
    model = build_model(arch, num_classes=21).eval()
    assert sum(p.numel() for p in model.parameters()) == params
    x = torch.rand(1, 3, 96, 130)
    with torch.no_grad():
        assert model(x).shape == (1, 21, 96, 130)
        assert model.backbone(x).shape[-2:] == (6, 9)  # ceil(96/16), ceil(130/16)
        set_output_stride(model, 8)
        assert model.backbone(x).shape[-2:] == (12, 17) and model.output_stride == 8
    dilations = [b.depthwise.conv.dilation[0] for b in model.backbone.features[1:]]
    assert dilations == [1] * 7 + [2] * 7 + [4] * 3  # TF's rule: the layer that would stride dilates the rest
    with pytest.raises(ValueError):
        build_model(arch, num_classes=21, separable=True)


def _litert_labels(path: Path, image: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], image[None])
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])[0]


@pytest.mark.parametrize("arch", sorted(TFLITE))
def test_converted_model_agrees_with_litert_on_real_images(arch: str) -> None:
    """Per-image argmax agreement with the int8 LiteRT output at its 513×513 input (≥ 98 %)."""
    pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) cannot be installed here")
    from deeplab_studio.ml.tflite_convert import convert_tflite

    model, names, _ = convert_tflite(TFLITE[arch], labels=LABELS)
    assert model.arch == arch and names[15] == "person" and len(names) == 21
    for path in VAL:
        image = np.array(Image.open(path).convert("RGB"))
        ref = _litert_labels(TFLITE[arch], image)
        x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() - 128) / 128  # the int8 input's scaling
        with torch.no_grad():
            ours = model(x).argmax(1)[0].numpy()
        assert (ours == ref).mean() >= 0.98, path.name


def test_convert_cli_round_trip_and_refusals(tmp_path: Path, capsys) -> None:
    out = tmp_path / "voc.safetensors"
    args = ["convert", str(TFLITE["deeplabv3_mobilenetv2_tf"]), "--out", str(out), "--labels", str(LABELS),
            "--float16", "--licence", "Apache-2.0"]
    assert main(args) == 0
    loaded = load_checkpoint(out)
    assert loaded.arch == "deeplabv3_mobilenetv2_tf" and loaded.class_names[15] == "person"
    assert tuple(loaded.mean) == (0.5, 0.5, 0.5) and out.stat().st_size < 5_000_000
    card = (tmp_path / "voc.json").read_text()
    assert "Apache-2.0" in card and "sha256" in card
    assert main(args) == 0  # its own earlier output may be replaced
    capsys.readouterr()
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"precious")
    cases = [
        (["convert", str(CORAL / "LICENSE"), "--out", str(tmp_path / "a.safetensors")], "not a TFLite file"),
        (["convert", str(TFLITE["deeplabv3_mobilenetv2_tf"]), "--out", str(tmp_path / "b.safetensors"),
          "--labels", str(CORAL / "LICENSE")], "classes"),
        (["convert", str(TFLITE["deeplabv3_mobilenetv2_tf"]), "--out", str(mine)], "refusing to write over"),
        (["convert", str(tmp_path / "missing.tflite"), "--out", str(tmp_path / "c.safetensors")], "cannot read"),
    ]
    for argv, words in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    assert mine.read_bytes() == b"precious"
    truncated = tmp_path / "cut.tflite"
    truncated.write_bytes(TFLITE["deeplabv3_mobilenetv2_tf"].read_bytes()[:5000])
    assert main(["convert", str(truncated), "--out", str(tmp_path / "d.safetensors")]) == 2
    assert "damaged" in capsys.readouterr().err


def _patched(tmp_path: Path, edit) -> Path:
    """A copy of the Coral model with bytes changed by `edit(bytearray, model)`."""
    import tflite

    buf = bytearray(TFLITE["deeplabv3_mobilenetv2_tf"].read_bytes())
    edit(buf, tflite.Model.GetRootAsModel(bytes(buf), 0), tflite)
    out = tmp_path / "other.tflite"
    out.write_bytes(bytes(buf))
    return out


def _stem_stride_1(buf: bytearray, model, tflite) -> None:
    op = model.Subgraphs(0).Operators(0)  # the stem convolution
    table = op.BuiltinOptions()
    opts = tflite.Conv2DOptions()
    opts.Init(table.Bytes, table.Pos)
    field = opts._tab.Offset(6)  # stride_w
    assert field and opts.StrideW() == 2
    buf[opts._tab.Pos + field:opts._tab.Pos + field + 4] = (1).to_bytes(4, "little")


def _rename_aspp(buf: bytearray, model, tflite) -> None:
    at = bytes(buf).find(b"aspp0/Conv2D_Fold")
    assert at >= 0
    while at >= 0:  # every tensor of that layer: an unknown "aspq0" layer
        buf[at:at + 5] = b"aspq0"
        at = bytes(buf).find(b"aspp0/Conv2D_Fold", at)


@pytest.mark.parametrize("edit, words", [(_stem_stride_1, "has stride 1"), (_rename_aspp, "has no place")])
def test_another_graph_is_refused(tmp_path: Path, capsys, edit, words: str) -> None:
    """Files of another graph (a changed stride, an unknown layer) are one line, not a wrong model."""
    other = _patched(tmp_path, edit)
    assert main(["convert", str(other), "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another graph" in err[0] and words in err[0], err
    assert not (tmp_path / "x.safetensors").exists()
