"""Atomic writes (including under SIGKILL), label-map and edit-mask PNGs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.core.labels import IGNORE, IGNORE_COLOR, LabelSet, voc_colormap
from deeplab_studio.storage.atomic import (
    atomic_copy_file, atomic_write_bytes, atomic_write_json, atomic_write_text, cleanup_temp_files, is_temp_file,
    temp_name_for)
from deeplab_studio.storage.images import open_limited
from deeplab_studio.storage.labelmaps import (
    LabelMapError, colors_to_labels, encode_label_png, read_label_png, read_label_png_with_text, read_mask_png,
    write_label_png, write_mask_png)
from deeplab_studio.storage.project import Project


def test_atomic_writes_replace_and_leave_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "a.json"
    atomic_write_json(p, {"x": 1})
    atomic_write_json(p, {"x": 2, "name": "ü"})
    assert json.loads(p.read_text("utf-8")) == {"x": 2, "name": "ü"}
    atomic_write_text(tmp_path / "t.txt", "a\nb\n")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    atomic_copy_file(tmp_path / "b.bin", tmp_path / "c.bin")
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    assert not [n for n in os.listdir(tmp_path) if is_temp_file(n)]


def test_cleanup_removes_only_dead_writers_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "labels.png"
    mine = temp_name_for(target)
    mine.write_bytes(b"in flight")  # our own pid: a write in progress, kept
    dead = tmp_path / ".labels.png.tmp-999999999-0badcafe"
    dead.write_bytes(b"torn")
    other = tmp_path / ".labels.png.tmp-nope"  # not our pattern
    other.write_bytes(b"x")
    assert is_temp_file(dead.name) and is_temp_file(mine.name) and not is_temp_file(other.name)
    assert cleanup_temp_files(tmp_path) == 1
    assert mine.exists() and not dead.exists() and other.exists()


def test_label_png_is_palette_mode_with_indices_and_text(tmp_path: Path) -> None:
    labels = np.random.default_rng(1).integers(0, 5, (33, 47)).astype(np.uint8)
    labels[0, :5] = IGNORE
    ls = LabelSet(["background", "cat", "dog", "x", "y"], [(0, 0, 0), (10, 20, 30)])
    p = tmp_path / "l.png"
    write_label_png(p, labels, ls.palette(), text={"k": "v"})
    with Image.open(p) as im:
        assert im.mode == "P"
        pal = np.asarray(im.getpalette()[:768], np.uint8).reshape(-1, 3)
    assert tuple(pal[1]) == (10, 20, 30) and tuple(pal[IGNORE]) == IGNORE_COLOR
    out, text = read_label_png_with_text(p)
    np.testing.assert_array_equal(out, labels)
    assert text["k"] == "v"
    with pytest.raises(ValueError):
        encode_label_png(labels.astype(np.int32), ls.palette())


def test_colour_png_read_by_exact_lookup(tmp_path: Path, data_dir: Path) -> None:
    gt = read_label_png(data_dir / "voc_samples" / "1_target.png")  # colourised VOC ground truth
    assert set(np.unique(gt).tolist()) <= {0, 1, IGNORE} and (gt == 1).any() and (gt == IGNORE).any()
    pal = LabelSet(["bg", "a", "b"], [(0, 0, 0), (255, 0, 0), (0, 255, 0)]).palette()
    lab = np.array([[0, 1, 2, 255]], np.uint8)
    Image.fromarray(pal[lab]).save(tmp_path / "c.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "c.png", pal), lab)
    rgb = pal[lab].copy()
    rgb[0, 2] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "bad.png")
    with pytest.raises(LabelMapError, match=r"\(1,2,3\) at x=2, y=0") as info:
        read_label_png(tmp_path / "bad.png", pal)
    assert str(tmp_path / "bad.png") in str(info.value)
    np.testing.assert_array_equal(colors_to_labels(voc_colormap()[lab], voc_colormap()), lab)


def test_mask_png_is_one_bit(tmp_path: Path) -> None:
    mask = np.random.default_rng(2).random((20, 31)) > 0.5
    write_mask_png(tmp_path / "m.png", mask)
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "1"
    np.testing.assert_array_equal(read_mask_png(tmp_path / "m.png"), mask)
    (tmp_path / "junk.png").write_bytes(b"nope")
    with pytest.raises(LabelMapError):
        read_mask_png(tmp_path / "junk.png")


def test_label_files_read_under_our_limit_not_pillows_global(tmp_path: Path, monkeypatch) -> None:
    """Pillow's process-wide bomb limit (~179 MP by default; lowered here to 1000 px to stand in
    for a 200 MP image, which `read_image` accepts) must not make a project's label maps unreadable."""
    labels = np.random.default_rng(3).integers(0, 4, (64, 64)).astype(np.uint8)
    mask = labels > 1
    write_label_png(tmp_path / "l.png", labels, voc_colormap())
    write_mask_png(tmp_path / "m.png", mask)
    data = (tmp_path / "l.png").read_bytes()
    (tmp_path / "torn.png").write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    np.testing.assert_array_equal(read_label_png(tmp_path / "l.png"), labels)
    np.testing.assert_array_equal(read_mask_png(tmp_path / "m.png"), mask)
    with pytest.raises(LabelMapError, match="torn.png"):
        read_label_png(tmp_path / "torn.png")
    with pytest.raises(Image.DecompressionBombError):  # our own limit still applies
        open_limited(tmp_path / "l.png", max_pixels=100)
    assert Image.MAX_IMAGE_PIXELS == 1000  # the global is restored


