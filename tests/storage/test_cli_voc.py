"""`deeplab-studio export` and `import-voc` end to end (in-process main() and one real subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.cli import main
from deeplab_studio.storage.project import Project, Status
from deeplab_studio.storage.voc import export_marker


def test_export_then_import_via_cli(annotated: Project, tmp_path: Path, capsys) -> None:
    out = tmp_path / "voc"
    rc = main(["export", str(annotated.folder), "--out", str(out), "--val-fraction", "0.4", "--seed", "2",
               "--status", "reviewed,edited", "--objects", "--flat"])
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
    newer = tmp_path / "newer"
    (newer / ".deeplab_studio").mkdir(parents=True)
    (newer / ".deeplab_studio" / "project.json").write_text('{"format_version": 99}')
    rc = main(["export", str(newer), "--out", str(tmp_path / "o")])
    _one_error_line(rc, capsys.readouterr().err, "newer")


def test_cli_default_layout_loads_in_torchvision(annotated: Project, tmp_path: Path, capsys) -> None:
    tv = pytest.importorskip("torchvision.datasets")
    out = tmp_path / "out"
    rc = main(["export", str(annotated.folder), "--out", str(out), "--val-fraction", "0.4"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    voc = out / "VOCdevkit" / "VOC2012"
    assert f"to {voc} " in captured.out and f"VOCSegmentation(root={str(out)!r}, year=\"2012\"" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["VOCdevkit"]
    sources = export_marker(voc)["sources"]
    seen = set()
    for split in ("train", "val", "trainval"):
        ds = tv.VOCSegmentation(root=str(out), year="2012", image_set=split, download=False)  # the CLI's OUT
        ids = (voc / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        assert len(ds) == len(ids) > 0
        for k, voc_id in enumerate(ids):
            img, target = ds[k]
            rec = annotated.record(sources[voc_id])
            np.testing.assert_array_equal(np.array(target), annotated.load_annotation(rec)[0])
            assert img.size == (rec.width, rec.height)
            seen.add(voc_id)
    assert len(seen) == 5
    assert main(["export", str(annotated.folder), "--out", str(out)]) == 0  # its own export: replaced
    capsys.readouterr()
    rc = main(["export", str(annotated.folder), "--out", str(tmp_path / "flat"), "--flat"])
    assert rc == 0 and (tmp_path / "flat" / "JPEGImages").is_dir()


def _second_project(tmp_path: Path) -> Path:
    folder = tmp_path / "second"
    folder.mkdir()
    Image.fromarray(np.full((20, 30, 3), 9, np.uint8)).save(folder / "one.png")
    proj = Project.open(folder)
    proj.save_annotation(proj.record("one.png"), np.ones((20, 30), np.uint8), np.ones((20, 30), bool))
    proj.close()
    return folder


def test_cli_refuses_to_replace_another_projects_export(annotated: Project, tmp_path: Path, capsys) -> None:
    out = tmp_path / "shared"
    voc = out / "VOCdevkit" / "VOC2012"
    assert main(["export", str(annotated.folder), "--out", str(out)]) == 0
    second = _second_project(tmp_path)
    capsys.readouterr()
    rc = main(["export", str(second), "--out", str(out)])
    _one_error_line(rc, capsys.readouterr().err, "another project", str(annotated.folder), "--overwrite-other")
    assert len(list((voc / "JPEGImages").iterdir())) == 5  # untouched
    rc = main(["export", str(second), "--out", str(out), "--overwrite-other"])
    assert rc == 0 and [p.name for p in (voc / "JPEGImages").iterdir()] == ["one.jpg"]
    assert export_marker(voc)["project"]["folder"] == str(second)


def test_cli_batch_goes_on_after_a_failing_file(annotated: Project, tmp_path: Path, capsys) -> None:
    src = annotated.folder / "a.jpg"
    data = src.read_bytes()
    src.write_bytes(data[: len(data) * 2 // 3])  # header intact, data cut: this image fails, the others export
    out = tmp_path / "out"
    rc = main(["export", str(annotated.folder), "--out", str(out), "--flat"])
    captured = capsys.readouterr()
    assert rc == 1
    assert [ln for ln in captured.err.splitlines() if ln.startswith("failed: ")] == [
        ln for ln in captured.err.splitlines() if ln.startswith(f"failed: {src}: ")] != []
    assert "exported 4 images" in captured.out and "1 failed" in captured.out
    (out / "JPEGImages" / "b.jpg").write_bytes(b"not a jpeg")
    rc = main(["import-voc", str(out), "--into", str(tmp_path / "p")])
    captured = capsys.readouterr()
    assert rc == 1 and "failed: " in captured.err and "b.jpg" in captured.err
    assert "imported 3 label maps" in captured.out and "1 failed" in captured.out


def test_cli_non_utf8_names(tmp_path: Path, capsys) -> None:
    """A folder and an image whose names hold byte 0xE9 (Latin-1 'é'): no UnicodeEncodeError."""
    import os

    try:
        folder = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9")))
        folder.mkdir()
    except (OSError, UnicodeError):
        pytest.skip("this file system does not store names that are not UTF-8")
    Image.fromarray(np.full((20, 30, 3), 9, np.uint8)).save(folder / "caf\udce9.png", format="PNG")
    Image.fromarray(np.full((20, 30, 3), 9, np.uint8)).save(folder / "caf.png")
    proj = Project.open(folder)
    for rec in proj.records:
        proj.save_annotation(rec, np.ones((20, 30), np.uint8), np.ones((20, 30), bool))
    proj.close()
    out = tmp_path / "caf\udce9_voc"
    rc = main(["export", str(folder), "--out", str(out)])
    captured = capsys.readouterr()  # printed through a strict UTF-8 stream
    assert rc == 0, captured.err
    assert "exported 2 images" in captured.out and "caf\\xe9_voc" in captured.out
    ids = (out / "VOCdevkit/VOC2012/ImageSets/Segmentation/trainval.txt").read_bytes().decode("utf-8").split()
    assert len(ids) == 2 and "caf" in ids
    rc = main(["import-voc", str(out), "--into", str(tmp_path / "caf\udce9_copy")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "imported 2 label maps" in captured.out
