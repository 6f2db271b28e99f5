"""The dependency direction of ARCHITECTURE.md, checked in fresh interpreters."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

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
     ("ml", {"PySide6"}),
     # subcommand modules import torch inside run(), so `deeplab-studio X --help` stays fast
     ("commands", {"PySide6", "torch", "torchvision"})],
)
def test_package_does_not_import(package: str, forbidden: set[str]) -> None:
    loaded = _loaded_after_import(_modules_of(package))
    assert not (loaded & forbidden), f"deeplab_studio.{package} pulls in {sorted(loaded & forbidden)}"


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


# Every import statement, including those inside functions (lazy imports still create the
# dependency), checked against the direction gui → ml, storage, core; ml → core; storage → core.
_FORBIDDEN_IMPORTS = {
    "core": {"deeplab_studio.storage", "deeplab_studio.ml", "deeplab_studio.gui", "deeplab_studio.commands",
             "torch", "torchvision", "PySide6", "cv2"},
    "storage": {"deeplab_studio.ml", "deeplab_studio.gui", "deeplab_studio.commands", "torch", "torchvision",
                "PySide6"},
    "ml": {"deeplab_studio.storage", "deeplab_studio.gui", "deeplab_studio.commands", "PySide6"},
}


def _imported_names(path) -> set[str]:
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(_FORBIDDEN_IMPORTS))
def test_no_import_statement_points_the_wrong_way(package: str) -> None:
    from pathlib import Path

    root = Path(deeplab_studio.__file__).parent / package
    bad = []
    for path in sorted(root.rglob("*.py")):
        for name in _imported_names(path):
            if any(name == f or name.startswith(f + ".") for f in _FORBIDDEN_IMPORTS[package]):
                bad.append(f"{path.relative_to(root.parent)} imports {name}")
    assert not bad, "\n".join(bad)
