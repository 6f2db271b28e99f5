"""`predict --engine ray` (issue 15): a local Ray with two model-holding actors writes the same bytes
as a plain run, under the same rules. Skipped, with the reason, where Ray is missing or cannot start."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from deeplab_studio.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ray():
    return pytest.importorskip("ray", reason="Ray is the optional extra deeplab-studio[ray]")


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("[!.]*")) if p.is_file()}


def _manifest(out: Path, name: str = ".deeplab-studio-predict.jsonl") -> list[dict]:
    return sorted((json.loads(line) for line in (out / name).read_text().splitlines()), key=lambda e: e["file"])


@pytest.fixture()
def images(tmp_path: Path, data_dir: Path) -> Path:
    """Four real VOC photographs (two sizes, PNG and JPEG) and one file that is not an image."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    src = data_dir / "voc_real" / "images"
    for name, to in (("2007_000033.png", ""), ("2011_000003.jpg", ""), ("2008_007814.png", "sub"),
                     ("2011_000025.jpg", "sub")):
        shutil.copy(src / name, folder / to / name)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def _run(images: Path, out: Path, *extra: str) -> int:
    return main(["predict", "--device", "cpu", "--quiet", "--save-probs", str(images), "--out", str(out), *extra])


@pytest.mark.slow
def test_ray_writes_the_bytes_of_a_plain_run(images: Path, tmp_path: Path, capsys) -> None:
    ray = _ray()
    assert _run(images, tmp_path / "plain") == 1  # one torch thread, as each Ray worker has (--cpus-per-worker 1)
    plain_err = capsys.readouterr().err
    rc = _run(images, tmp_path / "ray", "--engine", "ray", "--workers", "2")
    err = capsys.readouterr().err
    if rc == 2 and "cannot start a local Ray" in err:
        pytest.skip(f"Ray cannot start here: {err.strip().splitlines()[-1]}")
    assert rc == 1, err
    expected = _files(tmp_path / "plain")
    assert len(expected) == 8 and _files(tmp_path / "ray") == expected  # labels and float16 probabilities
    assert _manifest(tmp_path / "ray") == _manifest(tmp_path / "plain")  # same list, same run key
    skipped = [line.split("] ", 1)[1] for text in (plain_err, err) for line in text.splitlines() if "] skipped " in line]
    assert len(skipped) == 2 and skipped[0] == skipped[1] and str(images / "broken.jpg") in skipped[0]
    assert not ray.is_initialized()  # the local cluster it started is shut down


@pytest.mark.slow
def test_ray_in_a_running_cluster_with_shards_and_resume(images: Path, tmp_path: Path, capsys) -> None:
    ray = _ray()
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as exc:
        pytest.skip(f"Ray cannot start here: {exc}")
    try:
        out = tmp_path / "out"
        for k in range(2):
            assert _run(images, out, "--engine", "ray", "--workers", "2", "--shard", f"{k}/2") in (0, 1)
        assert ray.is_initialized()  # a cluster it did not start is left running
        capsys.readouterr()
        assert main(["predict", "--merge-report", str(out)]) == 1
        assert "total: 5 inputs: 4 done (4 written, 0 already done), 1 failed, 0 missing" in capsys.readouterr().out
        for k in range(2):  # run again: only the broken file is tried again
            assert _run(images, out, "--engine", "ray", "--workers", "2", "--shard", f"{k}/2") in (0, 1)
        summaries = [json.loads((out / f".deeplab-studio-predict.shard-{k}-of-2.summary.json").read_text())
                     for k in range(2)]
        assert [s["written"] for s in summaries] == [[], []] and sum(len(s["skipped"]) for s in summaries) == 4
        assert [name for s in summaries for name in s["failed"]] == ["broken"]
        assert _run(images, tmp_path / "plain") == 1
        assert _files(out) == _files(tmp_path / "plain")
    finally:
        ray.shutdown()


def test_ray_options_are_checked_before_any_work(images: Path, tmp_path: Path, capsys) -> None:
    for argv, words in ((["--workers", "0"], "--workers must be at least 1"),
                        (["--gpus-per-worker", "1"], "--gpus-per-worker needs --device auto or cuda"),
                        (["--device", "cuda"], "give the workers GPUs (--gpus-per-worker)")):
        assert _run(images, tmp_path / "out", "--engine", "ray", *argv) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_without_ray_the_message_says_how_to_install_it(images: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where the extra is not installed
    assert _run(images, tmp_path / "out", "--engine", "ray") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'deeplab-studio[ray]'" in err[0]
    assert not (tmp_path / "out").exists()
