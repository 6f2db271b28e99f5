"""The offline demo: generated project + bundled model; its proposals are far better than chance."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PySide6.QtCore import QSettings

from deeplab_studio.core.metrics import ConfusionMatrix
from deeplab_studio.core.scenes import SCENE_CLASSES
from deeplab_studio.gui import demo


pytestmark = pytest.mark.usefixtures("one_torch_thread")

def test_the_bundled_model_and_its_card_exist() -> None:
    assert demo.DEMO_MODEL.is_file(), "models/demo_deeplabv3plus_mobilenet.safetensors must be committed"
    card = json.loads(demo.DEMO_MODEL.with_suffix(".json").read_text())
    assert card["arch"] == "deeplabv3plus_mobilenet" and card["classes"] == list(SCENE_CLASSES)
    assert card["file"] == demo.DEMO_MODEL.name and card["size_bytes"] == demo.DEMO_MODEL.stat().st_size
    assert "synthetic" in card["description"] and card["licence"]


def test_demo_project_is_created_once_and_reopened(tmp_path) -> None:
    images = demo.ensure_demo_project(tmp_path, count=3)
    first = sorted(p.name for p in images.iterdir() if p.suffix == ".png")
    assert first == ["scene_00.png", "scene_01.png", "scene_02.png"]
    stamp = (images / "scene_00.png").stat().st_mtime_ns
    assert demo.ensure_demo_project(tmp_path, count=3) == images
    assert (images / "scene_00.png").stat().st_mtime_ns == stamp  # reopened, not regenerated
    truth = demo.ground_truth(images, "scene_01.png")
    assert truth is not None and truth.dtype == np.uint8 and set(np.unique(truth)) <= {0, 1, 2, 3}
    from deeplab_studio.storage.project import Project

    project = Project.open(images, read_only=True)
    assert list(project.labels.names) == list(SCENE_CLASSES)
    assert len(project.records) == 3  # ground truth is kept outside the image folder


def test_demo_opens_and_its_model_segments_well_above_chance(qtbot, tmp_path, monkeypatch) -> None:
    from deeplab_studio.gui.main_window import MainWindow

    assert demo.DEMO_MODEL.is_file()
    monkeypatch.setenv("DEEPLAB_STUDIO_DEMO_DIR", str(tmp_path / "demo"))
    window = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.show()
    controller = demo.open_demo(window, device="cpu")
    try:
        assert window.project is not None and window.document is not None
        qtbot.waitUntil(lambda: controller.client.model is not None, timeout=60000)
        assert window.statusBar().currentMessage() == demo.DEMO_HINT  # not replaced by "Model loaded"
        assert controller.mapping.is_identity()
        controller.act_crf.setChecked(True)
        with qtbot.waitSignal(controller.proposalApplied, timeout=60000):
            controller.auto_segment()
        doc = window.document
        truth = demo.ground_truth(window.project.folder, doc.key)
        cm = ConfusionMatrix(len(SCENE_CLASSES))
        cm.update(truth, doc.labels)
        chance = ConfusionMatrix(len(SCENE_CLASSES))
        chance.update(truth, np.zeros_like(truth))
        assert cm.miou() > 0.6 and cm.miou() > chance.miou() + 0.3, (cm.miou(), chance.miou())
        assert window.undo.active.count() == 1
    finally:
        controller.shutdown()
        window.close()
