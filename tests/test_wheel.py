"""The wheel: built from this tree and installed with pip into a bare folder, it works from another
directory without the checkout: it holds and loads every bundled model with its card, the icon and
the demo photographs, and `deeplab-studio predict` runs with a bundled model on a demo photo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
#: what a wheel is built from (the rest of the checkout must not matter)
SOURCES = ("pyproject.toml", "README.md", "deeplab_studio", "resources")
PHOTO = "chelsea.jpg"

# Run in the installed copy with `python -S` (no site: the venv's editable-install hook is never
# loaded, so nothing can fall back on the checkout); prints one JSON line.
CHECK = r"""
import json, sys
from importlib import resources
from pathlib import Path

import deeplab_studio
from deeplab_studio import models
from deeplab_studio.ml.checkpoints import load_checkpoint

out = {"package": deeplab_studio.__file__, "models": {}}
for name in models.bundled_models():
    card = models.model_card(name)
    with models.bundled_model_path(name) as path:
        loaded = load_checkpoint(path)
        classes = card.get("classes") or card.get("class_names")
        out["models"][name] = {"path": str(path), "arch": [loaded.arch, card["arch"]],
                               "classes": [loaded.num_classes, len(classes)], "names": classes}
res = resources.files("deeplab_studio.resources")
out["icon"] = (res / "icons" / "deeplab-studio.svg").read_text(encoding="utf-8")[:4]
from PySide6.QtWidgets import QApplication
app = QApplication([])
from deeplab_studio.gui.app import app_icon
out["icon_pixmap"] = not app_icon().pixmap(32, 32).isNull()
from deeplab_studio.gui import demo
out["demo_kind"] = demo.demo_kind()
photos = demo.ensure_photo_project(Path(sys.argv[1]))
out["demo_project"] = sorted(p.name for p in photos.iterdir() if p.is_file())
out["modules"] = sorted({m.__file__ for n, m in list(sys.modules.items())
                         if n.split(".")[0] == "deeplab_studio" and getattr(m, "__file__", None)})
print(json.dumps(out))
"""


def _packages_on_disk() -> set[str]:
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "deeplab_studio").rglob("__init__.py")
             if "__pycache__" not in p.parts}
    return found | {"deeplab_studio.resources"}


def test_every_package_is_listed_in_pyproject() -> None:
    """pyproject lists the packages (so resources/ can ship as deeplab_studio.resources): a new
    subpackage left out of the list would be missing from the wheel."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    missing = _packages_on_disk() - set(setuptools["packages"])
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    assert setuptools["package-dir"]["deeplab_studio.resources"] == "resources"


def test_app_icon_comes_from_package_data(qapp) -> None:
    from deeplab_studio.gui.app import app_icon

    assert not app_icon().pixmap(32, 32).isNull()


def _run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _build_and_install(tmp: Path) -> tuple[Path, Path]:
    """Build the wheel from a copy of the sources (no stale build/ of the checkout), install it
    with pip into a bare folder; returns (wheel, folder)."""
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        item = ROOT / name
        if item.is_dir():
            shutil.copytree(item, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(item, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "wheel", "--no-index", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(src)])
    (wheel,) = (tmp / "dist").glob("deeplab_studio-*.whl")
    _run([*pip, "install", "--no-index", "--no-deps", "--target", str(tmp / "site"), str(wheel)])
    return wheel, tmp / "site"


@pytest.mark.slow
def test_installed_wheel_works_without_the_checkout(tmp_path: Path) -> None:
    from deeplab_studio.gui.demo import demo_photos
    from deeplab_studio.models import VOC_MODEL, bundled_models

    wheel, site = _build_and_install(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for model in bundled_models():
        assert {f"deeplab_studio/models/{model}.safetensors", f"deeplab_studio/models/{model}.json"} <= names
    shipped = [p for p in (ROOT / "deeplab_studio" / "models").iterdir() if p.is_file()]  # licences too
    assert {f"deeplab_studio/models/{p.name}" for p in shipped} <= names
    assert "deeplab_studio/resources/icons/deeplab-studio.svg" in names
    assert {f"deeplab_studio/resources/demo_photos/{p}" for p in [*demo_photos(), "README.md"]} <= names
    assert not any(n.startswith(("resources/", "models/", "tests/")) for n in names)  # nothing top-level

    elsewhere = tmp_path / "elsewhere"  # not the checkout: nothing importable in the working directory
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]]),
               PYTHONNOUSERSITE="1", QT_QPA_PLATFORM="offscreen", OMP_NUM_THREADS="1",
               DEEPLAB_STUDIO_DEMO_DIR=str(tmp_path / "demo"))
    python = [sys.executable, "-S"]  # -S: no .pth files, so the editable install of the checkout stays out
    proc = _run([*python, "-c", CHECK, str(tmp_path / "demo")], cwd=elsewhere, env=env)
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    installed = site.resolve() / "deeplab_studio"
    assert Path(out["package"]).resolve().parent == installed
    assert out["modules"] and all(Path(f).resolve().is_relative_to(installed) for f in out["modules"]), out["modules"]
    assert sorted(out["models"]) == bundled_models()
    for model, info in out["models"].items():
        assert Path(info["path"]).resolve() == installed / "models" / f"{model}.safetensors"
        assert info["arch"][0] == info["arch"][1] and info["classes"][0] == info["classes"][1], info
    assert out["icon"] == "<svg" and out["icon_pixmap"]
    assert out["demo_kind"] == ("photos" if VOC_MODEL in bundled_models() else "scenes")
    assert {*demo_photos(), "README.md"} <= set(out["demo_project"])

    model = VOC_MODEL if VOC_MODEL in out["models"] else sorted(out["models"])[0]
    photo = shutil.copy(installed / "resources" / "demo_photos" / PHOTO, elsewhere / PHOTO)
    _run([*python, "-m", "deeplab_studio", "predict", "--model", out["models"][model]["path"], "--device", "cpu",
          str(photo), "--out", str(elsewhere / "out")], cwd=elsewhere, env=env)
    from PIL import Image

    with Image.open(elsewhere / "out" / "chelsea.png") as labels, Image.open(photo) as image:
        assert labels.mode == "P" and labels.size == image.size
        counts = np.bincount(np.asarray(labels).ravel(), minlength=256)
    if model == VOC_MODEL:  # the real model sees the cat
        counts[0] = counts[255] = 0
        assert out["models"][model]["names"][counts.argmax()] == "cat"
