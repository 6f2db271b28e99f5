"""Two writers on one project lose nothing: commands against commands and against a holder
process (the window's side is in tests/gui/test_two_windows.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from deeplab_studio.cli import main
from deeplab_studio.storage.project import Project, Status

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "deeplab_studio", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def _voc(annotated: Project, tmp_path: Path) -> Path:
    out = tmp_path / "voc"
    assert main(["export", str(annotated.folder), "--out", str(out), "--flat", "--val-fraction", "0"]) == 0
    return out


def test_two_concurrent_imports_import_every_image_exactly_once(annotated: Project, tmp_path: Path) -> None:
    voc = _voc(annotated, tmp_path)
    ids = (voc / "ImageSets/Segmentation/trainval.txt").read_text().split()
    into = tmp_path / "into"
    for attempt in range(3):  # race them a few times; each outcome must be clean
        runs = [_cli("import-voc", str(voc), "--into", str(into)) for _ in range(2)]
        results = [(p.wait(timeout=120), *p.communicate()) for p in runs]
        assert any(rc == 0 for rc, _, _ in results), results
        for rc, _out, err in results:
            assert rc == 0 or (rc == 2 and "open for writing" in err and len(err.strip().splitlines()) == 1), err
        with Project.open(into, read_only=True) as proj:
            images = sorted(p.name for p in into.iterdir() if p.is_file())
            assert len(images) == len(ids) and len(proj.records) == len(ids), images  # no "-2" copies
            assert all(r.status == Status.REVIEWED for r in proj.records)


def test_a_command_is_refused_while_another_process_writes(annotated: Project, tmp_path: Path) -> None:
    voc = _voc(annotated, tmp_path)
    folder = annotated.folder
    rec = annotated.record("b.png")
    before = annotated.load_annotation(rec)
    annotated.close()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from deeplab_studio.storage.project import Project
        p = Project.open({str(folder)!r})
        print("open", flush=True)
        input()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "open"
        proc = _cli("import-voc", str(voc), "--into", str(folder), "--overwrite")
        rc = proc.wait(timeout=120)
        err = proc.communicate()[1]
        assert rc == 2 and f"pid {holder.pid}" in err and len(err.strip().splitlines()) == 1, err
        # reading commands still work: export opens the project read-only
        proc = _cli("export", str(folder), "--out", str(tmp_path / "again"))
        assert proc.wait(timeout=120) == 0, proc.communicate()[1]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with Project.open(folder) as proj:  # the killed holder's lock is gone; nothing was overwritten
        labels, mask = proj.load_annotation(proj.record("b.png"))
        np.testing.assert_array_equal(labels, before[0])
        np.testing.assert_array_equal(mask, before[1])
