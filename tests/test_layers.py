"""The dependency direction of the packages (core at the bottom; ml and storage independent; session;
gui and commands on top): what fresh interpreters load, and the import-linter contracts of
pyproject.toml (every import, relative and lazy ones included)."""

from __future__ import annotations

import json
import os
import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import deeplab_studio


def _modules_of(package: str) -> list[str]:
    pkg = __import__(f"deeplab_studio.{package}", fromlist=["_"])
    return [f"deeplab_studio.{package}"] + [
        f"deeplab_studio.{package}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)
    ]


def _loaded_after_import(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(k.split('.')[0] for k in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "package, forbidden",
    [("core", {"PySide6", "torch", "torchvision", "cv2"}), ("storage", {"PySide6", "torch", "torchvision"}),
     ("ml", {"PySide6"}), ("session", {"PySide6", "torch", "torchvision"}),
     # subcommand modules import torch inside run(), so `deeplab-studio X --help` stays fast
     ("commands", {"PySide6", "torch", "torchvision"})],
)
def test_package_does_not_import(package: str, forbidden: set[str]) -> None:
    loaded = _loaded_after_import(_modules_of(package))
    assert not (loaded & forbidden), f"deeplab_studio.{package} pulls in {sorted(loaded & forbidden)}"


def test_the_torch_free_ml_modules_stay_torch_free() -> None:
    """What the window imports in its own thread: error types, architecture names, training config."""
    modules = ["deeplab_studio.ml.errors", "deeplab_studio.ml.arch_names", "deeplab_studio.ml.train_config"]
    loaded = _loaded_after_import(modules)
    assert not (loaded & {"torch", "numpy", "PySide6"}), sorted(loaded & {"torch", "numpy", "PySide6"})


def test_cli_help_and_version_do_not_import_torch_or_qt() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from deeplab_studio.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "print('torch' in sys.modules, 'PySide6' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_version_entry_points() -> None:
    for argv in (["-m", "deeplab_studio", "--version"],):
        out = subprocess.run([sys.executable, *argv], capture_output=True, text=True)
        assert out.returncode == 0
        assert out.stdout.strip() == f"deeplab-studio {deeplab_studio.__version__}"


def test_help_lists_every_subcommand() -> None:
    out = subprocess.run([sys.executable, "-m", "deeplab_studio", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in ("predict", "refine", "train", "evaluate", "export", "import-voc"):
        assert name in out.stdout


# --- the import contracts of pyproject.toml ([tool.importlinter]) --------------------------------
ROOT = Path(deeplab_studio.__file__).resolve().parent.parent
_LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _lint_imports(config: Path, cwd: Path, package_parent: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on `config`, with `package_parent`'s deeplab_studio first on the path."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([sys.executable, "-c", _LINT, str(config), "--no-cache", "--no-logo"],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_the_import_contracts_are_kept() -> None:
    out = _lint_imports(ROOT / "pyproject.toml", ROOT, ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 5 kept, 0 broken." in out.stdout


def _with_line(path: Path, line: str, *, lazy: bool) -> None:
    """Add `line` after the module's `from __future__` import, or inside a new function when `lazy`."""
    text = path.read_text(encoding="utf-8")
    if lazy:
        path.write_text(text + f"\n\ndef _injected() -> None:\n    {line}  # noqa\n", encoding="utf-8")
    else:
        head = "from __future__ import annotations\n"
        assert head in text, path
        path.write_text(text.replace(head, head + f"{line}  # noqa\n", 1), encoding="utf-8")


@pytest.mark.parametrize("module, line, lazy, broken, shown", [
    # relative imports were invisible to the AST scan this replaced
    ("ml/hub.py", "from ..storage import atomic", False, "layers", "deeplab_studio.ml.hub -> deeplab_studio.storage"),
    ("storage/images.py", "from deeplab_studio.ml import datasets", True, "layers", "deeplab_studio.storage.images ->"),
    ("core/labels.py", "from ..session import document", True, "layers", "deeplab_studio.core.labels ->"),
    ("session/events.py", "from deeplab_studio.gui import app", True, "layers", "deeplab_studio.session.events ->"),
    ("gui/app.py", "from deeplab_studio.commands import train", True, "layers", "deeplab_studio.gui.app ->"),
    ("core/fill.py", "import cv2", True, "core-pure", "deeplab_studio.core.fill -> cv2"),
    ("session/events.py", "import torch", True, "no-torch-in-storage-or-session", "deeplab_studio.session.events"),
    ("ml/crf.py", "from PySide6 import QtCore", True, "qt-only-in-gui", "deeplab_studio.ml.crf -> PySide6"),
    ("commands/train.py", "import superqt", False, "qt-only-in-gui", "deeplab_studio.commands.train -> superqt"),
    # a cycle between gui features: the model tools reaching into training
    ("gui/model/controller.py", "from ..training import tools", True, "gui-features",
     "deeplab_studio.gui.model.controller -> deeplab_studio.gui.training"),
])
def test_the_contracts_catch_a_wrong_import(tmp_path: Path, module: str, line: str, lazy: bool, broken: str,
                                            shown: str) -> None:
    """A copy of the package with one wrong import (relative, lazy or external) fails its contract."""
    shutil.copytree(ROOT / "deeplab_studio", tmp_path / "deeplab_studio",
                    ignore=shutil.ignore_patterns("__pycache__", "*.safetensors"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    _with_line(tmp_path / "deeplab_studio" / module, line, lazy=lazy)
    out = _lint_imports(tmp_path / "pyproject.toml", tmp_path, tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    name = next(c["name"] for c in config["contracts"] if c["id"] == broken)
    report = " ".join(out.stdout.split())
    assert f"{' '.join(name.split())} BROKEN" in report and shown in report, out.stdout


@pytest.mark.parametrize("package, allowed", [("core", {"numpy"}), ("models", set())])
def test_package_imports_only_the_standard_library_and(package: str, allowed: set[str]) -> None:
    """What the forbidden lists cannot say: no third-party import but `allowed`, lazy ones included."""
    import grimp

    graph = grimp.build_graph("deeplab_studio", include_external_packages=True, cache_dir=None)
    prefix = f"deeplab_studio.{package}"
    external = {imported.split(".")[0] for m in graph.modules if m == prefix or m.startswith(prefix + ".")
                for imported in graph.find_modules_directly_imported_by(m) if not imported.startswith("deeplab_studio")}
    assert external - set(sys.stdlib_module_names) - allowed == set()
