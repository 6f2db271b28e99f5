"""`train --init deeplabv3_mobilenetv2_voc`: fine-tuning starts from the bundled VOC model, its class
layer resized to the project's classes (rows of classes with the same name kept), the backbone and
ASPP kept, its input normalisation and folded batch norm respected."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab_studio.core.labels import VOC_CLASSES, LabelSet
from deeplab_studio.ml.checkpoints import load_checkpoint, read_metadata
from deeplab_studio.ml.train_setup import has_folded_batch_norm, init_model
from deeplab_studio.models import VOC_MODEL, bundled_model_path, bundled_models, model_card

VOC_REAL = Path(__file__).resolve().parents[1] / "data" / "voc_real"
CLASSES = ["background", "person", "cat"]
HEAD = ("classifier.logits.weight", "classifier.logits.bias")
pytestmark = pytest.mark.skipif(VOC_MODEL not in bundled_models(), reason="the VOC model is not bundled")


@pytest.fixture(scope="module")
def voc_state() -> dict[str, torch.Tensor]:
    with bundled_model_path(VOC_MODEL) as path:
        return load_checkpoint(path).model.state_dict()


def test_init_keeps_backbone_aspp_and_the_rows_of_classes_with_the_same_name(voc_state) -> None:
    said: list[str] = []
    torch.manual_seed(0)
    model, arch, pretrained, info = init_model(VOC_MODEL, None, CLASSES, say=said.append)
    state = model.state_dict()
    assert arch == model_card(VOC_MODEL)["arch"] == "deeplabv3_mobilenetv2_tf" and pretrained
    assert state[HEAD[0]].shape[0] == 3 and state[HEAD[1]].shape == (3,)
    rows = [VOC_CLASSES.index(n) for n in CLASSES]  # 0, 15, 8
    for key in HEAD:
        assert torch.equal(state[key], voc_state[key][rows]), key
    for key, value in state.items():  # everything else is the bundled model's
        if key not in HEAD:
            assert torch.equal(value, voc_state[key]), key
    assert info["kept_classes"] == CLASSES and info["new_classes"] == []
    assert info["mean"] == [0.5] * 3 and info["std"] == [0.5] * 3 and info["freeze_bn"]
    assert "bundled model" in said[-1] and "BatchNorm statistics stay fixed" in said[-1]
    from deeplab_studio.ml.zoo import build_model

    assert has_folded_batch_norm(model) and not has_folded_batch_norm(build_model(arch, num_classes=3))


def test_a_new_class_gets_a_fresh_seeded_row(voc_state) -> None:
    names = ["Background", "crack", "PERSON"]
    heads = []
    for _ in range(2):
        torch.manual_seed(7)
        model, *_ = init_model(VOC_MODEL, "deeplabv3_mobilenetv2_tf", names, say=lambda m: None)
        heads.append(model.state_dict()[HEAD[0]])
    a, b = heads
    assert torch.equal(a, b)  # deterministic for a seed
    assert torch.equal(a[0], voc_state[HEAD[0]][0]) and torch.equal(a[2], voc_state[HEAD[0]][15])
    assert not any(torch.allclose(a[1], row) for row in voc_state[HEAD[0]])  # "crack" is new


def test_init_refuses_another_architecture() -> None:
    from deeplab_studio.ml.training import TrainError

    with pytest.raises(TrainError, match="differs from the initial model's deeplabv3_mobilenetv2_tf"):
        init_model(VOC_MODEL, "deeplabv3plus_mobilenet", CLASSES, say=lambda m: None)


def _project(folder: Path) -> Path:
    """A 3-class project (background, person, cat): two real VOC photos with people, shrunk,
    person pixels kept, every other object background (void stays void); both reviewed."""
    from deeplab_studio.storage.project import Project, Status

    folder.mkdir()
    for image_id in ("2011_000003", "2011_000006"):
        with Image.open(VOC_REAL / "images" / f"{image_id}.jpg") as im:
            im.convert("RGB").resize((100, 75), Image.BILINEAR).save(folder / f"{image_id}.png")
    project = Project.open(folder)
    try:
        project.set_labelset(LabelSet(CLASSES, []))
        for rec in project.records:
            with Image.open(VOC_REAL / "masks" / f"{Path(rec.path).stem}.png") as m:
                gt = np.asarray(m.resize((100, 75), Image.NEAREST))
            labels = np.where(gt == 255, 255, np.where(gt == 15, 1, 0)).astype(np.uint8)
            project.save_annotation(rec, labels, np.ones(labels.shape, bool), status=Status.REVIEWED)
        project.save()
    finally:
        project.close()
    return folder


def _cli(argv: list[str]) -> tuple[int, str]:
    from deeplab_studio.cli import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


def test_short_cli_run_from_the_bundled_model_on_a_3_class_project(tmp_path: Path, voc_state) -> None:
    folder = _project(tmp_path / "proj")
    out = tmp_path / "ft.safetensors"
    code, err = _cli(["train", str(folder), "--out", str(out), "--epochs", "2", "--batch-size", "1", "--crop", "48",
                      "--lr", "0.001", "--val-fraction", "0.5", "--workers", "0", "--threads", "1",
                      "--device", "cpu", "--quiet"])  # no --init, no --arch: the bundled VOC model
    assert code == 0, err
    assert f"from the bundled model {VOC_MODEL}" in err and "finished after 2 steps" in err
    ft = load_checkpoint(out)
    assert ft.arch == "deeplabv3_mobilenetv2_tf" and ft.class_names == CLASSES and ft.num_classes == 3
    assert ft.mean == (0.5, 0.5, 0.5) and ft.std == (0.5, 0.5, 0.5)  # the predictor feeds it like the original
    state = ft.model.state_dict()
    assert state[HEAD[0]].shape == (3, 256, 1, 1)
    stats = [k for k in state if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(state[k], voc_state[k]) for k in stats)  # frozen: folded BN stays an identity
    moved = (state[HEAD[0]] - voc_state[HEAD[0]][[0, 15, 8]]).abs().max()
    assert 0 < moved < 0.1  # it trained, a little, from the kept rows
    summary = read_metadata(out)["training"]
    assert summary["init"]["init"] == VOC_MODEL and summary["init"]["kept_classes"] == CLASSES
    assert has_folded_batch_norm(ft.model)  # fine-tuning it again keeps batch norm frozen too
    _, _, _, info = init_model(str(out), None, CLASSES, say=lambda m: None)
    assert info["freeze_bn"] and info["mean"] == [0.5] * 3 and info["kept_classes"] == CLASSES


def test_imagenet_for_the_tf_architecture_is_random_with_its_normalisation() -> None:
    said: list[str] = []
    _, arch, pretrained, info = init_model("imagenet", "deeplabv3_mobilenetv2_tf", CLASSES, say=said.append)
    assert arch == "deeplabv3_mobilenetv2_tf" and not pretrained and info["init"] == "random"
    assert info["mean"] == [0.5] * 3 and not info["freeze_bn"]
    assert any("no ImageNet backbone" in m for m in said) and said[-1].endswith("random initialisation")


def test_cli_init_choices_and_errors(tmp_path: Path) -> None:
    folder = _project(tmp_path / "proj")
    out = str(tmp_path / "m.safetensors")
    code, err = _cli(["train", str(folder), "--out", out, "--init", VOC_MODEL, "--arch", "deeplabv3plus_mobilenet"])
    assert code == 2 and "differs from the initial model's deeplabv3_mobilenetv2_tf" in err
    code, err = _cli(["train", str(folder), "--out", out, "--init", "deeplabv3_nosuch"])
    assert code == 2 and "--init must be a bundled model" in err and VOC_MODEL in err
    from deeplab_studio.commands.train import resolve_init

    assert resolve_init(None, None) == VOC_MODEL
    assert resolve_init(None, "deeplabv3_mobilenetv2_tf") == VOC_MODEL
    assert resolve_init(None, "deeplabv3plus_mobilenet") == "imagenet"  # an explicit other arch: as before
    assert resolve_init("random", "deeplabv3_mobilenetv2_tf") == "random"
    from deeplab_studio.commands.train import default_lr

    assert default_lr("sgd", VOC_MODEL) == 0.001 and default_lr("sgd", "random") == default_lr("sgd", "imagenet") == 0.01
    assert default_lr("adamw", VOC_MODEL) == 1e-4
