"""A damaged project or label map is a message in the window, never an uncaught exception; an
empty folder leaves nothing on disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from deeplab_studio.storage.project import DATA_DIR_NAME, Project

from tests.gui.conftest import make_folder, new_window


@pytest.mark.parametrize("content", [
    "[" * 50000 + "]" * 50000,
    '{"format_version": 1, "format_version": 1, "classes": [], "images": []}',
    '{"format_version": 1, "classes": [{"name": "bg", "color": [0, 0, 0]}], '
    '"images": [{"path": "../../etc/x.png", "width": 1, "height": 1}]}',
])
def test_damaged_project_file_is_a_message(qtbot, settings, tmp_path: Path, content: str) -> None:
    folder = make_folder(tmp_path / "images")
    (folder / DATA_DIR_NAME).mkdir()
    (folder / DATA_DIR_NAME / "project.json").write_text(content)
    w = new_window(qtbot, settings)
    assert not w.open_folder(folder)
    text = w.banner.label.text()
    assert "damaged project file" in text and "Traceback" not in text and "\n" not in text
    assert (folder / DATA_DIR_NAME / "project.json").read_text() == content  # untouched
    w.close()


def test_damaged_label_map_is_a_message_and_other_images_open(qtbot, settings, tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "images")
    with Project.open(folder) as proj:
        rec = proj.record("img_1.png")
        proj.save_annotation(rec, np.ones((rec.height, rec.width), np.uint8), np.zeros((rec.height, rec.width), bool))
        proj.annotation_files(rec)[0].write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    w = new_window(qtbot, settings, folder)
    assert not w.open_image(1)
    assert "img_1.png" in w.banner.label.text() and "Traceback" not in w.banner.label.text()
    assert w.open_image(2) and w.document is not None
    w.close()


def test_an_empty_folder_creates_nothing_on_disk(qtbot, settings, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    w = new_window(qtbot, settings, make_folder(tmp_path / "images"))
    assert w.open_folder(empty)
    assert os.listdir(empty) == [] and w.document is None
    w.close()
    assert os.listdir(empty) == []
