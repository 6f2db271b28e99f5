"""The offline demo: real photographs with the bundled VOC model, or generated scenes.

`open_demo(window, kind=...)` opens one of two demo projects in `<user data>/demo/` and loads the
model that suits it. Photographs, icons and weights are package data (`importlib.resources`), so
the demo works after a plain `pip install` with no network and no script to run.

- `"photos"`: the photographs of `deeplab_studio.resources/demo_photos` (an astronaut, a cat, a
  coffee cup; sources and licences in its README.md) copied to `demo/photos` once, with the 21
  Pascal VOC classes and the bundled VOC model `deeplabv3_mobilenetv2_voc`: the first Ctrl+R
  labels a real person and a real cat.
- `"scenes"`: generated scenes (textured disks, squares and triangles, `core.scenes`) in
  `demo/images`, their ground truth aside in `demo/ground_truth` for measuring, with the small
  scenes model `demo_deeplabv3plus_mobilenet` trained on such scenes (`models/train_demo_model.py`).
- `"auto"` (what `deeplab-studio --demo` opens): photos when the VOC model is bundled, else scenes.
"""

from __future__ import annotations

import io
import os
from importlib import resources
from pathlib import Path

import numpy as np

from deeplab_studio.core.scenes import generate_scene, scene_labelset
from deeplab_studio.models import SCENES_MODEL, VOC_MODEL, bundled_model_path, bundled_models

DEMO_VERSION = 1
DEMO_IMAGES = 12
DEMO_SIZE = (240, 320)  # height, width: the scale the demo model was trained at
DEMO_SEED = 2024  # training used other seeds, so these scenes are unseen by the model
DEMO_KINDS = ("auto", "photos", "scenes")
PHOTOS_PACKAGE = "deeplab_studio.resources"
PHOTOS_FOLDER = "demo_photos"
DEMO_HINT = "Demo: Ctrl+R segment · Ctrl+Shift+R snap to edges · U uncertainty"  # fits the status bar


def __getattr__(name: str) -> Path:
    """`DEMO_MODEL`, the scenes model's file (the name older scripts import)."""
    if name == "DEMO_MODEL":
        return Path(str(resources.files("deeplab_studio.models") / f"{SCENES_MODEL}.safetensors"))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def demo_kind(kind: str = "auto") -> str:
    """`"photos"` or `"scenes"`: `kind` itself, or for `"auto"` photos when the VOC model is bundled."""
    if kind not in DEMO_KINDS:
        raise ValueError(f"unknown demo {kind!r} (one of {', '.join(DEMO_KINDS)})")
    if kind == "auto":
        return "photos" if VOC_MODEL in bundled_models() else "scenes"
    return kind


def demo_model(kind: str) -> str:
    """The bundled model that goes with demo `kind` ("photos" or "scenes")."""
    return VOC_MODEL if demo_kind(kind) == "photos" else SCENES_MODEL


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
    _set_classes(images, scene_labelset())


def _set_classes(folder: Path, labels) -> None:
    from deeplab_studio.storage.project import Project, ProjectLockedError

    try:
        project = Project.open(folder)
    except ProjectLockedError:
        return  # another window has the demo open: this one will open it read-only
    with project:  # closed at once: the window opens it next
        if list(project.labels.names) != list(labels.names):
            project.set_labelset(labels)


def demo_photos() -> list[str]:
    """File names of the photographs shipped in the package, sorted."""
    folder = resources.files(PHOTOS_PACKAGE) / PHOTOS_FOLDER
    return sorted(e.name for e in folder.iterdir() if e.is_file() and e.name.lower().endswith((".jpg", ".png")))


def ensure_photo_project(root: Path | None = None) -> Path:
    """Copy the demo photographs (and their README) into `<root>/photos` once; returns that folder.

    A new project gets the 21 Pascal VOC classes (the VOC model's); files already there, and
    classes the user changed later, are left alone.
    """
    from deeplab_studio.storage.atomic import atomic_write_bytes, atomic_write_json

    root = Path(root) if root is not None else demo_root()
    photos, marker = root / "photos", root / "photos.json"
    source = resources.files(PHOTOS_PACKAGE) / PHOTOS_FOLDER
    names = demo_photos()
    photos.mkdir(parents=True, exist_ok=True)
    for name in [*names, "README.md"]:
        if not (photos / name).is_file():
            atomic_write_bytes(photos / name, (source / name).read_bytes())
    if not marker.is_file():
        _set_classes(photos, _voc_labelset())
        atomic_write_json(marker, {"version": DEMO_VERSION, "images": names, "model": VOC_MODEL})
    return photos


def _voc_labelset():
    from deeplab_studio.core.labels import LabelSet

    return LabelSet.voc()  # the VOC model's classes: its proposals map onto them by name


def ground_truth(images_folder: Path, key: str) -> np.ndarray | None:
    """The generated ground truth of demo image `key` (None when absent)."""
    path = Path(images_folder).parent / "ground_truth" / Path(key).name
    if not path.is_file():
        return None
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("P") if im.mode == "P" else im, dtype=np.uint8).copy()


def open_demo(window, *, root: Path | None = None, device: str = "auto", kind: str = "auto"):
    """Open demo `kind` ("auto", "photos" or "scenes") in `window` and load its bundled model;
    returns the window's ModelController (attached first when it is not yet)."""
    from deeplab_studio.gui.model_tools import model_tools

    kind = demo_kind(kind)
    folder = ensure_photo_project(root) if kind == "photos" else ensure_demo_project(root)
    tools = model_tools(window)
    controller, link = tools.controller, tools.link
    link.session.open_folder(str(folder))
    name = demo_model(kind)
    if name not in bundled_models():
        link.show_error("Demo model missing", f"The model {name} is not part of this installation of DeepLab Studio.")
        return controller
    from PySide6.QtCore import Qt

    # the hint comes after "Model loaded", which would otherwise replace it at once
    controller.client.modelLoaded.connect(lambda _info: link.show_message(DEMO_HINT, 30000),
                                          Qt.ConnectionType.SingleShotConnection)
    with bundled_model_path(name) as path:  # the installed file itself (a wheel is unpacked)
        controller.load_model(str(path), device)
    return controller
