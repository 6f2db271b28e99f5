"""Model dialog: model info, device list, class mapping table, model cards, offline download."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PySide6.QtCore import QSettings

from deeplab_studio.core.labels import IGNORE, LabelSet
from deeplab_studio.core.scenes import generate_scene
from deeplab_studio.gui.model_tools import attach_model_tools
from deeplab_studio.gui.model.dialog import ModelDialog, model_cards

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCH = "deeplabv3plus_mobilenet"
CLASSES = ["background", "disk", "square", "triangle"]


@pytest.fixture
def window(qtbot, tmp_path):
    from PIL import Image

    from deeplab_studio.gui.window.main_window import MainWindow

    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(generate_scene(64, 64, seed=1)[0]).save(folder / "a.png")
    w = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    w.show()
    assert w.open_folder(folder)
    assert w.set_labelset(LabelSet(["background", "square", "cat"]))
    yield w
    w.close()


def test_dialog_shows_the_model_and_edits_the_mapping(qtbot, window, tiny_checkpoint) -> None:
    c = attach_model_tools(window)
    dlg = ModelDialog(c, parent=window)
    qtbot.addWidget(dlg)
    with qtbot.waitSignal(c.client.devicesProbed, timeout=60000):
        pass  # probed on opening
    assert dlg.device.findData("cpu") >= 0 and dlg.device.findData("auto") >= 0
    dlg.device.setCurrentIndex(dlg.device.findData("cpu"))
    with qtbot.waitSignal(c.client.modelLoaded, timeout=60000):
        dlg.load_path(str(tiny_checkpoint))
    assert ARCH in dlg.info.text() and "output stride 16" in dlg.info.text() and "CPU" in dlg.info.text()
    assert dlg.table.rowCount() == 4
    assert dlg.table_targets() == [0, 0, 1, 0]  # square matched by name, the rest to background
    dlg.unmatched.setCurrentIndex(1)  # unmatched → ignore
    assert dlg.table_targets() == [0, IGNORE, 1, IGNORE]
    combo = dlg.table.cellWidget(1, 1)
    combo.setCurrentIndex(combo.findData(2))  # the user maps "disk" onto "cat"
    dlg.apply_mapping()
    np.testing.assert_array_equal(c.mapping.lut()[:4], [0, 2, 1, IGNORE])
    assert str(tiny_checkpoint) in c.recent_models()
    assert c.model_status[0] == "tiny · CPU" and ARCH in c.model_status[1]
    items = [dlg.models.item(i) for i in range(dlg.models.count())]
    mine = [it for it in items if it.data(256) == str(tiny_checkpoint)]
    assert len(mine) == 1 and mine[0].text().startswith("(active)")  # listed once, marked active
    assert sum(it.text().startswith("(active)") for it in items) == 1
    c.settings.setValue("model/recent", [str(tiny_checkpoint), *(c2["weights_path"] for c2 in model_cards())])
    dlg.refresh_models()  # a recent file that is also a model card is listed once, as the card
    paths = [dlg.models.item(i).data(256) for i in range(dlg.models.count())]
    assert len(paths) == len(set(paths))
    dlg.reject()
    c.shutdown()


def test_model_cards_are_listed(tmp_path) -> None:
    (tmp_path / "good.json").write_text(json.dumps({"name": "Good", "arch": ARCH, "file": "good.safetensors"}))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"no": "arch"}))
    cards = model_cards(tmp_path)
    assert [c["name"] for c in cards] == ["Good"]
    assert cards[0]["weights_path"] == str(tmp_path / "good.safetensors")
    bundled = [c["arch"] for c in model_cards()]
    assert ARCH in bundled  # the demo model's card in models/


def test_offline_download_gives_a_clear_message(qtbot, window, tmp_path, monkeypatch) -> None:
    import deeplab_studio.ml.checkpoints as ckpts

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # a name that never resolves (RFC 2606), so the real download code fails as it does offline
    monkeypatch.setitem(ckpts.TORCHVISION_WEIGHTS, "deeplabv3_resnet50",
                        "https://weights.invalid/deeplabv3_resnet50_coco-cd0a2569.pth")
    c = attach_model_tools(window)
    dlg = ModelDialog(c, parent=window)
    qtbot.addWidget(dlg)
    dlg.tv_combo.setCurrentText("deeplabv3_resnet50")
    dlg.download_torchvision()
    qtbot.waitUntil(lambda: not dlg.downloading(), timeout=60000)
    assert dlg.status.text().startswith("Download failed") and "weights.invalid" in dlg.status.text()
    assert dlg.tv_button.isEnabled() and c.client.model is None
    dlg.reject()
    c.shutdown()


def test_a_download_outlives_the_dialog(qtbot, window, tmp_path, monkeypatch) -> None:
    import deeplab_studio.ml.checkpoints as ckpts

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setitem(ckpts.TORCHVISION_WEIGHTS, "deeplabv3_resnet50",
                        "https://weights.invalid/deeplabv3_resnet50_coco-cd0a2569.pth")
    c = attach_model_tools(window)
    dlg = ModelDialog(c, parent=window)
    dlg.tv_combo.setCurrentText("deeplabv3_resnet50")
    dlg.download_torchvision()
    dlg.reject()  # closed while the download runs: the controller reports its end
    with qtbot.waitSignal(window.messageShown, timeout=60000) as blocker:
        pass
    assert "Download failed" in blocker.args[0] and "weights.invalid" in blocker.args[0]
    c.shutdown()
