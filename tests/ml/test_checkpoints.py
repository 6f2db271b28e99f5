"""Checkpoint formats: own safetensors, VainF .pth, torchvision weights, and every bad file."""

from __future__ import annotations

import functools
import hashlib
import json
import http.server
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch
import torchvision
from torch import nn

from deeplab_studio.ml import checkpoints, hub
from deeplab_studio.ml.checkpoints import (CheckpointError, fetch_torchvision_weights,
                                           load_checkpoint, read_metadata, save_checkpoint)
from deeplab_studio.ml.zoo import build_model

TV_R50_NAME = "deeplabv3_resnet50_coco-cd0a2569.pth"


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN statistics, so that every layer matters to the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            if key.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
            else:
                value.copy_(torch.randn(value.shape, generator=gen) * 0.1)
    return model.eval()


def run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model.eval()(x)
    return out["out"] if isinstance(out, dict) else out


X = torch.randn(1, 3, 65, 77, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def vainf_model() -> nn.Module:
    return randomize(build_model("deeplabv3plus_mobilenet", num_classes=21), seed=1)


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """torchvision's own deeplabv3_resnet50 (random weights, aux head) saved as a .pth file,
    and its output on X."""
    tv = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, aux_loss=True, num_classes=21)
    randomize(tv, seed=2)
    path = tmp_path_factory.mktemp("tv") / TV_R50_NAME
    torch.save(tv.state_dict(), path)
    return path, run(tv, X)


# ----------------------------------------------------------------------- own format

