"""Hostile or odd checkpoint files (issue 10): each ends in one clear CheckpointError line,
nothing in them runs, and nothing is inflated past the memory budget."""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch

from deeplab_studio.ml import checkpoint_safety
from deeplab_studio.ml.checkpoints import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from deeplab_studio.ml.zoo import build_model

# torch's own warnings about the odd files these tests make and load
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*(TypedStorage is deprecated|quantized tensor creation|pickle protocol|sparse tensor invariants)"
    ":UserWarning")

FINAL = "classifier.classifier.4.weight"  # deeplabv3_mobilenet's last conv
GIB = 1024 ** 3


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    """A small, complete deeplabv3_mobilenet state dict (3 classes)."""
    return dict(build_model("deeplabv3_mobilenet", num_classes=3).state_dict())


def refused(path: Path, reason: str) -> str:
    """The error for ``path``; asserts it names the file, contains ``reason`` and is one line."""
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert str(path) in text and reason in text, text
    assert "\n" not in text and "weights_only" not in text, text
    return text


def _with(state: dict, key: str, value) -> dict:
    return {**state, key: value}


# ----------------------------------------------------------- odd keys and tensor kinds

ODD_ENTRIES = {
    "int_keys": (lambda s: {i: v for i, v in enumerate(s.values())}, "key 0 (int) is not a parameter name"),
    "tuple_keys": (lambda s: {("m", k): v for k, v in s.items()}, "(tuple) is not a parameter name"),
    "sparse": (lambda s: _with(s, FINAL, s[FINAL].to_sparse()), "is a sparse tensor"),
    "quantized": (lambda s: _with(s, FINAL, torch.quantize_per_tensor(s[FINAL], 0.1, 0, torch.qint8)),
                  "is a quantized tensor"),
    "meta": (lambda s: {k: v.to("meta") for k, v in s.items()}, "meta-device tensor that holds no weights"),
    "untyped_storage": (lambda s: _with(s, FINAL, s[FINAL].untyped_storage()), "is a legacy storage"),
    "float_storage": (lambda s: _with(s, FINAL, torch.FloatStorage(4)), "is a legacy storage"),
}


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("case", sorted(ODD_ENTRIES))
def test_odd_keys_and_tensor_kinds_are_one_line(tmp_path: Path, state: dict, case: str, zip_format: bool) -> None:
    make, reason = ODD_ENTRIES[case]
    path = tmp_path / f"{case}.pth"
    torch.save({"model_state": make(state)}, path, _use_new_zipfile_serialization=zip_format)
    if case == "untyped_storage" and not zip_format:  # torch's own legacy reader fails on it (AttributeError)
        refused(path, "corrupt or truncated PyTorch file (type object 'torch.storage.UntypedStorage'")
        return
    assert "not a usable state dict" in refused(path, reason)


def test_old_style_files(tmp_path: Path, state: dict) -> None:
    legacy = tmp_path / "legacy.pth"
    torch.save({"model_state": state}, legacy, _use_new_zipfile_serialization=False)
    assert load_checkpoint(legacy).num_classes == 3  # the pre-1.6 pickle format still loads
    old_tar = tmp_path / "old_tar.pth"  # pre-1.0 torch.save wrote a tar of storages/tensors/pickle
    with tarfile.open(old_tar, "w") as tar:
        for name in ("sys_info", "pickle", "tensors", "storages"):
            tar.addfile(tarfile.TarInfo(name))
    refused(old_tar, "pre-1.0 .tar format")


# ----------------------------------------------------------------- values that are not floats

