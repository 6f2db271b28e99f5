"""Issue 10: image switching independent of folder size, an empty folder clears the status bar,
the last model of a project comes back when it reopens, problems read as text."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from deeplab_studio.gui.window import settings as prefs
from deeplab_studio.gui.panels.image_list import FILTERS, ImageListPanel

from tests.gui.conftest import controller_with_model, make_folder, new_window

# --- 1. scale ---------------------------------------------------------------------------------


def _rows_visited_per_switch(qtbot, settings, folder: Path, switches: int = 4) -> list[int]:
    """How many list rows (`QListWidget.item`) each `step(+1)` touches."""
    w = new_window(qtbot, settings, folder)
    panel = w.image_panel
    real_item = panel.list.item
    visits = 0

    def counting_item(row):
        nonlocal visits
        visits += 1
        return real_item(row)

    panel.list.item = counting_item  # the panel (and the old visible_indices) reach rows only this way
    per_switch = []
    for _ in range(switches):
        visits = 0
        assert w.step(+1)
        per_switch.append(visits)
    w.close()
    return per_switch


def test_a_switch_visits_as_many_rows_in_a_big_folder_as_in_a_small_one(qtbot, settings, tmp_path):
    small = _rows_visited_per_switch(qtbot, settings, make_folder(tmp_path / "small", 12, size=(8, 6)))
    big = _rows_visited_per_switch(qtbot, settings, make_folder(tmp_path / "big", 240, size=(8, 6)))
    assert big == small  # the per-switch work does not grow with the folder
    assert max(big) <= 2  # the row made current, nothing walked


def test_neighbour_matches_the_shown_order_under_any_filter_and_status_change(qtbot):
    panel = ImageListPanel()
    qtbot.addWidget(panel)
    rng = random.Random(10)
    statuses = ("unlabeled", "auto", "edited", "reviewed")
    n = 60
    panel.set_images([f"{'cat' if i % 3 else 'dog'}_{i:02d}.png" for i in range(n)],
                     [rng.choice(statuses) for _ in range(n)])
    for round_ in range(40):
        if round_ % 4 == 0:
            panel.status_filter.setCurrentIndex(rng.randrange(len(FILTERS)))
            panel.text_filter.setText(rng.choice(["", "cat", "dog", "_1", "zzz"]))
        else:
            panel.set_status(rng.randrange(n), rng.choice(statuses))
        shown = [i for i in range(n) if not panel.list.item(i).isHidden()]  # what the user sees
        assert panel.visible_indices() == shown and panel.shown_count() == len(shown)
        assert all(panel.is_shown(i) == (i in shown) for i in range(n))
        reviewed = sum(panel.status(i) == "reviewed" for i in range(n))
        assert panel.counts.text().startswith(f"{reviewed} / {n} reviewed")
        for index in range(n):
            for delta in (-1, +1):
                if index in shown:  # the row `delta` away among the shown ones
                    pos = shown.index(index) + delta
                elif delta > 0:  # from a hidden row: the first shown after it / the last before it
                    pos = next((k for k, v in enumerate(shown) if v > index), len(shown))
                else:
                    pos = next((k for k, v in enumerate(shown) if v > index), len(shown)) - 1
                want = shown[pos] if 0 <= pos < len(shown) else None
                assert panel.neighbour(index, delta) == want, (round_, index, delta)


def test_marking_reviewed_under_not_reviewed_filter_moves_on(qtbot, window):
    window.image_panel.status_filter.setCurrentIndex(FILTERS.index("not reviewed"))
    assert window.index == 0
    assert window.mark_reviewed_and_next() and window.index == 1
    assert window.image_panel.visible_indices() == [1, 2]
    assert window.step(-1) is False and window.index == 1  # img_0 is hidden now
    assert window.step(+1) and window.index == 2


# --- 2. an empty folder clears the previous image's status fields ---------------------------


def test_an_empty_folder_after_images_clears_the_status_bar(qtbot, window, tmp_path):
    window.canvas.cursorMoved.emit(3.0, 4.0)
    fields = window.status
    assert fields.size.text() and fields.position.text() and fields.klass.text() and fields.zoom.text()
    assert fields.save_state.text()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert window.open_folder(empty)
    assert [f.text() for f in fields.fields] == [""] * len(fields.fields)
    assert window.document is None and window.index == -1
    assert not window.class_panel.counts.any()  # no class counts of the old image either
    window.canvas.cursorMoved.emit(3.0, 4.0)  # the mouse over the empty canvas shows nothing
    assert fields.position.text() == fields.klass.text() == ""


def test_the_status_fields_come_back_with_the_next_image(qtbot, window, folder, tmp_path):
    (tmp_path / "empty").mkdir()
    assert window.open_folder(tmp_path / "empty")
    assert window.open_folder(folder)
    assert window.status.size.text() == "64 × 48" and window.status.zoom.text()
    window.canvas.cursorMoved.emit(3.0, 4.0)
    assert window.status.klass.text()


# --- 3. the last model of a project is loaded again -------------------------------------------


@pytest.fixture
def checkpoint_copy(tiny_checkpoint, tmp_path) -> Path:
    """A private copy of the tiny checkpoint (tests may delete it)."""
    path = tmp_path / "models" / "mine.safetensors"
    path.parent.mkdir()
    shutil.copy(tiny_checkpoint, path)
    return path


def _use_model(qtbot, settings, folder, checkpoint) -> None:
    w = new_window(qtbot, settings, folder)
    c = controller_with_model(qtbot, w, checkpoint)
    assert c.client.model.path == str(checkpoint)
    w.close()
    # the project's write lock (storage rewrite) goes with the window only once the window closes
    # its project; until then let the next window in this test open the folder
    getattr(w.project, "close", lambda: None)()


def test_reopening_a_project_loads_its_last_model(qtbot, settings, folder, checkpoint_copy, one_torch_thread):
    from deeplab_studio.gui.model_tools import attach_model_tools

    _use_model(qtbot, settings, folder, checkpoint_copy)
    assert prefs.last_model(settings, str(folder.resolve()))[0] == str(checkpoint_copy)
    w = new_window(qtbot, settings)  # the app's order: model tools first, then the folder
    c = attach_model_tools(w)
    assert c.client.model is None
    with qtbot.waitSignal(c.client.modelLoaded, timeout=60000) as loaded:
        assert w.open_folder(folder)
    assert loaded.args[0].path == str(checkpoint_copy) and loaded.args[0].device == "cpu"
    assert c.client.model.path == str(checkpoint_copy)
    w.close()


def test_each_project_gets_its_own_model_back(qtbot, settings, tmp_path, tiny_checkpoint, one_torch_thread):
    from deeplab_studio.gui.model_tools import attach_model_tools

    a, b = make_folder(tmp_path / "a", 2), make_folder(tmp_path / "b", 2)
    ckpt_b = tmp_path / "b_model.safetensors"
    shutil.copy(tiny_checkpoint, ckpt_b)
    _use_model(qtbot, settings, a, tiny_checkpoint)
    _use_model(qtbot, settings, b, ckpt_b)
    w = new_window(qtbot, settings, a)  # opened before the model tools attach: still restored
    c = attach_model_tools(w)
    with qtbot.waitSignal(c.client.modelLoaded, timeout=60000):
        pass
    assert c.client.model.path == str(tiny_checkpoint)
    with qtbot.waitSignal(c.client.modelLoaded, timeout=60000):
        assert w.open_folder(b)
    assert c.client.model.path == str(ckpt_b)
    w.close()


def test_a_model_that_is_gone_is_said_once_and_the_work_goes_on(qtbot, settings, folder, checkpoint_copy,
                                                                   one_torch_thread):
    from deeplab_studio.gui.model_tools import attach_model_tools

    _use_model(qtbot, settings, folder, checkpoint_copy)
    checkpoint_copy.unlink()
    w = new_window(qtbot, settings)
    c = attach_model_tools(w)
    messages = []
    w.messageShown.connect(messages.append)
    assert w.open_folder(folder)
    qtbot.waitUntil(lambda: any("gone" in m for m in messages), timeout=5000)
    gone = [m for m in messages if str(checkpoint_copy) in m]
    assert len(gone) == 1 and "without a model" in gone[0]
    assert c.client.model is None and not c.client.busy  # no load was started
    assert w.document is not None and w.document.key == "img_0.png"  # the work goes on
    assert prefs.last_model(settings, str(folder.resolve())) is None  # said once, not on every open
    w.close()
    getattr(w.project, "close", lambda: None)()
    w2 = new_window(qtbot, settings)
    c2 = attach_model_tools(w2)
    w2.messageShown.connect(messages.append)
    with qtbot.waitSignal(c2.projectModelChecked, timeout=5000):
        assert w2.open_folder(folder)
    assert len([m for m in messages if "gone" in m]) == 1
    w2.close()


# --- 4. problems read as text -----------------------------------------------------------------


def test_folder_problems_are_shown_as_their_messages(qtbot, settings, folder):
    (folder / "broken.png").write_bytes(b"this is not a PNG")
    w = new_window(qtbot, settings, folder)
    text = w.banner.text()
    assert "broken.png" in text
    assert "Problem(" not in text and "kind=" not in text
    w.close()
