"""`predict --shard K/N` and `--merge-report` (issue 15): a split by path hash that adding files does
not move, shards in real processes that cover every input exactly once, resuming after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab_studio.cli import main
from deeplab_studio.commands import CommandError
from deeplab_studio.commands.predict import collect_inputs
from deeplab_studio.commands.predict_outputs import MANIFEST_NAME
from deeplab_studio.commands.predict_shard import parse_shard, shard_of
from deeplab_studio.ml.checkpoints import save_checkpoint
from deeplab_studio.ml.zoo import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ckpt(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    save_checkpoint(path, build_model("deeplabv3plus_mobilenet", num_classes=3), arch="deeplabv3plus_mobilenet",
                    num_classes=3, class_colors=[(0, 0, 0), (250, 10, 10), (10, 250, 10)])
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    return _ckpt(folder / "a.safetensors", 3), _ckpt(folder / "b.safetensors", 4)


def _image(path: Path, h: int = 32, w: int = 40, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _dataset(root: Path, n: int) -> list[Path]:
    return [_image(root / ("sub" if i % 3 == 0 else "") / f"im{i:02d}.{'jpg' if i % 2 else 'png'}", seed=i)
            for i in range(n)]


def _predict(ckpt: Path, *args: str) -> int:
    return main(["predict", "--model", str(ckpt), "--device", "cpu", "--quiet", *args])


def _manifest_files(path: Path) -> list[str]:
    return [json.loads(line)["file"] for line in path.read_text().splitlines()]


def _summary(out: Path, k: int, n: int) -> dict:
    return json.loads((out / f".deeplab-studio-predict.shard-{k}-of-{n}.summary.json").read_text())


def _signature(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("[!.]*")) if p.is_file()}


# --- the split -------------------------------------------------------------------------------------------
def test_shard_argument() -> None:
    assert parse_shard("2/3") == (2, 3) and parse_shard(" 0 / 1 ") == (0, 1)
    for bad, words in (("3/3", "0 to N-1"), ("1/0", "0 to N-1"), ("a/b", "expected K/N"), ("1", "expected K/N")):
        with pytest.raises(CommandError, match=words):
            parse_shard(bad)


def test_adding_files_moves_no_assignment(tmp_path: Path) -> None:
    _dataset(tmp_path / "in", 12)
    before = {item.key: shard_of(item.key, 3) for item in collect_inputs([str(tmp_path / "in")])}
    for i in range(12, 40):  # new files sort before, between and after the old ones
        _image(tmp_path / "in" / ("a" if i % 2 else "z") / f"new{i}.png", seed=i)
    after = {item.key: shard_of(item.key, 3) for item in collect_inputs([str(tmp_path / "in")])}
    assert len(before) == 12 and len(after) == 40
    assert {key: after[key] for key in before} == before
    assert "sub/im00.png" in before  # the key is the path relative to the input folder, not where it is mounted
    moved = tmp_path / "elsewhere"
    (tmp_path / "in").rename(moved)
    assert {item.key: shard_of(item.key, 3) for item in collect_inputs([str(moved)])} == after
    assert set(after.values()) == {0, 1, 2}
    keys = [f"img_{i:06d}.jpg" for i in range(3000)]
    counts = np.bincount([shard_of(k, 4) for k in keys], minlength=4)
    assert counts.min() > 600, counts  # about 750 each: a hash, not the first letter


# --- shards in real processes ------------------------------------------------------------------------------
@pytest.mark.slow
def test_three_shard_processes_cover_every_input_once(tmp_path: Path, ckpts) -> None:
    ckpt = ckpts[0]
    _dataset(tmp_path / "in", 9)
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "deeplab_studio", "predict", "--model", str(ckpt), "--device",
                               "cpu", "--quiet", "--save-probs", str(tmp_path / "in"), "--out", str(out),
                               "--shard", f"{k}/3"], env=env, stderr=subprocess.PIPE, text=True) for k in range(3)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert _predict(ckpt, "--save-probs", str(tmp_path / "in"), "--out", str(tmp_path / "plain")) == 0
    expected = _files(tmp_path / "plain")
    assert len(expected) == 18 and _files(out) == expected  # the same bytes as one plain run
    listed = [f for k in range(3) for f in _manifest_files(out / f".deeplab-studio-predict.shard-{k}-of-3.jsonl")]
    assert sorted(listed) == sorted(expected)  # every file written by exactly one shard, in its own list
    assert not (out / MANIFEST_NAME).exists()
    assigned = [name for k in range(3) for name in _summary(out, k, 3)["assigned"]]
    assert sorted(assigned) == sorted({f.split(".")[0] for f in expected})
    assert all(_summary(out, k, 3)["status"] == "finished" for k in range(3))


def test_merge_report_numbers(tmp_path: Path, ckpts, capsys) -> None:
    ckpt = ckpts[0]
    _dataset(tmp_path / "in", 6)
    bad = tmp_path / "in" / "im01.jpg"
    bad.write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    shards = {item.stem.as_posix(): shard_of(item.key, 2) for item in collect_inputs([str(tmp_path / "in")])}
    assert sorted(set(shards.values())) == [0, 1]
    bad_shard = shards["im01"]
    assert _predict(ckpt, str(tmp_path / "in"), "--out", str(out), "--shard", f"{bad_shard}/2") == 1
    capsys.readouterr()
    assert main(["predict", "--merge-report", str(out)]) == 1  # the other shard has not run, one file failed
    report = capsys.readouterr().out
    others = sorted(name for name, k in shards.items() if k != bad_shard)
    mine = sum(k == bad_shard for k in shards.values())
    assert f"shard {1 - bad_shard}/2: no summary" in report
    assert f"total: 6 inputs: {mine - 1} done ({mine - 1} written, 0 already done), 1 failed, " \
           f"{len(others)} missing" in report
    assert f"{bad}: " in report  # why it failed
    assert _predict(ckpt, str(tmp_path / "in"), "--out", str(out), "--shard", f"{1 - bad_shard}/2") == 0
    capsys.readouterr()
    assert main(["predict", "--merge-report", str(out)]) == 1
    assert "total: 6 inputs: 5 done (5 written, 0 already done), 1 failed, 0 missing" in capsys.readouterr().out
    _image(bad, seed=1)  # the user fixes the file and reruns that shard: only it is predicted
    assert _predict(ckpt, str(tmp_path / "in"), "--out", str(out), "--shard", f"{bad_shard}/2") == 0
    assert _summary(out, bad_shard, 2)["written"] == ["im01"]
    capsys.readouterr()
    assert main(["predict", "--merge-report", str(out)]) == 0
    report = capsys.readouterr().out
    assert f"total: 6 inputs: 6 done ({1 + 6 - mine} written, {mine - 1} already done), 0 failed, 0 missing" \
        in report
    _image(tmp_path / "in" / "late.png", seed=9)  # added after the shards ran: named when the INPUTs are given
    assert main(["predict", "--merge-report", str(out), str(tmp_path / "in")]) == 1
    report = capsys.readouterr().out
    assert "total: 7 inputs: 6 done" in report and "missing (no output): late.png" in report


def test_merge_report_and_shard_mistakes_are_one_clear_line(tmp_path: Path, capsys) -> None:
    for argv, words in ((["--merge-report", str(tmp_path)], "no shard summaries found"),
                        (["--merge-report", str(tmp_path), "--shard", "0/2"], "it takes no --out, --shard"),
                        (["--out", str(tmp_path / "out")], "give the images and --out DIR"),
                        ([str(tmp_path), "--out", str(tmp_path / "out"), "--shard", "2/2"], "K must be 0 to N-1")):
        assert main(["predict", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "out").exists()


# --- resuming ------------------------------------------------------------------------------------------------
def test_a_killed_shard_is_resumed(tmp_path: Path, ckpts, capsys) -> None:
    """The state a kill leaves: a file listed but never renamed into place, an image with one of its
    two files, a summary still 'running'. The rerun redoes those two images and nothing else."""
    ckpt = ckpts[0]
    _dataset(tmp_path / "in", 5)
    out = tmp_path / "out"
    argv = ["--save-probs", str(tmp_path / "in"), "--out", str(out), "--shard", "0/1"]
    assert _predict(ckpt, *argv) == 0
    first = _files(out)
    before = {rel: _signature(out / rel) for rel in first}
    (out / "im02.png").unlink()  # listed before the write, killed before the rename
    (out / "sub" / "im03.probs.npy").unlink()  # killed between an image's two files
    summary = _summary(out, 0, 1)
    (out / ".deeplab-studio-predict.shard-0-of-1.summary.json").write_text(json.dumps(summary | {"status": "running"}))
    capsys.readouterr()
    assert main(["predict", "--merge-report", str(out)]) == 1
    assert "[running, or killed (no end recorded)]" in capsys.readouterr().out
    assert _predict(ckpt, *argv) == 0
    assert "predicting 2 images" in capsys.readouterr().err
    assert _files(out) == first
    summary = _summary(out, 0, 1)
    assert summary["written"] == ["im02", "sub/im03"] and summary["skipped"] == ["im01", "im04", "sub/im00"]
    redone = {"im02.png", "im02.probs.npy", "sub/im03.png", "sub/im03.probs.npy"}
    assert {rel for rel in first if _signature(out / rel) != before[rel]} == redone  # the others were not touched


def test_resume_redoes_images_of_another_model_and_keeps_foreign_files(tmp_path: Path, ckpts, capsys) -> None:
    _dataset(tmp_path / "in", 3)
    out = tmp_path / "out"
    assert _predict(ckpts[0], str(tmp_path / "in"), "--out", str(out)) == 0  # a plain run lists its key too
    assert _predict(ckpts[0], str(tmp_path / "in"), "--out", str(out), "--resume") == 0
    assert "predicting 0 images on cpu into" in capsys.readouterr().err
    assert _predict(ckpts[0], str(tmp_path / "in"), "--out", str(out), "--resume", "--tta", "flip") == 0
    assert "predicting 3 images" in capsys.readouterr().err  # other options: other labels
    assert _predict(ckpts[1], str(tmp_path / "in"), "--out", str(out), "--shard", "0/1") == 0
    assert "predicting 3 images" in capsys.readouterr().err  # another model
    (out / "im01.png").write_bytes(b"edited by the user")
    assert _predict(ckpts[1], str(tmp_path / "in"), "--out", str(out), "--shard", "0/1") == 2
    assert "refusing to write over" in capsys.readouterr().err
    assert (out / "im01.png").read_bytes() == b"edited by the user"


@pytest.mark.slow
def test_a_shard_killed_for_real_finishes_on_rerun(tmp_path: Path, ckpts) -> None:
    ckpt = ckpts[0]
    for i in range(8):
        _image(tmp_path / "in" / f"big{i}.png", 384, 512, seed=i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "deeplab_studio", "predict", "--model", str(ckpt), "--device", "cpu", "--quiet",
           str(tmp_path / "in"), "--out", str(out), "--shard", "0/1"]
    proc = subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), stderr=subprocess.DEVNULL)
    manifest = out / ".deeplab-studio-predict.shard-0-of-1.jsonl"
    while proc.poll() is None and not (manifest.exists() and manifest.read_text().count("\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-run, not finished
    assert 1 <= len(list(out.glob("*.png"))) < 8
    assert subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1")).returncode == 0
    assert _predict(ckpt, str(tmp_path / "in"), "--out", str(tmp_path / "plain")) == 0
    assert _files(out) == _files(tmp_path / "plain")
    assert main(["predict", "--merge-report", str(out)]) == 0
