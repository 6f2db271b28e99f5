"""GUI test fixtures: a tiny folder of generated images, private settings, an open window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPoint, QPointF, QSettings, Qt

from deeplab_studio.gui import qt_compat

qt_compat.apply()  # PySide6 builds that leak None/True/False references abort long test runs otherwise

H, W = 48, 64


def make_folder(folder: Path, n: int = 3, size: tuple[int, int] = (W, H)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img_{i}.png")
    return folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "images")


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    """Settings in a temporary INI file (never the user's)."""
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


def new_window(qtbot, settings, folder=None):
    from deeplab_studio.gui.window.main_window import MainWindow

    w = MainWindow(settings)
    qtbot.addWidget(w)
    w.resize(900, 700)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    if folder is not None:
        assert w.open_folder(folder)
    return w


@pytest.fixture
def window(qtbot, settings, folder):
    w = new_window(qtbot, settings, folder)
    yield w
    w.close()


def view_pos(window, x: float, y: float) -> QPoint:
    """Viewport position of the centre of image pixel (x, y)."""
    return window.canvas.mapFromScene(QPointF(x + 0.5, y + 0.5))


def click(qtbot, window, x, y, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    qtbot.mouseClick(window.canvas.viewport(), Qt.MouseButton.LeftButton, modifier, view_pos(window, x, y))


def drag(qtbot, window, points, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    vp = window.canvas.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, modifier, view_pos(window, *points[0]))
    for p in points[1:]:
        qtbot.mouseMove(vp, view_pos(window, *p))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, modifier, view_pos(window, *points[-1]))


# --- model fixtures (torch is imported only by the tests that ask for these) ----------------
TINY_ARCH = "deeplabv3plus_mobilenet"
TINY_CLASSES = ["background", "disk", "square", "triangle"]  # the generated scenes' classes


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint in this project's format: random DeepLab v3+ MobileNet, scene classes."""
    import torch

    from deeplab_studio.ml.checkpoints import save_checkpoint
    from deeplab_studio.ml.zoo import build_model

    torch.manual_seed(0)
    model = build_model(TINY_ARCH, num_classes=len(TINY_CLASSES)).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, model, arch=TINY_ARCH, num_classes=len(TINY_CLASSES), class_names=TINY_CLASSES)
    return path


def controller_with_model(qtbot, window, checkpoint: Path):
    """The window's model tools with `checkpoint` loaded on the CPU, CRF refinement off."""
    from deeplab_studio.gui.model_tools import attach_model_tools

    c = attach_model_tools(window)
    c.act_crf.setChecked(False)
    with qtbot.waitSignal(c.client.modelLoaded, timeout=60000):
        c.load_model(str(checkpoint), "cpu")
    return c


@pytest.fixture
def voc_controller(qtbot, window):
    """The window's model tools with the bundled VOC model loaded (CPU, CRF off); shut down after."""
    from deeplab_studio.models import VOC_MODEL, bundled_model_path

    with bundled_model_path(VOC_MODEL) as path:
        c = controller_with_model(qtbot, window, path)
    yield c
    c.shutdown()