def test_own_format_round_trip(tmp_path: Path) -> None:
    model = randomize(build_model("deeplabv3plus_mobilenet", num_classes=3, separable=True,
                                  decoder_convs=2, output_stride=8), seed=3)
    want = run(model, X)
    path = save_checkpoint(
        tmp_path / "m.safetensors", model, arch="deeplabv3plus_mobilenet", num_classes=3,
        class_names=["background", "cat", "dog"], class_colors=[(0, 0, 0), (255, 0, 0), (0, 255, 0)],
        output_stride=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
        training={"epochs": 2, "best_miou": 0.5, "images": 12})
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left
    with safetensors.safe_open(str(path), framework="pt") as fh:
        assert "deeplab_studio" in fh.metadata()

    loaded = load_checkpoint(path)
    assert (loaded.arch, loaded.num_classes, loaded.output_stride) == ("deeplabv3plus_mobilenet", 3, 8)
    assert loaded.class_names == ["background", "cat", "dog"]
    assert loaded.class_colors == [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    assert loaded.mean == (0.5, 0.5, 0.5) and loaded.std == (0.25, 0.25, 0.25)
    assert loaded.meta["training"] == {"epochs": 2, "best_miou": 0.5, "images": 12}
    assert loaded.meta["separable"] is True and loaded.meta["decoder_convs"] == 2
    assert not loaded.model.training
    torch.testing.assert_close(run(loaded.model, X), want)
    assert read_metadata(path)["arch"] == "deeplabv3plus_mobilenet"

    at16 = load_checkpoint(path, output_stride=16)
    assert at16.output_stride == 16 and at16.model.aspp.rates == (6, 12, 18)


def test_save_checks_its_arguments(tmp_path: Path, vainf_model: nn.Module) -> None:
    with pytest.raises(ValueError, match="not deeplabv3_mobilenet"):
        save_checkpoint(tmp_path / "a.safetensors", vainf_model, arch="deeplabv3_mobilenet", num_classes=21)
    with pytest.raises(ValueError, match="class names"):
        save_checkpoint(tmp_path / "b.safetensors", vainf_model, arch="deeplabv3plus_mobilenet",
                        num_classes=21, class_names=["a", "b"])
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------ VainF files

@pytest.mark.parametrize("prefix", ["", "module."])
def test_vainf_pth_with_training_state_loads(tmp_path: Path, vainf_model: nn.Module, prefix: str) -> None:
    opt = torch.optim.SGD(vainf_model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=30000, power=0.9)
    path = tmp_path / "best_deeplabv3plus_mobilenet_voc_os16.pth"
    torch.save({
        "cur_itrs": 30000,
        "model_state": {prefix + k: v for k, v in vainf_model.state_dict().items()},
        "optimizer_state": opt.state_dict(),
        "scheduler_state": sched.state_dict(),
        "best_score": np.float64(0.7123),
    }, path)
    loaded = load_checkpoint(path)
    assert (loaded.arch, loaded.num_classes, loaded.output_stride) == ("deeplabv3plus_mobilenet", 21, 16)
    assert loaded.meta["format"] == "vainf"
    assert loaded.meta["best_score"] == pytest.approx(0.7123) and loaded.meta["cur_itrs"] == 30000
    assert loaded.class_names is not None and loaded.class_names[15] == "person"
    torch.testing.assert_close(run(loaded.model, X), run(vainf_model, X))


def test_bare_state_dicts_load(tmp_path: Path) -> None:
    model = randomize(build_model("deeplabv3_mobilenet", num_classes=5), seed=4)
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    safetensors.torch.save_file(model.state_dict(), str(tmp_path / "bare.safetensors"))
    for name in ("bare.pth", "bare.safetensors"):
        loaded = load_checkpoint(tmp_path / name)
        assert (loaded.arch, loaded.num_classes, loaded.class_names) == ("deeplabv3_mobilenet", 5, None)
        torch.testing.assert_close(run(loaded.model, X), run(model, X))


def test_separable_vainf_file_detected(tmp_path: Path) -> None:
    model = randomize(build_model("deeplabv3_mobilenet", num_classes=19, separable=True), seed=6)
    torch.save({"model_state": model.state_dict()}, tmp_path / "sep.pth")
    loaded = load_checkpoint(tmp_path / "sep.pth", output_stride=8)
    assert loaded.meta["separable"] is True and loaded.num_classes == 19
    set_model = build_model("deeplabv3_mobilenet", num_classes=19, separable=True, output_stride=8)
    set_model.load_state_dict(model.state_dict())
    torch.testing.assert_close(run(loaded.model, X), run(set_model, X))


@pytest.mark.parametrize("arch, options", [("deeplabv3plus_resnet101", {"separable": True, "decoder_convs": 2}),
                                           ("deeplabv3plus_mobilenet", {"decoder_convs": 2})])
def test_backbone_depth_and_paper_decoder_detected_from_keys(tmp_path: Path, arch: str, options: dict) -> None:
    """A bare state dict (no metadata): depth, v3+, separable and the two-conv decoder come from keys."""
    model = randomize(build_model(arch, num_classes=7, **options), seed=8)
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    loaded = load_checkpoint(tmp_path / "bare.pth")
    assert (loaded.arch, loaded.num_classes, loaded.meta["decoder_convs"]) == (arch, 7, 2)
    assert loaded.meta["separable"] is options.get("separable", False)
    torch.testing.assert_close(run(loaded.model, X), run(model, X))


# ------------------------------------------------------------------ torchvision files

def test_torchvision_deeplabv3_resnet50_reproduces_outputs(torchvision_file) -> None:
    path, want = torchvision_file
    loaded = load_checkpoint(path)
    assert (loaded.arch, loaded.num_classes, loaded.output_stride) == ("deeplabv3_resnet50", 21, 8)
    assert loaded.meta["format"] == "torchvision"
    assert not any(k.startswith("aux_classifier") for k in loaded.model.state_dict())
    torch.testing.assert_close(run(loaded.model, X), want, rtol=1e-4, atol=1e-4)


def test_fetch_uses_cached_file_without_network(torchvision_file, tmp_path, monkeypatch) -> None:
    path, _ = torchvision_file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / TV_R50_NAME
    cached.parent.mkdir(parents=True)
    cached.symlink_to(path)
    assert fetch_torchvision_weights("deeplabv3_resnet50") == cached
    assert load_checkpoint(cached).arch == "deeplabv3_resnet50"
    # Our locally made file is not torchvision's real one: an explicit re-check says so.
    with pytest.raises(CheckpointError, match="sha256"):
        fetch_torchvision_weights("deeplabv3_resnet50", verify=True)


def test_fetch_offline_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setitem(checkpoints.TORCHVISION_WEIGHTS, "deeplabv3_resnet50",
                        "http://127.0.0.1:9/" + TV_R50_NAME)  # closed port, fails at once
    with pytest.raises(CheckpointError, match="cannot download"):
        fetch_torchvision_weights("deeplabv3_resnet50", timeout=2)
    assert not any((tmp_path / "hub" / "checkpoints").iterdir())
    with pytest.raises(CheckpointError, match="known"):
        fetch_torchvision_weights("fcn_resnet50")


def test_torchvision_mobilenet_v3_large_reproduces_outputs(tmp_path: Path) -> None:
    tv = randomize(torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, aux_loss=True), seed=7)
    torch.save(tv.state_dict(), tmp_path / "mbv3.pth")
    loaded = load_checkpoint(tmp_path / "mbv3.pth")
    assert (loaded.arch, loaded.output_stride) == ("deeplabv3_mobilenet_v3_large", 16)
    torch.testing.assert_close(run(loaded.model, X), run(tv, X), rtol=1e-4, atol=1e-4)
    with pytest.raises(CheckpointError, match="output stride 16"):
        load_checkpoint(tmp_path / "mbv3.pth", output_stride=8)


@pytest.fixture()
def http_folder(tmp_path):
    """A real local HTTP server over tmp_path/'srv'."""
    root = tmp_path / "srv"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()
    server.server_close()


