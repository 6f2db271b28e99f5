"""The project folder: scanning, records, status, annotations, errors, read-only folders."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.core.labels import LabelSet
from deeplab_studio.storage import locations
from deeplab_studio.storage.project import (
    DATA_DIR_NAME, FORMAT_VERSION, ImageRecord, Project, ProjectCorruptError, ProjectError, ProjectVersionError,
    Status, natural_key, record_key)


def _img(path: Path, w: int = 32, h: int = 24, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)
    return path


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    f = tmp_path / "images"
    for name in ("img10.png", "img2.png", "IMG1.jpg", "sub/img2.png", "sub/deeper/a.bmp", "b.tif"):
        _img(f / name)
    _img(f / ".hidden" / "x.png")
    _img(f / ".dotfile.png")
    (f / "notes.txt").write_text("not an image")
    return f


def test_scan_natural_order_subfolders_hidden_skipped(folder: Path) -> None:
    proj = Project.open(folder)
    assert [r.path for r in proj.records] == ["b.tif", "IMG1.jpg", "img2.png", "img10.png",
                                              "sub/deeper/a.bmp", "sub/img2.png"]
    assert proj.data_dir == folder.resolve() / DATA_DIR_NAME
    assert all(r.size == (32, 24) and r.status == Status.UNLABELED and r.created for r in proj.records)
    keys = [r.key for r in proj.records]
    assert len(set(keys)) == len(keys) and len({k.casefold() for k in keys}) == len(keys)
    assert proj.record("img2.png").key != proj.record("sub/img2.png").key
    assert proj.record(proj.record("sub/img2.png").key).path == "sub/img2.png"
    db = sqlite3.connect(proj.data_dir / "project.sqlite")
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert int(meta["format_version"]) == FORMAT_VERSION and json.loads(meta["classes"]) == LabelSet.voc().to_json()
    assert db.execute("SELECT count(*) FROM images").fetchone()[0] == 6
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    assert not proj.problems and not (proj.data_dir / "project.json").exists()


def test_keys_are_filesystem_safe() -> None:
    for rel in ("a b/ü?*:|<>.png", "../x.png", "CON.png", "sub/a.png", "sub_a.png"):
        key = record_key(rel)
        assert all(c.isalnum() and c.isascii() or c in "_.-" for c in key) and not key.startswith(".")
    assert record_key("sub/a.png") != record_key("sub__a.png")
    assert sorted(["a10", "a9", "A1"], key=natural_key) == ["A1", "a9", "a10"]


def test_status_flow_and_persistence(folder: Path) -> None:
    proj = Project.open(folder)
    rec = proj.record("img2.png")
    labels = np.zeros((24, 32), np.uint8)
    labels[2:5, 3:9] = 7
    labels[0, 0] = 255
    empty = np.zeros((24, 32), bool)
    assert proj.save_annotation(rec, labels, empty) == Status.AUTO
    edits = empty.copy()
    edits[3, 3] = True
    assert proj.save_annotation(rec, labels, edits) == Status.EDITED
    assert proj.set_status(rec, Status.REVIEWED) == Status.REVIEWED
    assert proj.save_annotation(rec, labels, empty) == Status.REVIEWED  # reviewed sticks
    assert proj.save_annotation(rec, labels, edits, status=Status.AUTO) == Status.AUTO  # explicit wins
    assert proj.set_status(rec, None) == Status.EDITED  # re-derived from the stored mask
    with pytest.raises(ProjectError):
        proj.set_status(rec, Status.UNLABELED)
    with pytest.raises(ProjectError):
        proj.set_status(proj.record("img10.png"), Status.REVIEWED)
    with pytest.raises(ValueError):
        proj.save_annotation(rec, labels[:, :5], empty)
    counts = proj.counts()
    assert counts[Status.EDITED] == 1 and counts[Status.UNLABELED] == 5

    proj.close()
    again = Project.open(folder)
    rec2 = again.record("img2.png")
    assert rec2.status == Status.EDITED and rec2.modified >= rec2.created
    got_labels, got_mask = again.load_annotation(rec2)
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_array_equal(got_mask, edits)
    assert again.has_annotation(rec2) and not again.has_annotation(again.record("img10.png"))
    z, m = again.load_annotation(again.record("img10.png"))
    assert z.shape == (24, 32) and not z.any() and not m.any()
    again.clear_annotation(rec2)
    assert rec2.status == Status.UNLABELED and not again.has_annotation(rec2)
    assert again.read_image(rec2).shape == (24, 32, 3)


def test_saving_touches_only_that_image(folder: Path) -> None:
    proj = Project.open(folder)
    a, b = proj.records[0], proj.records[1]
    z = np.zeros((24, 32), np.uint8)
    proj.save_annotation(a, z, z.astype(bool))
    la = proj.annotation_files(a)[0]
    before = la.stat().st_mtime_ns, la.stat().st_ino
    proj.save_annotation(b, z + 1, z.astype(bool))
    assert (la.stat().st_mtime_ns, la.stat().st_ino) == before
    names = [p.name for p in proj.annotation_files(a) + proj.annotation_files(b)]
    assert sorted(os.listdir(proj.data_dir / "labels")) == sorted(set(names))
    assert sorted(os.listdir(proj.data_dir / "masks")) == sorted(set(names))


def test_every_save_is_committed_at_once(folder: Path) -> None:
    proj = Project.open(folder)
    rec = proj.record("b.tif")
    mask = np.zeros((24, 32), bool)
    mask[0, 0] = True
    proj.save_annotation(rec, np.ones((24, 32), np.uint8), mask, write_index=False)  # no save() follows
    assert Project.open(folder, read_only=True).record("b.tif").status == Status.EDITED


@pytest.mark.parametrize("content, error", [
    (json.dumps({"format_version": FORMAT_VERSION + 1, "classes": [], "images": []}), ProjectVersionError),
    ('{"format_version": 1, "classes": [', ProjectCorruptError),
    (json.dumps({"format_version": 1, "classes": [{"name": "bg"}], "images": []}), ProjectCorruptError),
    (json.dumps({"format_version": 1, "classes": [], "images": [{"path": "../x", "width": 1, "height": 1}]}),
     ProjectCorruptError),
    ("\x00\xff garbage", ProjectCorruptError),
    ("[]", ProjectCorruptError),
])
def test_bad_project_file_is_refused_and_never_overwritten(folder: Path, content: str, error) -> None:
    pfile = folder / DATA_DIR_NAME / "project.json"
    pfile.parent.mkdir()
    pfile.write_bytes(content.encode("utf-8", "surrogateescape"))
    before = pfile.read_bytes()
    with pytest.raises(error) as info:
        Project.open(folder)
    assert str(pfile) in str(info.value) and isinstance(info.value, ProjectError)
    if error is ProjectVersionError:
        assert "newer" in str(info.value)
    assert pfile.read_bytes() == before


def test_vanished_and_resized_images_reported_labels_kept(folder: Path) -> None:
    proj = Project.open(folder)
    z = np.full((24, 32), 3, np.uint8)
    for name in ("img2.png", "img10.png", "IMG1.jpg"):
        proj.save_annotation(proj.record(name), z, np.zeros((24, 32), bool))
    moved = folder.parent / "moved.png"
    shutil.move(folder / "img2.png", moved)
    _img(folder / "img10.png", w=40, h=30, value=9)  # same name, new size
    _img(folder / "IMG1.jpg", value=200)  # same size, new content: fine
    (folder / "broken.png").write_bytes(b"junk")
    proj.close()
    proj = Project.open(folder)
    kinds = {(p.path, p.kind) for p in proj.problems}
    assert kinds == {("img2.png", "missing"), ("img10.png", "size_changed"), ("broken.png", "unreadable")}
    assert all(str(folder) in p.message for p in proj.problems)
    assert "img2.png" not in [r.path for r in proj.records] and "img10.png" not in [r.path for r in proj.records]
    assert proj.record("IMG1.jpg").status == Status.AUTO
    shutil.move(moved, folder / "img2.png")  # the image comes back: its labels are still there
    proj.close()
    proj = Project.open(folder)
    np.testing.assert_array_equal(proj.load_annotation(proj.record("img2.png"))[0], z)
    proj.forget(proj.record("img10.png"))
    proj.close()
    proj = Project.open(folder)  # forgotten: re-added as a new, unlabeled image at its new size
    assert proj.record("img10.png").size == (40, 30) and proj.record("img10.png").status == Status.UNLABELED


def test_class_deletion_remaps_lazily(folder: Path) -> None:
    proj = Project.open(folder)
    rec = proj.record("img2.png")
    labels = np.tile(np.array([0, 1, 2, 3, 4, 255, 5, 20], np.uint8), (24, 4))
    proj.save_annotation(rec, labels, np.zeros((24, 32), bool))
    lfile = proj.annotation_files(rec)[0]
    stored = lfile.read_bytes()
    ls = LabelSet(list(proj.labels.names), list(proj.labels.colors))
    lut1 = ls.delete(2)  # bicycle -> background, classes after it shift down
    proj.set_labelset(ls, lut1)
    lut2 = ls.delete(3, replacement=255)  # old "boat" (now 3) -> void
    proj.set_labelset(ls, lut2)
    proj.set_labelset(ls)  # rename/recolour-style change: no remap
    expected = lut2[lut1[labels]]
    assert lfile.read_bytes() == stored  # nothing rewritten
    proj.close()
    reopened = Project.open(folder)
    assert reopened.labels.names == ls.names and reopened.label_rev == 2
    got = reopened.load_annotation(reopened.record("img2.png"))[0]
    np.testing.assert_array_equal(got, expected)
    assert set(np.unique(got).tolist()) == {0, 1, 2, 3, 18, 255}
    reopened.save_annotation(reopened.record("img2.png"), got, np.zeros((24, 32), bool))  # now at rev 2
    reopened.close()
    again = Project.open(folder)
    np.testing.assert_array_equal(again.load_annotation(again.record("img2.png"))[0], got)


def test_read_only_folder_uses_user_data_dir_injected(folder: Path, tmp_path: Path, monkeypatch) -> None:
    """We run as root, so chmod cannot make a folder unwritable: the writability probe is replaced
    for paths inside the image folder (see the next test for a real read-only mount)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    real = locations.can_write_dir
    monkeypatch.setattr(locations, "can_write_dir",
                        lambda p: False if str(p).startswith(str(folder.resolve())) else real(p))
    proj = Project.open(folder)
    assert proj.data_dir.parent == tmp_path / "xdg" / "deeplab-studio" / "projects"
    assert not (folder / DATA_DIR_NAME).exists()
    rec = proj.records[0]
    proj.save_annotation(rec, np.ones((24, 32), np.uint8), np.zeros((24, 32), bool))
    proj.close()
    again = Project.open(folder)
    assert again.data_dir == proj.data_dir and again.record(rec.path).status == Status.AUTO
    db = sqlite3.connect(proj.data_dir / "project.sqlite")
    assert dict(db.execute("SELECT key, value FROM meta"))["folder"] == str(folder.resolve())
    db.close()


