"""The offline demo: a project of generated scenes and the small model bundled in `models/`.

`open_demo(window)` creates (or reopens) `<user data>/demo/images`, a folder of synthetic scenes
(textured disks, squares and triangles on textured backgrounds, `core.scenes`) whose ground truth
is kept aside in `<user data>/demo/ground_truth` for measuring, opens it in the window and loads
`models/demo_deeplabv3plus_mobilenet.safetensors`. No network is needed.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from deeplab_studio.core.scenes import generate_scene, scene_labelset

DEMO_VERSION = 1
DEMO_IMAGES = 12
DEMO_SIZE = (240, 320)  # height, width: the scale the demo model was trained at
DEMO_SEED = 2024  # training used other seeds, so these scenes are unseen by the model
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
DEMO_MODEL = MODELS_DIR / "demo_deeplabv3plus_mobilenet.safetensors"
DEMO_HINT = "Demo: Ctrl+R segment · Ctrl+Shift+R snap to edges · U uncertainty"  # fits the status bar


def demo_root() -> Path:
    """`$DEEPLAB_STUDIO_DEMO_DIR`, else the user data folder's `demo/`."""
    env = os.environ.get("DEEPLAB_STUDIO_DEMO_DIR")
    if env:
        return Path(env)
    from PySide6.QtCore import QStandardPaths

    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base or Path.home() / ".local" / "share" / "deeplab-studio") / "demo"


def _write_png(path: Path, array: np.ndarray, palette: np.ndarray | None = None) -> None:
    from PIL import Image

    from deeplab_studio.storage.atomic import atomic_write_bytes

    img = Image.fromarray(array)
    if palette is not None:
        img = img.convert("P") if img.mode != "P" else img
        img.putpalette(palette.astype(np.uint8).ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def ensure_demo_project(root: Path | None = None, *, count: int = DEMO_IMAGES) -> Path:
    """Create the demo's images and ground truth once; returns the image folder."""
    root = Path(root) if root is not None else demo_root()
    images, truth = root / "images", root / "ground_truth"
    marker = root / "demo.json"
    names = [f"scene_{i:02d}.png" for i in range(count)]
    if marker.is_file() and all((images / n).is_file() and (truth / n).is_file() for n in names):
        return images
    images.mkdir(parents=True, exist_ok=True)
    truth.mkdir(parents=True, exist_ok=True)
    palette = scene_labelset().palette()
    for i, name in enumerate(names):
        image, labels = generate_scene(*DEMO_SIZE, seed=(DEMO_SEED, i))
        if not (images / name).is_file():
            _write_png(images / name, image)
        _write_png(truth / name, labels.astype(np.uint8), palette)
    from deeplab_studio.storage.atomic import atomic_write_json

    atomic_write_json(marker, {"version": DEMO_VERSION, "images": names, "seed": DEMO_SEED,
                               "classes": list(scene_labelset().names)})
    _prepare_classes(images)
    return images


def _prepare_classes(images: Path) -> None:
    """Give the demo project the scene classes (background, disk, square, triangle)."""
    from deeplab_studio.storage.project import Project, ProjectLockedError

    try:
        project = Project.open(images)
    except ProjectLockedError:
        return  # another window has the demo open: this one will open it read-only
    with project:  # closed at once: the window opens it next
        if list(project.labels.names) != list(scene_labelset().names):
            project.set_labelset(scene_labelset())


def ground_truth(images_folder: Path, key: str) -> np.ndarray | None:
    """The generated ground truth of demo image `key` (None when absent)."""
    path = Path(images_folder).parent / "ground_truth" / Path(key).name
    if not path.is_file():
        return None
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("P") if im.mode == "P" else im, dtype=np.uint8).copy()


def open_demo(window, *, root: Path | None = None, device: str = "auto"):
    """Open the demo project in `window` and load the bundled model; returns the ModelController."""
    from deeplab_studio.gui.model_controller import attach_model_tools

    images = ensure_demo_project(root)
    window.open_project(str(images))
    controller = attach_model_tools(window)
    if DEMO_MODEL.is_file():
        from PySide6.QtCore import Qt

        # the hint comes after "Model loaded", which would otherwise replace it at once
        controller.client.modelLoaded.connect(lambda _info: controller.link.show_message(DEMO_HINT, 30000),
                                              Qt.ConnectionType.SingleShotConnection)
        controller.load_model(str(DEMO_MODEL), device)
    else:
        controller.link.show_error("Demo model missing",
                                   f"{DEMO_MODEL} is not there; run models/train_demo_model.py to make it.")
    return controller
