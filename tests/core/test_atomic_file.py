"""core.atomic_file: the one atomic write, including what a failed write leaves behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deeplab_studio.core.atomic_file import (
    is_temp_file, temp_file_pid, temp_name_for, write_atomic, write_bytes_atomic)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_replaces_the_target_and_leaves_only_it(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "deeper" / "f.bin"
    assert write_bytes_atomic(target, b"one") == target  # parents are created
    assert write_atomic(str(target), lambda fh: fh.write(b"two")) == target
    assert target.read_bytes() == b"two"
    assert _listing(target.parent) == ["f.bin"]


def test_a_callback_that_raises_leaves_the_target_unchanged_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    target.write_bytes(b"old")
    seen: list[str] = []

    def half_then_fail(fh) -> None:
        fh.write(b"new but torn")
        seen.append(fh.name)  # the temporary file exists while the callback runs
        assert Path(fh.name).parent == tmp_path and is_temp_file(Path(fh.name).name)
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_atomic(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert _listing(tmp_path) == ["f.json"] and not Path(seen[0]).exists()


def test_a_failure_writing_a_new_file_creates_nothing(tmp_path: Path) -> None:
    def interrupted(fh) -> None:
        fh.write(b"x")
        raise KeyboardInterrupt  # a BaseException too: the temp file still goes

    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "new.bin", interrupted)
    assert _listing(tmp_path) == []


def test_a_failed_rename_removes_the_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "a_folder"
    target.mkdir()
    (target / "keep").write_bytes(b"k")  # os.replace of a file over a non-empty folder fails
    with pytest.raises(OSError):
        write_bytes_atomic(target, b"data")
    assert _listing(tmp_path) == ["a_folder"] and _listing(target) == ["keep"]


def test_without_make_parents_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "f", lambda fh: fh.write(b"x"), make_parents=False)
    assert not (tmp_path / "missing").exists()


def test_temp_names_are_recognisable_and_carry_the_pid(tmp_path: Path) -> None:
    a, b = temp_name_for(tmp_path / "x.png"), temp_name_for(tmp_path / "x.png")
    assert a != b and a.parent == tmp_path and a.name.startswith(".x.png.tmp-")
    assert is_temp_file(a.name) and temp_file_pid(a.name) == os.getpid()
    for other in ("x.png", ".x.png", ".x.png.tmp-12-zz", "x.png.tmp-1-0123abcd"):
        assert not is_temp_file(other) and temp_file_pid(other) is None