def test_read_only_folder_with_existing_project_is_seeded(folder: Path, tmp_path: Path, monkeypatch) -> None:
    proj = Project.open(folder)  # writable at first: data beside the images
    rec = proj.records[0]
    proj.save_annotation(rec, np.full((24, 32), 2, np.uint8), np.zeros((24, 32), bool), status=Status.REVIEWED)
    proj.close()
    local = (folder / DATA_DIR_NAME / "project.sqlite").read_bytes()
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    real = locations.can_write_dir
    monkeypatch.setattr(locations, "can_write_dir",
                        lambda p: False if str(p).startswith(str(folder.resolve())) else real(p))
    ro = Project.open(folder)  # now read-only: the existing project is copied to the user folder once
    assert ro.data_dir.is_relative_to(tmp_path / "xdg") and ro.record(rec.path).status == Status.REVIEWED
    np.testing.assert_array_equal(ro.load_annotation(ro.record(rec.path))[0], 2)
    assert (folder / DATA_DIR_NAME / "project.sqlite").read_bytes() == local


def _can_mount_read_only(tmp_path: Path) -> bool:
    if sys.platform != "linux" or not shutil.which("unshare"):
        return False
    d = tmp_path / "probe"
    d.mkdir()
    cmd = f"mount --bind {d} {d} && mount -o remount,bind,ro {d} {d} && ! touch {d}/x 2>/dev/null"
    return subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True).returncode == 0