def test_download_checks_the_hash(http_folder, tmp_path, monkeypatch) -> None:
    root, base = http_folder
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    payload = b"weights" * 50000
    good = f"w-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    (root / good).write_bytes(payload)
    (root / "w-deadbeef.pth").write_bytes(payload)
    seen = []
    got = hub.download(f"{base}/{good}", progress=lambda done, total: seen.append((done, total)))
    assert got.read_bytes() == payload and got.parent == hub.hub_checkpoint_dir()
    assert seen[-1] == (len(payload), len(payload))
    with pytest.raises(hub.WeightsUnavailable, match="does not match"):
        hub.download(f"{base}/w-deadbeef.pth")
    assert sorted(p.name for p in got.parent.iterdir()) == [good]


# ------------------------------------------------------------------------ bad files

class _Payload:
    """Unpickling this would create a file."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


class _Shell:
    """Unpickling this would run a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


def test_malicious_pickles_run_nothing(tmp_path: Path, vainf_model: nn.Module) -> None:
    target = tmp_path / "pwned"
    torch.save({"model_state": vainf_model.state_dict(), "extra": _Payload(target)}, tmp_path / "evil.pth")
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"model_state": _Payload(target)}, protocol=2))
    # os.system is in a module torch blocks outright (its message differs from an unlisted global's)
    torch.save({"model_state": _Shell(f"touch {target}")}, tmp_path / "shell.pth")
    for name in ("evil.pth", "evil.pkl", "shell.pth"):
        with pytest.raises(CheckpointError, match="refused to load") as info:
            load_checkpoint(tmp_path / name)
        text = str(info.value)
        assert name in text and "\n" not in text and "weights_only" not in text  # one line, no unsafe advice
    assert not target.exists()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_each_bad_file_has_one_clear_error(tmp_path: Path, vainf_model: nn.Module) -> None:
    good = save_checkpoint(tmp_path / "good.safetensors", vainf_model,
                           arch="deeplabv3plus_mobilenet", num_classes=21)
    torch.save({"model_state": vainf_model.state_dict()}, tmp_path / "good.pth")
    data, pth = good.read_bytes(), (tmp_path / "good.pth").read_bytes()
    cases = {
        tmp_path / "missing.pth": "file not found",
        tmp_path: "not a file",
        _write(tmp_path / "empty.pth", b""): "empty",
        _write(tmp_path / "notes.txt", b"hello, not weights\n" * 10): "not a checkpoint",
        _write(tmp_path / "cut.safetensors", data[: len(data) // 2]): "truncated",
        _write(tmp_path / "cut_header.safetensors", data[:100]): "truncated",
        _write(tmp_path / "cut.pth", pth[: len(pth) // 2]): "corrupt or truncated",
    }
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    cases[tmp_path / "tensor.pth"] = "not a checkpoint"
    torch.save({"epoch": 3, "note": "no weights"}, tmp_path / "noweights.pth")
    cases[tmp_path / "noweights.pth"] = "no model weights"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "classifier.pth")
    cases[tmp_path / "classifier.pth"] = "not a supported segmentation checkpoint"
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    cases[tmp_path / "other.safetensors"] = "not a supported segmentation checkpoint"
    # VainF's Xception model (keys only; the layout decides before any shape is used).
    keys = (Path(__file__).resolve().parents[1] / "data" / "state_dict_keys"
            / "vainf_deeplabv3plus_xception.txt").read_text().splitlines()
    torch.save({"model_state": {line.split("\t")[0]: torch.zeros(1) for line in keys}},
               tmp_path / "xception.pth")
    cases[tmp_path / "xception.pth"] = "Xception backbone is not supported"
    header = {"format": "deeplab_studio.checkpoint", "version": 1, "arch": "deeplabv3plus_mobilenet",
              "num_classes": 21}
    for name, meta, reason in [
        ("badjson", "{not json", "damaged metadata"),
        ("newer", json.dumps({**header, "version": 99}), "newer than this"),
        ("arch", json.dumps({**header, "arch": "deeplabv3plus_hrnetv2_48"}), "unknown architecture"),
        ("mean", json.dumps({**header, "mean": [0.5, "x"]}), "damaged metadata"),
        ("names", json.dumps({**header, "class_names": ["a"]}), "damaged metadata"),
    ]:
        path = tmp_path / f"meta_{name}.safetensors"
        safetensors.torch.save_file({"w": torch.zeros(1)}, str(path), metadata={"deeplab_studio": meta})
        cases[path] = reason
    for path, reason in cases.items():
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert reason in str(info.value), (path, str(info.value))
        assert str(path) in str(info.value)


def test_mismatched_weights_name_the_keys(tmp_path: Path, vainf_model: nn.Module) -> None:
    state = dict(vainf_model.state_dict())
    del state["classifier.aspp.convs.4.1.weight"]
    state["classifier.extra.weight"] = torch.zeros(1)
    state["classifier.project.0.weight"] = torch.zeros(48, 32, 1, 1)
    torch.save({"model_state": state}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "odd.pth")
    msg = str(info.value)
    assert "missing keys: classifier.aspp.convs.4.1.weight" in msg
    assert "unexpected keys: classifier.extra.weight" in msg
    assert "classifier.project.0.weight (48, 32, 1, 1)" in msg
