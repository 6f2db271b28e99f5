"""Never lose a user's work: the SQLite index, all-or-nothing saves, one writer, the journal."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from deeplab_studio.storage.project import (
    DATA_DIR_NAME, Project, ProjectCorruptError, ProjectLockedError, ProjectReadOnlyError, ProjectVersionError,
    Status, record_key)
from tests.storage.test_project import _img  # a 32×24 image of one grey value

H, W = 24, 32
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    f = tmp_path / "images"
    for i in range(4):
        _img(f / f"img{i}.png", value=i * 40)
    return f


def _child(code: str) -> subprocess.Popen:
    """A Python process running `code` (with the project importable), stdout piped."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE, text=True, env=env)


# --- the index ----------------------------------------------------------------------------------
def _format1_project(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """A project as version 1 wrote it: project.json and labels/<key>.png, masks/<key>.png."""
    from deeplab_studio.core.labels import LabelSet
    from deeplab_studio.storage.labelmaps import write_label_png, write_mask_png

    ddir = folder / DATA_DIR_NAME
    labels = np.zeros((H, W), np.uint8)
    labels[3:9, 4:12] = 5
    mask = labels > 0
    recs = []
    for i in range(4):
        rel = f"img{i}.png"
        st = (folder / rel).stat()
        status = {0: "edited", 1: "reviewed"}.get(i, "unlabeled")
        recs.append({"path": rel, "width": W, "height": H, "status": status, "created": "c", "modified": "m",
                     "key": record_key(rel), "file_size": st.st_size, "file_mtime_ns": st.st_mtime_ns})
        if status != "unlabeled":
            write_label_png(ddir / "labels" / f"{record_key(rel)}.png", labels, LabelSet.voc().palette())
            write_mask_png(ddir / "masks" / f"{record_key(rel)}.png", mask)
    doc = {"format_version": 1, "app": "deeplab-studio", "classes": LabelSet.voc().to_json(), "label_rev": 0,
           "label_remaps": [], "images": recs}
    (ddir / "project.json").write_text(json.dumps(doc))
    return labels, mask


def test_format1_project_is_migrated_once_and_kept_as_backup(folder: Path) -> None:
    labels, mask = _format1_project(folder)
    old = (folder / DATA_DIR_NAME / "project.json").read_bytes()
    with Project.open(folder) as proj:
        assert any("converted" in n for n in proj.notes)
        assert [proj.record(f"img{i}.png").status for i in range(4)] == [
            Status.EDITED, Status.REVIEWED, Status.UNLABELED, Status.UNLABELED]
        got, got_mask = proj.load_annotation(proj.record("img1.png"))
        np.testing.assert_array_equal(got, labels)
        np.testing.assert_array_equal(got_mask, mask)
        proj.save_annotation(proj.record("img1.png"), labels + 1, mask)  # a new generation, old files go
        assert not (folder / DATA_DIR_NAME / "labels" / f"{record_key('img1.png')}.png").exists()
    assert (folder / DATA_DIR_NAME / "project.json.v1-backup").read_bytes() == old
    assert not (folder / DATA_DIR_NAME / "project.json").exists()
    with Project.open(folder) as again:  # opened from the database now, not migrated again
        assert not again.notes and again.record("img1.png").status == Status.REVIEWED
        np.testing.assert_array_equal(again.load_annotation(again.record("img1.png"))[0], labels + 1)


def test_newer_or_damaged_index_is_refused_and_untouched(folder: Path) -> None:
    Project.open(folder).close()
    index = folder / DATA_DIR_NAME / "project.sqlite"
    db = sqlite3.connect(index)
    db.execute("UPDATE meta SET value='99' WHERE key='format_version'")
    db.commit()
    db.close()
    before = index.read_bytes()
    for read_only in (False, True):
        with pytest.raises(ProjectVersionError, match="newer"):
            Project.open(folder, read_only=read_only)
    assert index.read_bytes() == before
    index.write_bytes(b"SQLite format 3\x00" + b"\x07" * 200)
    before = index.read_bytes()
    with pytest.raises(ProjectCorruptError, match="damaged"):
        Project.open(folder)
    assert index.read_bytes() == before


@pytest.mark.parametrize("content", [
    "[" * 100000 + "]" * 100000,  # deep nesting: RecursionError in json
    '{"format_version": 1, "format_version": 1, "classes": [], "images": []}',  # duplicate keys
    '{"format_version": 1, "classes": [{"name": "bg", "color": [0, 0, 0]}], "images": '
    '[{"path": "a/../../x.png", "width": 1, "height": 1}]}',  # ".." in a path
    '{"format_version": 1, "classes": [{"name": "bg", "color": [0, 0, 0]}], "images": '
    '[{"path": "x.png", "key": "../x", "width": 1, "height": 1}]}',  # ".." in a storage key
])
def test_hostile_format1_file_is_one_clear_error(folder: Path, content: str) -> None:
    pfile = folder / DATA_DIR_NAME / "project.json"
    pfile.parent.mkdir()
    pfile.write_text(content)
    with pytest.raises(ProjectCorruptError, match="damaged project file"):
        Project.open(folder)
    assert pfile.read_text() == content and not (pfile.parent / "project.sqlite").exists()


def test_file_names_that_are_not_utf8(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    name = os.fsdecode(b"caf\xe9 \xff.png")
    _img(folder / name)
    _img(folder / "plain.png")
    with Project.open(folder) as proj:
        rec = proj.record(name)
        proj.save_annotation(rec, np.full((H, W), 3, np.uint8), np.ones((H, W), bool))
    with Project.open(folder) as again:
        assert {r.path for r in again.records} == {name, "plain.png"}
        np.testing.assert_array_equal(again.load_annotation(again.record(name))[0], 3)
        assert again.record(name).status == Status.EDITED


def test_empty_folder_creates_nothing_until_the_first_change(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proj = Project.open(empty)
    assert not proj.records and os.listdir(empty) == []
    _img(empty / "new.png")
    rec = proj.add_image("new.png")  # an import copies a file in, then registers it
    assert (empty / DATA_DIR_NAME / "project.sqlite").is_file() and rec.status == Status.UNLABELED
    proj.close()
    with Project.open(empty, read_only=True) as ro:
        assert [r.path for r in ro.records] == ["new.png"]


# --- one writer ---------------------------------------------------------------------------------
def test_second_writer_is_refused_read_only_opens_and_refuses_changes(folder: Path) -> None:
    first = Project.open(folder)
    with pytest.raises(ProjectLockedError, match=f"pid {os.getpid()}"):
        Project.open(folder)
    z = np.zeros((H, W), np.uint8)
    first.save_annotation(first.records[0], z + 1, z.astype(bool))
    ro = Project.open(folder, read_only=True)
    rec = ro.records[0]
    np.testing.assert_array_equal(ro.load_annotation(rec)[0], 1)
    for change in (lambda: ro.save_annotation(rec, z, z.astype(bool)), lambda: ro.set_status(rec, None),
                   lambda: ro.set_labelset(ro.labels), lambda: ro.clear_annotation(rec), lambda: ro.forget(rec)):
        with pytest.raises(ProjectReadOnlyError, match="read-only"):
            change()
    assert ro.journal_edit(rec, (0, 0, 1, 1), z[:1, :1], z[:1, :1].astype(bool)) == 0
    # the writer saves again, deleting the pair the reader knew: the reader follows the index
    first.save_annotation(first.record(rec.path), z + 2, z.astype(bool))
    np.testing.assert_array_equal(ro.load_annotation(rec)[0], 2)
    first.close()
    Project.open(folder).close()  # released on close


def test_a_killed_writer_does_not_block_the_next_open(folder: Path) -> None:
    child = _child(f"""
        from deeplab_studio.storage.project import Project
        p = Project.open({str(folder)!r})
        print("open", flush=True)
        input()
    """)
    assert child.stdout.readline().strip() == "open"
    with pytest.raises(ProjectLockedError, match=f"pid {child.pid}") as info:
        Project.open(folder)
    assert "\n" not in str(info.value)
    child.send_signal(signal.SIGKILL)
    child.wait()
    Project.open(folder).close()


# --- all-or-nothing saves -----------------------------------------------------------------------
def _consistent(proj: Project) -> None:
    """Every saved pair came from one save (the writers below keep mask == labels > 0)."""
    for rec in proj.records:
        labels, mask = proj.load_annotation(rec)
        np.testing.assert_array_equal(mask, labels > 0, err_msg=rec.path)
        if rec.status == Status.AUTO:
            assert not mask.any()
        if rec.status == Status.EDITED:
            assert mask.any()
        assert (rec.status == Status.UNLABELED) == (rec.gen is None)


def test_kill_at_the_start_of_the_mask_write_keeps_the_old_pair(folder: Path) -> None:
    with Project.open(folder) as proj:
        rec = proj.record("img1.png")
        z = np.zeros((H, W), np.uint8)
        proj.save_annotation(rec, z, z.astype(bool))  # auto, empty mask
    child = _child(f"""
        import os, signal
        import numpy as np
        import deeplab_studio.storage.project as project
        p = project.Project.open({str(folder)!r})
        def killed(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        project.write_mask_png = killed
        labels = np.full(({H}, {W}), 7, np.uint8)
        p.save_annotation(p.record("img1.png"), labels, labels > 0)
    """)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    with Project.open(folder) as proj:
        rec = proj.record("img1.png")
        assert rec.status == Status.AUTO
        labels, mask = proj.load_annotation(rec)
        assert not labels.any() and not mask.any()
        assert any("interrupted" in n for n in proj.notes)  # the orphaned new label map was removed
        assert len(os.listdir(proj.data_dir / "labels")) == 1
        _consistent(proj)


def test_a_finished_stroke_survives_sigkill(folder: Path) -> None:
    child = _child(f"""
        import numpy as np
        from deeplab_studio.storage.project import Project
        p = Project.open({str(folder)!r})
        rec = p.record("img2.png")
        labels, mask = p.load_annotation(rec)
        labels[2:6, 3:9] = 4
        mask[2:6, 3:9] = True
        p.journal_edit(rec, (3, 2, 9, 6), labels[2:6, 3:9], mask[2:6, 3:9])  # mouse released
        print("stroke", flush=True)
        input()  # killed before any save
    """)
    assert child.stdout.readline().strip() == "stroke"
    child.send_signal(signal.SIGKILL)
    child.wait()
    with Project.open(folder) as proj:
        rec = proj.record("img2.png")
        labels, mask = proj.load_annotation(rec)
        assert rec.status == Status.EDITED and (labels == 4).sum() == 24 and mask.sum() == 24
        assert any("recovered 1 unsaved edit of img2.png" in n for n in proj.notes)
        assert not proj.journal.file(rec.key).exists()
    with Project.open(folder) as again:  # replayed once, then saved
        assert not again.notes


def test_journal_entries_before_a_class_deletion_are_remapped(folder: Path) -> None:
    proj = Project.open(folder)
    rec = proj.record("img0.png")
    box = np.full((2, 2), 5, np.uint8)
    proj.journal_edit(rec, (0, 0, 2, 2), box, np.ones((2, 2), bool))
    ls = proj.labels
    from deeplab_studio.core.labels import LabelSet

    ls = LabelSet(list(ls.names), list(ls.colors))
    proj.set_labelset(ls, ls.delete(2))  # class 5 becomes 4
    proj.close()  # "crash" without a save
    with Project.open(folder) as again:
        labels, _ = again.load_annotation(again.record("img0.png"))
        assert (labels[:2, :2] == 4).all()


STRESS_CHILD = """
import random, sys
import numpy as np
from deeplab_studio.storage.project import Project, Status
p = Project.open(sys.argv[1])
rng = random.Random(int(sys.argv[2]))
state = {r.path: p.load_annotation(r) for r in p.records}
print("ready", flush=True)
while True:
    rec = rng.choice(p.records)
    labels, mask = state[rec.path]
    op = rng.random()
    if op < 0.7:  # a stroke: a box of one class (0 erases), journaled on "mouse release"
        v = rng.choice([0, 1, 2, 3, 7, 15])
        x0, y0 = rng.randrange(W), rng.randrange(H)
        x1, y1 = min(W, x0 + rng.randint(1, 12)), min(H, y0 + rng.randint(1, 12))
        print(f"B {rec.path} {x0} {y0} {x1} {y1} {v}", flush=True)
        labels[y0:y1, x0:x1] = v
        mask[y0:y1, x0:x1] = v > 0
        p.journal_edit(rec, (x0, y0, x1, y1), labels[y0:y1, x0:x1], mask[y0:y1, x0:x1])
        print("E", flush=True)
    elif op < 0.9:
        p.save_annotation(rec, labels, mask, journal_seq=p.journal_last(rec))
    elif p.has_annotation(rec):
        p.set_status(rec, rng.choice([Status.REVIEWED, None]))
"""


@pytest.mark.slow
def test_stress_random_sigkills_never_mix_saves_or_lose_strokes(folder: Path, tmp_path: Path) -> None:
    """≥ 100 SIGKILLs at random moments of a process that paints, saves and sets statuses."""
    script = tmp_path / "writer.py"
    script.write_text(f"W, H = {W}, {H}\n" + STRESS_CHILD)
    rng = np.random.default_rng(0)
    with Project.open(folder) as proj:
        expected = {r.path: proj.load_annotation(r)[0] for r in proj.records}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    kills = strokes = 0
    for it in range(110):
        child = subprocess.Popen([sys.executable, str(script), str(folder), str(it)], stdout=subprocess.PIPE,
                                 text=True, env=env)
        assert child.stdout.readline().strip() == "ready"
        try:
            child.wait(timeout=float(rng.uniform(0.0, 0.06)))
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            kills += 1
        out, _ = child.communicate()
        assert child.returncode == -signal.SIGKILL, out[-2000:]
        inflight = None
        for line in out.splitlines():
            if line.startswith("B "):
                _, path, *nums = line.split(" ")
                inflight = (path, *map(int, nums))
            elif line == "E":
                path, x0, y0, x1, y1, v = inflight
                expected[path][y0:y1, x0:x1] = v
                strokes += 1
                inflight = None
        with Project.open(folder) as proj:
            _consistent(proj)
            for rec in proj.records:
                got = proj.load_annotation(rec)[0]
                want = [expected[rec.path]]
                if inflight is not None and inflight[0] == rec.path:
                    alt = want[0].copy()
                    _, x0, y0, x1, y1, v = inflight
                    alt[y0:y1, x0:x1] = v
                    want.append(alt)
                assert any(np.array_equal(got, w) for w in want), f"iteration {it}: {rec.path} lost a stroke"
                expected[rec.path] = got
    assert kills >= 100 and strokes > 100