def test_read_only_folder_real_mount(folder: Path, tmp_path: Path) -> None:
    """A real read-only bind mount in a private mount namespace (needs root/unshare; skipped otherwise)."""
    if not _can_mount_read_only(tmp_path):
        pytest.skip("cannot make a read-only bind mount here")
    code = textwrap.dedent(f"""
        import numpy as np
        from deeplab_studio.storage.project import Project
        p = Project.open({str(folder)!r})
        rec = p.records[0]
        p.save_annotation(rec, np.full((rec.height, rec.width), 4, np.uint8), np.zeros((rec.height, rec.width), bool))
        print(p.data_dir)
    """)
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "xdg"))
    script = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} {folder} && exec \"$0\" -c \"$1\""
    out = subprocess.run(["unshare", "-m", "sh", "-c", script, sys.executable, code],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    data_dir = Path(out.stdout.strip())
    assert data_dir.is_relative_to(tmp_path / "xdg") and (data_dir / "project.sqlite").is_file()
    assert not (folder / DATA_DIR_NAME).exists()
    assert len(os.listdir(data_dir / "labels")) == 1


def test_leftover_temp_files_ignored_and_cleaned(folder: Path) -> None:
    proj = Project.open(folder)
    junk = proj.data_dir / "labels" / ".x.png.tmp-999999999-deadbeef"
    junk.parent.mkdir(exist_ok=True)
    junk.write_bytes(b"torn")
    (folder / ".img2.png.tmp-999999999-deadbeef").write_bytes(b"torn")  # hidden: never an image
    proj.close()
    proj = Project.open(folder)
    assert not junk.exists() and len(proj.records) == 6


def test_explicit_data_dir_and_record_checks(folder: Path, tmp_path: Path) -> None:
    proj = Project.open(folder, data_dir=tmp_path / "elsewhere")
    assert proj.data_dir == (tmp_path / "elsewhere").resolve() and not (folder / DATA_DIR_NAME).exists()
    stranger = ImageRecord("img2.png", 32, 24)
    with pytest.raises(ProjectError):
        proj.save_annotation(stranger, np.zeros((24, 32), np.uint8), np.zeros((24, 32), bool))
    with pytest.raises(ProjectError):
        Project.open(tmp_path / "no-such-folder")