# A fresh, single-threaded helper process forks one saver child per round (forking the pytest
# process itself could inherit locks held by threads of torch/Qt loaded by other tests). Each
# child saves versions 1, 2, ... forever and announces "S<v>" before and "D<v>" after each save.
_FORK_SERVER = r"""
import os, sys
import numpy as np
from deeplab_studio.storage.atomic import atomic_write_json
from deeplab_studio.storage.project import Project

folder, side = sys.argv[1], sys.argv[2]
for _cmd in sys.stdin:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            proj = Project.open(folder)
            rec = proj.records[0]
            v = 0
            while True:
                v += 1
                os.write(w, b"S%d\n" % v)
                atomic_write_json(side, {"v": v, "payload": [v] * 20000})
                mask = np.zeros((rec.height, rec.width), bool)
                mask[: v % rec.height] = True
                proj.save_annotation(rec, np.full(mask.shape, v % 200, np.uint8), mask)
                os.write(w, b"D%d\n" % v)
        finally:
            os._exit(0)
    os.close(w)
    print(f"PID{pid}", flush=True)
    while chunk := os.read(r, 4096):
        sys.stdout.write(chunk.decode())
        sys.stdout.flush()
    os.close(r)
    os.waitpid(pid, 0)
    print("END", flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_atomic_writes_survive_sigkill(tmp_path: Path) -> None:
    """A saver process is SIGKILLed at a random point (after a random number of its own progress
    announcements), 30 times; every file must parse and be the old or the new version."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(folder / "a.png")
    side = tmp_path / "side.json"
    rng = random.Random(0)
    mid_save = 0
    server = subprocess.Popen([sys.executable, "-c", _FORK_SERVER, str(folder), str(side)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    try:
        for _round in range(30):
            atomic_write_json(side, {"v": 0, "payload": [0] * 20000})
            server.stdin.write("go\n")
            server.stdin.flush()
            pid = int(server.stdout.readline().strip()[3:])
            tokens = [server.stdout.readline().strip() for _ in range(rng.randint(1, 6))]
            os.kill(pid, signal.SIGKILL)
            while (line := server.stdout.readline().strip()) != "END":
                tokens.append(line)
            done = [int(x[1:]) for x in tokens if x.startswith("D")]
            last_done = done[-1] if done else 0
            last_started = int(tokens[-1][1:]) if tokens[-1].startswith("S") else last_done
            mid_save += last_started != last_done
            ok = {last_done, last_started}
            doc = json.loads(side.read_text())
            assert doc["payload"] == [doc["v"]] * 20000 and doc["v"] in ok
            proj = Project.open(folder)  # cleans the dead child's leftovers
            rec = proj.records[0]
            labels, mask = proj.load_annotation(rec)  # zeros/empty when nothing was saved yet
            assert (labels == labels[0, 0]).all() and int(labels[0, 0]) in {v % 200 for v in ok}
            assert mask.sum(axis=1).tolist() in ([32] * (v % 24) + [0] * (24 - v % 24) for v in ok)
            for sub in (tmp_path, proj.data_dir, proj.data_dir / "labels", proj.data_dir / "masks"):
                cleanup_temp_files(sub)
                assert not [n for n in os.listdir(sub) if is_temp_file(n)] if sub.exists() else True
            proj.clear_annotation(rec)
            proj.close()  # the next child opens it for writing
    finally:
        server.stdin.close()
        server.wait(timeout=60)
    assert mid_save > 0  # some kills landed in the middle of a save
