"""The `deeplab-studio` entry points as a user runs them: console script, `python -m`, bad input."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import deeplab_studio


def _run(*argv: str) -> subprocess.CompletedProcess:
    # a timeout: a regression that opens the GUI would otherwise wait in the event loop forever
    return subprocess.run([*argv], capture_output=True, text=True, timeout=120)


def test_console_script_is_declared_and_runs() -> None:
    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "deeplab-studio"]
    assert ep.value == "deeplab_studio.cli:main"
    script = Path(sys.executable).parent / "deeplab-studio"
    if not script.is_file():
        pytest.skip(f"the package is not installed into this interpreter's environment ({script})")
    out = _run(str(script), "--version")
    assert out.returncode == 0 and out.stdout.strip() == f"deeplab-studio {deeplab_studio.__version__}"
    out = _run(str(script), "--help")
    assert out.returncode == 0 and "import-voc" in out.stdout and "--demo" in out.stdout
    assert "  import       import a dataset (VOC, CVAT masks, labelme, COCO, mask folders)" in out.stdout


@pytest.mark.parametrize("sub, options", [("export", ("--out", "--val-fraction", "--seed", "--status", "--format")),
                                          ("import", ("--into", "--format", "--classes", "--split")),
                                          ("import-voc", ("--into", "--split"))])
def test_subcommand_help_lists_the_documented_options(sub: str, options: tuple[str, ...]) -> None:
    out = _run(sys.executable, "-m", "deeplab_studio", sub, "--help")
    assert out.returncode == 0 and all(o in out.stdout for o in options), out.stdout


def test_missing_folder_or_mistyped_command_is_one_line_not_a_window(tmp_path: Path) -> None:
    out = _run(sys.executable, "-m", "deeplab_studio", "exprot")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "exprot: no such folder" in lines[0] and "'export' command" in lines[0], out.stderr
    out = _run(sys.executable, "-m", "deeplab_studio", str(tmp_path / "nowhere"))
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        f"deeplab-studio: error: {tmp_path / 'nowhere'}: no such folder"]


@pytest.mark.parametrize("argv, words", [
    (["export", "some_folder"], ("deeplab-studio export: error:", "--out", "see deeplab-studio export --help")),
    (["export", "f", "--out", "o", "--val-fraction", "lots"], ("invalid float value: 'lots'",)),
    (["import-voc", "voc", "--into", "p", "--bogus"], ("unrecognized arguments: --bogus",)),
    (["--bogus"], ("deeplab-studio: error: unrecognized arguments: --bogus",)),
])
def test_usage_mistakes_are_one_line_and_exit_2(argv: list[str], words: tuple[str, ...], capsys) -> None:
    from deeplab_studio.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(lines) == 1, lines
    assert all(w in lines[0] for w in words), lines[0]
