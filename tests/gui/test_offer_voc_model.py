"""A folder with no model gets the offer of the bundled VOC model at once (a notice under the
banner, never a dialog); one click loads it and Ctrl+R proposes real classes; a project's
remembered model wins; the train dialog starts from the VOC model when no model of the user's is
active."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QApplication

from deeplab_studio.gui.window import settings as prefs
from deeplab_studio.models import VOC_MODEL, bundled_models

VOC_REAL = Path(__file__).resolve().parents[1] / "data" / "voc_real"
pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(VOC_MODEL not in bundled_models(), reason="the VOC model is not bundled")]


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for image_id in ("2007_000033", "2009_001314"):  # an aeroplane, a bird
        shutil.copy(VOC_REAL / "images" / f"{image_id}.png", folder / f"{image_id}.png")
    return folder


def _window(qtbot, tmp_path, folder: Path | None):
    from deeplab_studio.gui.window.main_window import MainWindow
    from deeplab_studio.gui.model_tools import attach_model_tools

    w = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    w.resize(900, 700)
    w.show()
    c = attach_model_tools(w)
    c.act_crf.setChecked(False)
    if folder is not None:
        assert w.open_folder(folder)
    return w, c


def test_folder_without_a_model_offers_the_voc_model_and_one_click_loads_it(qtbot, tmp_path, photos) -> None:
    from deeplab_studio.gui.model.offer import bundled_weights

    w, c = _window(qtbot, tmp_path, photos)
    try:
        qtbot.waitUntil(c.offer.isVisible, timeout=5000)  # at once, with nothing loading
        assert c.client.model is None and not c.client.busy
        assert not w.banner.isVisible()  # the banner stays free for the folder's own messages
        assert "Pascal VOC" in c.offer.label.text() and c.offer.use_button.text() == "Use the VOC model"
        c.auto_segment()  # Ctrl+R before choosing: the error points at the offer
        assert "Use the VOC model" in w.banner.text()
        with qtbot.waitSignal(c.client.modelLoaded, timeout=60000):
            qtbot.mouseClick(c.offer.use_button, Qt.MouseButton.LeftButton)
        assert not c.offer.isVisible()
        info = c.client.model
        assert info.path == bundled_weights(VOC_MODEL) and info.num_classes == 21
        assert info.path.endswith(f"{VOC_MODEL}.safetensors") and Path(info.path).is_file()
        assert prefs.last_model(w.settings, str(photos))[0] == info.path  # remembered: a real choice
        with qtbot.waitSignal(c.proposalApplied, timeout=60000):
            c.auto_segment()
        labels = w.document.labels  # 2007_000033: an aeroplane (VOC class 1, the project's class 1)
        assert w.project.labels.names[1] == "aeroplane" and 0.1 < np.mean(labels == 1) < 0.35
    finally:
        w.close()


def test_the_projects_remembered_model_wins(qtbot, tmp_path, photos, tiny_checkpoint) -> None:
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    prefs.set_last_model(settings, str(photos), str(tiny_checkpoint), "cpu")
    settings.sync()
    from deeplab_studio.gui.window.main_window import MainWindow
    from deeplab_studio.gui.model_tools import attach_model_tools

    w = MainWindow(settings)
    qtbot.addWidget(w)
    w.show()
    c = attach_model_tools(w)
    try:
        with qtbot.waitSignal(c.client.modelLoaded, timeout=60000):
            assert w.open_folder(photos)
        assert c.client.model.path == str(tiny_checkpoint)
        assert not c.offer.isVisible()  # decided before the load started: the remembered model won
    finally:
        w.close()


def test_a_remembered_model_that_is_gone_gives_the_offer(qtbot, tmp_path, photos) -> None:
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    prefs.set_last_model(settings, str(photos), str(tmp_path / "gone.safetensors"), "cpu")
    settings.sync()
    w, c = _window(qtbot, tmp_path, photos)
    try:
        qtbot.waitUntil(c.offer.isVisible, timeout=5000)
        assert "gone" in w.banner.text() and c.client.model is None
    finally:
        w.close()


def test_no_folder_no_offer_and_dismiss_lasts_until_another_folder(qtbot, tmp_path, photos) -> None:
    w, c = _window(qtbot, tmp_path, None)
    try:
        QApplication.processEvents()  # anything posted by the set-up has run
        assert not c.offer.isVisible()  # nothing open: nothing to propose for
        assert w.open_folder(photos)
        qtbot.waitUntil(c.offer.isVisible, timeout=5000)
        qtbot.mouseClick(c.offer.close_button, Qt.MouseButton.LeftButton)  # "not now"
        c.restore_project_model()  # nothing asks again for this folder...
        assert not c.offer.isVisible() and c.client.model is None
        other = tmp_path / "other"
        shutil.copytree(photos, other)
        assert w.open_folder(other)
        qtbot.waitUntil(c.offer.isVisible, timeout=5000)
    finally:
        w.close()


def test_offering_does_not_import_torch(tmp_path, photos) -> None:
    code = ("import sys; from PySide6.QtCore import QSettings; from PySide6.QtWidgets import QApplication; "
            "app = QApplication([]); from deeplab_studio.gui.window.main_window import MainWindow; "
            "from deeplab_studio.gui.model_tools import attach_model_tools; "
            f"w = MainWindow(QSettings({str(tmp_path / 's.ini')!r}, QSettings.Format.IniFormat)); w.show(); "
            f"c = attach_model_tools(w); w.open_folder({str(photos)!r}); "
            "[app.processEvents() for _ in range(20)]; assert c.offer.isVisible(), 'no offer'; "
            "assert 'torch' not in sys.modules, 'torch imported'; c.shutdown(); print('ok')")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_train_dialog_starts_from_the_voc_model(qtbot, tmp_path, photos) -> None:
    from deeplab_studio.gui.model_tools import attach_training_tools

    w, c = _window(qtbot, tmp_path, photos)
    t = attach_training_tools(w)
    assert t.controller is c
    try:
        dialog = t.show_dialog()
        combo = dialog.settings.start_combo
        assert combo.currentData() == VOC_MODEL and combo.findData("active") < 0  # first when no model is active
        assert [combo.itemData(i) for i in range(combo.count())] == [VOC_MODEL, "imagenet", "random"]
        assert dialog.settings.arch_combo.currentText() == "deeplabv3_mobilenetv2_tf" and not dialog.settings.arch_combo.isEnabled()
        assert dialog.settings.freeze_bn.isChecked() and not dialog.settings.freeze_bn.isEnabled()  # folded batch norm
        req = dialog.request()
        assert req.init == VOC_MODEL and req.arch is None and req.lr == pytest.approx(0.001)  # fine-tuning rate
        combo.setCurrentIndex(combo.findData("random"))
        assert dialog.settings.arch_combo.isEnabled() and dialog.settings.freeze_bn.isEnabled()
        req = dialog.request()
        assert req.init == "random" and req.arch == dialog.settings.arch_combo.currentText() and req.lr == pytest.approx(0.01)
        dialog.settings.lr.setValue(0.005)  # the user's rate stays whatever the start point
        combo.setCurrentIndex(combo.findData(VOC_MODEL))
        assert dialog.request().lr == pytest.approx(0.005)
        with qtbot.waitSignal(c.client.modelLoaded, timeout=60000):
            c.use_voc_model()
        dialog.refresh()  # the active model is the bundled one: listed once, as the bundled model
        assert [combo.itemData(i) for i in range(combo.count())] == [VOC_MODEL, "imagenet", "random"]
    finally:
        t.shutdown()
        w.close()


def test_model_dialog_lists_the_bundled_models_voc_first(qtbot, tmp_path, photos) -> None:
    from deeplab_studio.gui.model.dialog import ModelDialog, model_cards
    from deeplab_studio.gui.model.offer import bundled_weights

    cards = model_cards()
    assert cards[0]["bundled"] == VOC_MODEL and cards[0]["weights_path"] == bundled_weights(VOC_MODEL)
    assert {c["bundled"] for c in cards} == set(bundled_models())
    w, c = _window(qtbot, tmp_path, photos)
    try:
        dlg = ModelDialog(c, parent=w)
        first = dlg.models.item(0)
        assert first.text().startswith("Bundled: ") and first.data(256) == bundled_weights(VOC_MODEL)
        dlg.close()
    finally:
        w.close()
