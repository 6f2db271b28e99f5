"""`deeplab-studio import` and `export --format` end to end: the detected format said in one
line, per-file failures named (exit 1), bad input one line (exit 2), the import-voc alias."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from deeplab_studio.cli import main
from deeplab_studio.storage.project import Project, Status
from tests.storage.test_cli_voc import _one_error_line  # exit 2 with one `error:` line naming `words`


def test_export_cvat_mask_then_import_it_back(annotated: Project, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cvat"
    rc = main(["export", str(annotated.folder), "--out", str(out), "--format", "cvat-mask"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"exported 5 images (4 classes) as cvat-mask to {out}" in captured.out
    assert "checked by reading it back" in captured.out and "left out: 1 unlabeled" in captured.out
    proc = subprocess.run([sys.executable, "-m", "deeplab_studio", "import", str(out), "--into", str(tmp_path / "p")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (f'read {out} as cvat-mask (CVAT "Segmentation mask 1.1"), detected; classes: labelmap.txt; '
                        "split: default.txt")
    assert lines[1].startswith("imported 5 label maps") and "5 images copied" in lines[1]
    assert lines[2] == "classes: 4 same" and "importing 5/5" in proc.stderr
    with Project.open(tmp_path / "p", read_only=True) as p:
        assert sorted(r.path for r in p.records) == ["a.jpg", "alpha.png", "b.png", "rot.jpg", "sub/a.jpg"]
        for rec in p.records:
            np.testing.assert_array_equal(p.load_annotation(rec)[0],
                                          annotated.load_annotation(annotated.record(rec.path))[0])


def test_import_names_failures_and_exits_1(tmp_path: Path, capsys) -> None:
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(root / "images" / "ok.png")
    Image.fromarray(np.ones((10, 12), np.uint8)).save(root / "masks" / "ok.png")
    (root / "images" / "IMG_1.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(root / "images" / "lonely.jpg")
    rc = main(["import", str(root), "--into", str(tmp_path / "p")])
    captured = capsys.readouterr()
    assert rc == 1
    failed = [ln for ln in captured.err.splitlines() if ln.startswith("failed: ")]
    assert len(failed) == 2 and "HEIC images are skipped" in failed[0] and "no mask for" in failed[1]
    assert "lonely.jpg" in failed[1]
    assert "masks (images/ + masks/ folders), detected" in captured.out.splitlines()[0]
    assert "imported 1 label maps" in captured.out and "2 failed (named above, skipped)" in captured.out
    with Project.open(tmp_path / "p", read_only=True) as p:
        assert [(r.path, r.status) for r in p.records] == [("ok.png", Status.REVIEWED)]


def test_bad_input_is_one_line_and_exit_2(annotated: Project, tmp_path: Path, capsys) -> None:
    voc = tmp_path / "voc"
    assert main(["export", str(annotated.folder), "--out", str(voc), "--flat"]) == 0
    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_map = tmp_path / "map.txt"
    bad_map.write_text("no equals sign\n")
    cases = [
        (["import", str(empty), "--into", str(tmp_path / "p")], ("not a VOC folder", "give --format")),
        (["import", str(voc), "--into", str(tmp_path / "p"), "--format", "masks"], ("not a mask folder",)),
        (["import", str(voc), "--into", str(tmp_path / "p"), "--split", "nope"], ("no such split file",)),
        (["import", str(voc), "--into", str(tmp_path / "p"), "--classes", str(bad_map)], ("map.txt:1",)),
        (["import", str(voc), "--into", str(voc / "inside")], ("outside the dataset",)),
        (["export", str(annotated.folder), "--out", str(tmp_path / "o"), "--format", "masks", "--flat"],
         ("--flat: options of --format voc only",)),
        (["export", str(annotated.folder), "--out", str(annotated.folder / "x"), "--format", "masks"],
         ("outside the image folder",)),
    ]
    for argv, words in cases:
        rc = main(argv)
        _one_error_line(rc, capsys.readouterr().err, *words)
    assert not (tmp_path / "p").exists() and not (tmp_path / "o").exists()
    (voc / "labelmap.txt").write_text("bg:0,0,0::\nbroken line\n")
    rc = main(["import-voc", str(voc), "--into", str(tmp_path / "p")])
    _one_error_line(rc, capsys.readouterr().err, "labelmap.txt:2")


def test_help_lists_the_formats(capsys) -> None:
    import pytest

    for argv, words in ((["import", "--help"], ("--format", "auto", "cvat-mask", "--classes", "(void)", "--split")),
                        (["export", "--help"], ("--format", "cvat-mask", "masks", "labelme", "coco"))):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert all(w in text for w in words), text
