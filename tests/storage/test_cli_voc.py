"""`deeplab-studio export` and `import-voc` end to end (in-process main() and one real subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from deeplab_studio.cli import main
from deeplab_studio.storage.project import Project, Status


def test_export_then_import_via_cli(annotated: Project, tmp_path: Path, capsys) -> None:
    out = tmp_path / "voc"
    rc = main(["export", str(annotated.folder), "--out", str(out), "--val-fraction", "0.4", "--seed", "2",
               "--status", "reviewed,edited", "--objects"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "exported 4 images" in captured.out and "left out: 1 auto, 1 unlabeled" in captured.out
    assert "exporting 4/4" in captured.err  # progress on stderr
    assert (out / "SegmentationObject").is_dir()
    assert len((out / "ImageSets/Segmentation/val.txt").read_text().split()) == 2

    # a real subprocess for the import, as a user would run it
    proc = subprocess.run([sys.executable, "-m", "deeplab_studio", "import-voc", str(out), "--into",
                           str(tmp_path / "new"), "--split", "train"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "imported 2 label maps" in proc.stdout and "importing 2/2" in proc.stderr
    proj = Project.open(tmp_path / "new")
    assert len(proj.records) == 2 and all(r.status == Status.REVIEWED for r in proj.records)
    assert proj.labels.names == annotated.labels.names
    src = {"a": "a.jpg", "b": "b.png", "rot": "rot.jpg", "alpha": "alpha.png"}
    for rec in proj.records:
        np.testing.assert_array_equal(proj.load_annotation(rec)[0],
                                      annotated.load_annotation(annotated.record(src[rec.path[:-4]]))[0])


def _one_error_line(rc: int, err: str, *words: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1, err
    assert "error:" in lines[0] and all(w in lines[0] for w in words), lines[0]


def test_cli_bad_input_gives_one_line_and_exit_2(annotated: Project, tmp_path: Path, capsys) -> None:
    afile = tmp_path / "afile.txt"
    afile.write_text("not a folder")
    good_voc = tmp_path / "good_voc"
    assert main(["export", str(annotated.folder), "--out", str(good_voc)]) == 0
    capsys.readouterr()
    cases = [
        (["export", str(annotated.folder), "--out", str(afile / "voc")], ("cannot write the export there",)),
        (["import-voc", str(good_voc), "--into", str(afile)], ("afile.txt", "not a folder")),
        (["import-voc", str(good_voc), "--into", str(afile / "sub")], ("cannot create the folder",)),
        (["export", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], ("no such folder",)),
        (["export", str(tmp_path), "--out", str(tmp_path / "o")], ("no DeepLab Studio project",)),
        (["export", str(annotated.folder), "--out", str(tmp_path / "o"), "--status", "great"], ("unknown status",)),
        (["export", str(annotated.folder), "--out", str(tmp_path / "o"), "--val-fraction", "1.5"], ("val-fraction",)),
        (["export", str(annotated.folder), "--out", str(annotated.folder / "x")], ("outside the image folder",)),
        (["import-voc", str(tmp_path / "nothing"), "--into", str(tmp_path / "p")], ("no such folder",)),
        (["import-voc", str(annotated.folder), "--into", str(tmp_path / "p")], ("not a VOC dataset",)),
    ]
    for argv, words in cases:
        rc = main(argv)
        _one_error_line(rc, capsys.readouterr().err, *words)
    (annotated.data_dir / "project.json").write_text('{"format_version": 99}')
    rc = main(["export", str(annotated.folder), "--out", str(tmp_path / "o")])
    _one_error_line(rc, capsys.readouterr().err, "newer")