BAD_VALUES = {
    "nan": (lambda t: t.index_fill(0, torch.tensor([1]), float("nan")), "holds NaN or infinite values"),
    "inf": (lambda t: t.index_fill(0, torch.tensor([0]), float("inf")), "holds NaN or infinite values"),
    "complex": (lambda t: t.to(torch.complex64), "holds complex numbers (complex64)"),
    "int": (lambda t: t.to(torch.int32), "is int32 where floating-point weights are expected"),
    "bool": (lambda t: t > 0, "is bool where floating-point weights are expected"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_non_float_or_non_finite_weights_are_refused(tmp_path: Path, state: dict, case: str) -> None:
    change, reason = BAD_VALUES[case]
    path = tmp_path / f"{case}.pth"
    torch.save({"model_state": _with(state, FINAL, change(state[FINAL]))}, path)
    assert f"unusable weights: {FINAL} {reason}" in refused(path, reason)


def test_nan_in_a_safetensors_file_is_refused(tmp_path: Path, state: dict) -> None:
    path = tmp_path / "nan.safetensors"
    bad = state["backbone.low_level_features.0.0.weight"].clone()
    bad[0, 0, 0, 0] = float("nan")
    safetensors.torch.save_file(_with(state, "backbone.low_level_features.0.0.weight", bad), str(path))
    refused(path, "holds NaN or infinite values")


def test_integer_batch_counters_still_load(tmp_path: Path, state: dict) -> None:
    assert state["backbone.low_level_features.0.1.num_batches_tracked"].dtype == torch.int64
    torch.save(state, tmp_path / "ok.pth")
    assert load_checkpoint(tmp_path / "ok.pth").arch == "deeplabv3_mobilenet"


# ------------------------------------------------------------------------ zip bombs

def _zeros_deflated(n_mib: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``n_mib`` MiB of zeros (about 1 KiB per MiB, made in moments:
    after a full flush every 1 MiB segment compresses to the same bytes) and their CRC-32."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    mib = bytes(1 << 20)
    segment = comp.compress(mib) + comp.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(n_mib):
        crc = zlib.crc32(mib, crc)
    return segment * n_mib + comp.flush(), crc


def _write_zip(path: Path, members: list[tuple[str, bytes, int, int, int]]) -> Path:
    """A zip by hand: (name, stored bytes, method, uncompressed size, CRC-32) per member."""
    body, central = b"", b""
    for name, data, method, size, crc in members:
        raw = name.encode()
        fields = struct.pack("<HHHHHIIIHH", 20, 0, method, 0, 0x21, crc, len(data), size, len(raw), 0)
        central += struct.pack("<IH", 0x02014B50, 20) + fields + struct.pack("<HHHII", 0, 0, 0, 0, len(body)) + raw
        body += struct.pack("<I", 0x04034B50) + fields + raw + data
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(body), 0)
    path.write_bytes(body + central + end)
    return path


def _grow_tensors(pickled: bytes, old: int, new: int) -> bytes:
    """``data.pkl`` with every small int ``old`` (numel and shape) replaced by ``new``."""
    out, last = b"", 0
    for op, arg, pos in pickletools.genops(pickled):
        if op.name == "BININT1" and arg == old:
            out += pickled[last:pos] + b"J" + struct.pack("<i", new)
            last = pos + 2
    return out + pickled[last:]


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path: Path, monkeypatch) -> None:
    """A well-formed torch file of two 3 GiB float tensors of zeros, deflated to ~6 MB."""
    small = tmp_path / "small.pth"
    torch.save({"model_state": {"a": torch.zeros(7), "b": torch.zeros(7)}}, small)
    with zipfile.ZipFile(small) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    prefix = next(iter(members)).split("/")[0]
    members[f"{prefix}/data.pkl"] = _grow_tensors(members[f"{prefix}/data.pkl"], 7, 3 * GIB // 4)
    bomb, crc = _zeros_deflated(3 * 1024)
    rows = [(name, data, zipfile.ZIP_STORED, len(data), zlib.crc32(data))
            for name, data in members.items() if not name.startswith(f"{prefix}/data/")]
    rows += [(f"{prefix}/data/{i}", bomb, zipfile.ZIP_DEFLATED, 3 * GIB, crc) for i in range(2)]
    path = _write_zip(tmp_path / "bomb.pth", rows)
    assert path.stat().st_size < 10 * 1024 ** 2
    with zipfile.ZipFile(path) as zf:  # a zip that really inflates that far
        assert zf.open(f"{prefix}/data/1").read(1 << 20) == bytes(1 << 20)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was reached"))
    text = refused(path, "too large to load: its members would inflate to 6.0 GiB")
    assert "memory budget" in text


def test_budget_counts_every_member_of_a_real_file(tmp_path: Path, state: dict, monkeypatch) -> None:
    torch.save({"model_state": state}, tmp_path / "m.pth")
    monkeypatch.setattr(checkpoint_safety, "memory_budget", lambda: 1024 ** 2)
    refused(tmp_path / "m.pth", "over the 0.0 GiB memory budget")


@pytest.mark.parametrize("available, budget", [(None, 4 * GIB), (64 * GIB, 4 * GIB),
                                               (5 * GIB, 2.5 * GIB), (GIB, GIB)])
def test_memory_budget(monkeypatch, available, budget) -> None:
    monkeypatch.setattr(checkpoint_safety, "_available_memory", lambda: available)
    assert checkpoint_safety.memory_budget() == budget


# ----------------------------------------------------------- pickles that would run code

class _Shell:
    """Unpickling this would run a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Opener:
    """Unpickling this would create a file."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("protocol", [4, 5])
def test_protocol_4_and_5_pickles_that_run_code_are_refused(tmp_path: Path, state: dict, protocol: int) -> None:
    target = tmp_path / "pwned"
    payloads = {"shell": _Shell(f"touch {target}"), "opener": _Opener(target)}
    for name, payload in payloads.items():
        plain = tmp_path / f"{name}_plain.pth"  # a bare pickle.dumps, not a torch file
        plain.write_bytes(pickle.dumps({"model_state": state, "x": payload}, protocol=protocol))
        zipped = tmp_path / f"{name}_zip.pth"  # a torch zip whose data.pkl is that pickle
        torch.save({"model_state": {"w": torch.zeros(1)}}, zipped)
        with zipfile.ZipFile(zipped) as zf:
            members = {i.filename: zf.read(i) for i in zf.infolist()}
        with zipfile.ZipFile(zipped, "w") as zf:
            for member, data in members.items():
                zf.writestr(member, pickle.dumps(payload, protocol=protocol) if member.endswith("/data.pkl") else data)
        called = "posix.system" if name == "shell" else "io.open"
        for path in (plain, zipped):
            text = refused(path, "refused to load")
            assert "could run code" in text and called in text and "corrupt" not in text
    assert not target.exists()


@pytest.mark.parametrize("protocol", [4, 5])
def test_harmless_protocol_4_pickles_are_not_called_dangerous(tmp_path: Path, protocol: int) -> None:
    from collections import OrderedDict

    path = tmp_path / "plain.pth"
    path.write_bytes(pickle.dumps(OrderedDict(a=1, b=[2.0, "x"]), protocol=protocol))
    assert "could run code" not in refused(path, "corrupt or truncated PyTorch file")


def test_pickle_scan_follows_memo_and_marks() -> None:
    data = pickle.dumps([_Shell("a"), _Shell("b"), {"k": (1, 2)}, _Opener(Path("x"))], protocol=4)
    assert checkpoint_safety.pickle_globals(data) == ["posix.system", "io.open"]
    legacy = pickle.dumps(1, protocol=2) + pickle.dumps({"a": _Shell("c")}, protocol=2) + b"\x00raw bytes"
    assert checkpoint_safety.pickle_globals(legacy) == ["posix.system"]


# ------------------------------------------------------------------ class names in metadata

@pytest.mark.parametrize("names", [[0, 1, 2], ["background", ["cat"], "dog"], ["a", None, "c"],
                                   ["a", {"n": 1}, "c"]])
def test_non_string_class_names_are_refused_at_load(tmp_path: Path, state: dict, names: list) -> None:
    model = build_model("deeplabv3_mobilenet", num_classes=3)
    model.load_state_dict(state)
    good = save_checkpoint(tmp_path / "good.safetensors", model, arch="deeplabv3_mobilenet",
                           num_classes=3, class_names=["background", "cat", "dog"])
    with safetensors.safe_open(str(good), framework="pt") as fh:
        meta = json.loads(fh.metadata()["deeplab_studio"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    path = tmp_path / "names.safetensors"
    safetensors.torch.save_file(tensors, str(path), metadata={"deeplab_studio": json.dumps({**meta, "class_names": names})})
    refused(path, "damaged metadata (class_names must be a list of 3 strings)")
    with pytest.raises(CheckpointError, match="list of 3 strings"):
        read_metadata(path)
