"""The offline demo: bundled models and photographs from package data; the scenes model's
proposals are far better than chance; the photos demo labels a real person and cat once the VOC
model is bundled."""

from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np
import pytest
from PySide6.QtCore import QSettings

from deeplab_studio import models
from deeplab_studio.core.metrics import ConfusionMatrix
from deeplab_studio.core.scenes import SCENE_CLASSES
from deeplab_studio.gui import demo

pytestmark = pytest.mark.usefixtures("one_torch_thread")
VOC_BUNDLED = models.VOC_MODEL in models.bundled_models()


@pytest.mark.parametrize("name", models.bundled_models())
def test_every_bundled_model_loads_and_matches_its_card(name: str) -> None:
    """A card names the model, its architecture, class names (`classes`, or the converter's
    `class_names`) and licence; a file name, size or hash it states is the file's."""
    from deeplab_studio.ml.checkpoints import load_checkpoint

    card = models.model_card(name)
    assert card["name"] and card["licence"]
    classes = card.get("classes") or card.get("class_names")
    with models.bundled_model_path(name) as path:
        assert path.is_file() and card.get("file", path.name) == path.name == f"{name}.safetensors"
        assert card.get("size_bytes", path.stat().st_size) == path.stat().st_size
        assert card.get("sha256") in (None, hashlib.sha256(path.read_bytes()).hexdigest())
        loaded = load_checkpoint(path)
    assert loaded.arch == card["arch"] and loaded.num_classes == len(classes)
    assert loaded.class_names is None or list(loaded.class_names) == list(classes)


def test_the_scenes_model_is_bundled_with_its_card() -> None:
    assert models.SCENES_MODEL in models.bundled_models()
    card = models.model_card(models.SCENES_MODEL)
    assert card["arch"] == "deeplabv3plus_mobilenet" and card["classes"] == list(SCENE_CLASSES)
    assert "synthetic" in card["description"]
    assert demo.DEMO_MODEL.is_file()  # the name older scripts import


def test_unknown_or_escaping_names_are_refused() -> None:
    for name in ("nope", "../models/demo_deeplabv3plus_mobilenet", ""):
        with pytest.raises(LookupError):
            models.model_card(name)
        with pytest.raises(LookupError), models.bundled_model_path(name):
            pass


def test_auto_demo_is_photos_only_when_the_voc_model_is_bundled(monkeypatch) -> None:
    monkeypatch.setattr(demo, "bundled_models", lambda: [models.SCENES_MODEL])
    assert demo.demo_kind() == "scenes" and demo.demo_model("auto") == models.SCENES_MODEL
    monkeypatch.setattr(demo, "bundled_models", lambda: [models.SCENES_MODEL, models.VOC_MODEL])
    assert demo.demo_kind() == "photos" and demo.demo_model("auto") == models.VOC_MODEL
    assert demo.demo_kind("scenes") == "scenes" and demo.demo_model("scenes") == models.SCENES_MODEL
    with pytest.raises(ValueError):
        demo.demo_kind("movies")


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


def test_photo_project_copies_the_shipped_photographs_once(tmp_path) -> None:
    from deeplab_studio.core.labels import VOC_CLASSES
    from deeplab_studio.storage.project import Project

    assert demo.demo_photos() == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]
    photos = demo.ensure_photo_project(tmp_path)
    shipped = resources.files("deeplab_studio.resources") / "demo_photos"
    for name in [*demo.demo_photos(), "README.md"]:
        assert (photos / name).read_bytes() == (shipped / name).read_bytes()
    assert "CC0" in (photos / "README.md").read_text(encoding="utf-8")
    stamp = (photos / "chelsea.jpg").stat().st_mtime_ns
    with Project.open(photos) as project:
        assert len(project.records) == 3
        assert list(project.labels.names) == list(VOC_CLASSES)
        project.labels.add("mug")
        project.set_labelset(project.labels)  # a class the user added survives reopening the demo
    assert demo.ensure_photo_project(tmp_path) == photos
    assert (photos / "chelsea.jpg").stat().st_mtime_ns == stamp
    with Project.open(photos, read_only=True) as project:
        assert "mug" in project.labels.names


def _window(qtbot, tmp_path, monkeypatch):
    from deeplab_studio.gui.window.main_window import MainWindow

    monkeypatch.setenv("DEEPLAB_STUDIO_DEMO_DIR", str(tmp_path / "demo"))
    window = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.show()
    return window


def test_demo_opens_and_its_model_segments_well_above_chance(qtbot, tmp_path, monkeypatch) -> None:
    window = _window(qtbot, tmp_path, monkeypatch)
    controller = demo.open_demo(window, device="cpu", kind="scenes")
    try:
        assert window.project is not None and window.document is not None
        assert window.project.folder == tmp_path / "demo" / "images"
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


def test_photos_demo_without_the_voc_model_says_so_in_the_window(qtbot, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(demo, "bundled_models", lambda: [models.SCENES_MODEL])  # an install without it
    window = _window(qtbot, tmp_path, monkeypatch)
    shown: list[str] = []
    window.messageShown.connect(shown.append)
    controller = demo.open_demo(window, device="cpu", kind="photos")
    try:
        assert window.project.folder == tmp_path / "demo" / "photos" and window.document is not None
        assert any(models.VOC_MODEL in m and "not part of this installation" in m for m in shown), shown
        assert not any(".py" in m for m in shown)  # no script to run: nothing the user can do
        assert controller.client.model is None
    finally:
        controller.shutdown()
        window.close()


@pytest.mark.skipif(not VOC_BUNDLED, reason="the VOC model is not bundled yet")
def test_auto_demo_labels_the_astronaut_as_person_and_chelsea_as_cat(qtbot, tmp_path, monkeypatch) -> None:
    window = _window(qtbot, tmp_path, monkeypatch)
    controller = demo.open_demo(window, device="cpu")
    try:
        assert window.project.folder == tmp_path / "demo" / "photos"
        qtbot.waitUntil(lambda: controller.client.model is not None, timeout=60000)
        for key, expected in (("astronaut.jpg", "person"), ("chelsea.jpg", "cat")):
            assert window.go_to(key)
            with qtbot.waitSignal(controller.proposalApplied, timeout=60000):
                controller.auto_segment()
            counts = np.bincount(window.document.labels.ravel(), minlength=256)
            counts[0] = counts[255] = 0
            wanted = window.project.labels.index(expected)
            assert counts.argmax() == wanted and counts[wanted] > 0.1 * window.document.labels.size, key
    finally:
        controller.shutdown()
        window.close()
