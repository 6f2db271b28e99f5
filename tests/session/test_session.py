"""Everything a user does, without Qt: the AnnotationSession with its Qt-free history and saver."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.core.labels import IGNORE
from deeplab_studio.session.annotation_session import AnnotationSession
from deeplab_studio.session.tools import Mods
from deeplab_studio.storage.project import Project, Status

H, W = 40, 60


def make_folder(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(folder / f"img_{i}.png")
    return folder


class Recorder:
    """Every event a session emits, in order, as (name, args)."""

    NAMES = ("project_changed", "project_opened", "image_selected", "image_changed", "image_closed",
             "status_changed", "labels_changed", "active_class_changed", "message")

    def __init__(self, session: AnnotationSession) -> None:
        self.seen: list[tuple[str, tuple]] = []
        for name in self.NAMES:
            getattr(session, name).connect(lambda *a, n=name: self.seen.append((n, a)))

    def names(self) -> list[str]:
        return [n for n, _ in self.seen]

    def messages(self, level: str | None = None) -> list[str]:
        return [a[0] for n, a in self.seen if n == "message" and (level is None or a[1] == level)]


@pytest.fixture
def session(tmp_path):
    s = AnnotationSession()
    yield s
    if s.close_image():
        s.shutdown()


def stroke(session: AnnotationSession, cls: int, x0: int, x1: int, y: int, size: int = 6) -> None:
    session.set_active_class(cls)
    session.tools.ctx.brush_size = size
    session.tools.select("brush")
    tool = session.tools.tool_for(Mods())
    if tool is None:  # read-only: no stroke starts
        return
    tool.press((x0, y), Mods())
    tool.move((x1, y), Mods())
    tool.release((x1, y), Mods())


def test_the_session_imports_without_qt_or_torch():
    code = ("import sys; import deeplab_studio.session.annotation_session; "
            "print('PySide6' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_open_folder_paint_step_and_reopen(tmp_path, session):
    folder = make_folder(tmp_path / "imgs")
    events = Recorder(session)
    assert session.open_folder(folder)
    assert events.names()[:7] == ["image_closed", "project_changed", "labels_changed", "project_opened",
                                  "image_closed", "image_selected", "image_changed"]
    assert session.document is not None and session.index == 0
    stroke(session, 3, 5, 40, 20)
    painted = session.document.labels.copy()
    assert (painted == 3).sum() > 100 and session.document.edit_mask.sum() == (painted == 3).sum()
    assert session.step(+1) and session.index == 1  # saved first
    assert ("status_changed", ("img_0.png",)) in events.seen
    assert session.records[0].status == Status.EDITED
    assert session.step(+1) and not session.step(+1) and session.index == 2  # the end of the folder
    assert events.messages("status")[-1] == "No more images in that direction"
    session.close_image()
    session.shutdown()
    again = AnnotationSession()
    assert again.open_folder(folder, prefer_key="img_0.png") and again.index == 0
    assert np.array_equal(again.document.labels, painted)
    again.close_image()
    again.shutdown()


def test_undo_redo_and_the_journal(tmp_path, session):
    session.open_folder(make_folder(tmp_path / "imgs"))
    stroke(session, 2, 5, 30, 10)
    after = session.document.labels.copy()
    session.undo()
    assert not session.document.labels.any()
    session.redo()
    assert np.array_equal(session.document.labels, after)
    # every change was journaled: a crash now (no save) loses nothing
    rec = session.current_record
    assert session.project.journal_last(rec) >= 3


def test_a_proposal_never_touches_human_pixels_and_is_one_undo_step(tmp_path, session):
    session.open_folder(make_folder(tmp_path / "imgs"))
    stroke(session, 5, 0, 20, 5)
    human = session.document.edit_mask.copy()
    proposal = np.full((H, W), 7, np.uint8)
    assert session.apply_labels(proposal, status=Status.AUTO)
    labels = session.document.labels
    assert (labels[human] == 5).all() and (labels[~human] == 7).all()
    session.undo()
    assert not (session.document.labels == 7).any()
    assert not session.apply_proposal(session.document.labels.copy())  # nothing to change


def test_store_proposal_merges_a_closed_image_on_the_io_thread(tmp_path, session):
    folder = make_folder(tmp_path / "imgs")
    session.open_folder(folder)
    stroke(session, 4, 0, 30, 8)
    human = session.document.edit_mask.copy()
    session.step(+1)
    events = Recorder(session)
    fut = session.store_proposal("img_0.png", np.full((H, W), 9, np.uint8))
    fut.result()
    assert ("status_changed", ("img_0.png",)) in events.seen
    labels, mask = session.project.load_annotation(session.project.record("img_0.png"))
    assert (labels[human] == 4).all() and (labels[~human] == 9).all() and np.array_equal(mask, human)
    # the open image gets it as an undo step instead
    assert session.store_proposal("img_1.png", np.full((H, W), 9, np.uint8)) is None
    assert (session.document.labels == 9).all()


def test_mark_reviewed_and_next_unreviewed(tmp_path, session):
    session.open_folder(make_folder(tmp_path / "imgs"))
    events = Recorder(session)
    for _ in range(3):
        session.mark_reviewed_and_next()
    assert all(r.status == Status.REVIEWED for r in session.records)
    assert not session.next_unreviewed()
    assert "Every image is reviewed." in events.messages("info")


def test_classes_add_rename_delete_remaps_every_image(tmp_path, session):
    session.open_folder(make_folder(tmp_path / "imgs"))
    n = len(session.labelset)
    assert session.add_class("kelp", (1, 2, 3)) and len(session.labelset) == n + 1
    assert session.rename_class(n, "sea kelp") and session.labelset.names[n] == "sea kelp"
    stroke(session, n, 0, 30, 8)
    assert session.delete_class(n, replacement=IGNORE)
    assert len(session.labelset) == n and (session.document.labels == IGNORE).any()
    assert session.project.labels.names == session.labelset.names
    events = Recorder(session)
    assert not session.rename_class(99, "x")  # a clear message, no change
    assert events.messages("error")
    assert not session.set_active_class(99) and events.messages("status") == ["There is no class 99"]


def test_a_second_session_opens_read_only_and_refuses_changes(tmp_path, session):
    folder = make_folder(tmp_path / "imgs")
    session.open_folder(folder)
    other = AnnotationSession()
    events = Recorder(other)
    assert other.open_folder(folder) and other.read_only
    assert any("Read-only" in m for m in events.messages("warning"))
    assert not other.apply_proposal(np.full((H, W), 3, np.uint8))
    stroke(other, 3, 0, 30, 8)  # tools do nothing on a read-only project
    assert not other.document.labels.any()
    other.close_image()
    other.shutdown()


def test_an_unreadable_image_is_a_message_and_the_session_goes_on(tmp_path, session):
    folder = make_folder(tmp_path / "imgs")
    events = Recorder(session)
    session.open_folder(folder)
    (folder / "img_2.png").write_bytes(b"not a png")  # damaged after the folder was scanned
    assert not session.open_image(2)
    assert session.document is None and "Cannot open img_2.png" in session.empty_reason
    assert ("image_changed", (None,)) in events.seen and "Cannot open img_2.png" in events.messages("error")[-1]
    assert session.open_image(1)


def test_an_empty_folder_says_so_and_creates_nothing(tmp_path, session):
    empty = tmp_path / "empty"
    empty.mkdir()
    events = Recorder(session)
    assert session.open_folder(empty)
    assert session.document is None and "No images" in session.empty_reason
    assert list(empty.iterdir()) == []
    assert any("No images found" in m for m in events.messages("info"))


def test_a_failed_save_keeps_the_image_open_and_says_why(tmp_path, session, monkeypatch):
    session.open_folder(make_folder(tmp_path / "imgs"))
    stroke(session, 1, 0, 30, 8)
    events = Recorder(session)

    def full_disk(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Project, "save_annotation", full_disk)
    assert not session.step(+1)
    assert session.index == 0 and session.document is not None
    assert any("No space left" in m for m in events.messages("error"))
    monkeypatch.undo()
    assert session.step(+1)
