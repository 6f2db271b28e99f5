"""VOC export vs a naive copy-and-save loop, in the same run (issue 15 item 6).

    .venv/bin/python benchmarks/bench_export.py [--n 100] [--repeat 3] [--sources jpeg|mixed|both] [--profile]

A project of N real-sized images (the ten `tests/data/voc_real` photographs duplicated: `jpeg` =
the three original VOC JPEGs, `mixed` = all ten, seven of them PNG), each labelled with its VOC
ground truth, is exported with `export_voc` and with a naive loop that does the same writing work
and no checks: a JPEG source is copied with `shutil.copyfile`, any other source is decoded and
saved as JPEG quality 95 4:4:4 (what the export writes), and each label map is read from the project
and saved as a palette PNG with PIL. Prints the best-of-`repeat` seconds of each and the export's
speed as a fraction of the naive loop's (1.0 = as fast). `--profile`: a cProfile of one export.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from deeplab_studio.core.labels import LabelSet
from deeplab_studio.storage.project import Project, Status
from deeplab_studio.storage.voc import export_voc

from _common import best_of

REAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "voc_real"


def make_project(folder: Path, n: int, sources: str) -> Project:
    images = sorted((REAL / "images").iterdir())
    if sources == "jpeg":
        images = [p for p in images if p.suffix == ".jpg"]
    folder.mkdir(parents=True)
    for k in range(n):
        src = images[k % len(images)]
        shutil.copyfile(src, folder / f"{k:04d}_{src.name}")
    proj = Project.open(folder)
    proj.set_labelset(LabelSet.voc())
    for rec in proj.records:
        with Image.open(REAL / "masks" / f"{rec.path[5:].rsplit('.', 1)[0]}.png") as im:
            labels = np.array(im, dtype=np.uint8)
        proj.save_annotation(rec, labels, np.zeros(labels.shape, bool), status=Status.REVIEWED)
    return proj


def naive_export(proj: Project, out: Path) -> None:
    """The same files, written the simplest way: no staging, no probing, no checks."""
    (out / "JPEGImages").mkdir(parents=True)
    (out / "SegmentationClass").mkdir()
    palette = LabelSet.voc().palette()
    full = np.zeros((256, 3), np.uint8)
    full[: len(palette)] = palette
    for rec in proj.records:
        src, stem = proj.image_path(rec), Path(rec.path).stem
        if src.suffix.lower() in (".jpg", ".jpeg"):
            shutil.copyfile(src, out / "JPEGImages" / f"{stem}.jpg")
        else:
            with Image.open(src) as im:
                im.convert("RGB").save(out / "JPEGImages" / f"{stem}.jpg", quality=95, subsampling=0)
        labels, _ = proj.load_annotation(rec)
        im = Image.fromarray(labels, "P")
        im.putpalette(full.tobytes())
        im.save(out / "SegmentationClass" / f"{stem}.png")


def run(tmp: Path, n: int, sources: str, repeat: int, profile: bool) -> None:
    proj = make_project(tmp / f"project_{sources}", n, sources)
    count = [0]

    def out() -> Path:
        count[0] += 1
        return tmp / f"out_{sources}_{count[0]}"

    naive_export(proj, out())  # warm the page cache and imports
    export_voc(proj, out())
    # interleaved, so that load from other processes hits both alike
    t_naive, t_export = [], []
    for _ in range(repeat):
        t_naive.append(best_of(lambda: naive_export(proj, out()), 1)[0])
        t_export.append(best_of(lambda: export_voc(proj, out()), 1)[0])
    naive, export = min(t_naive), min(t_export)
    print(f"{sources:5s} n={n}: naive loop {naive:.3f} s ({n / naive:.0f} img/s), export_voc {export:.3f} s "
          f"({n / export:.0f} img/s); export speed = {naive / export:.2f}x the naive loop's")
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        export_voc(proj, out())
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(30)
        print(buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sources", choices=["jpeg", "mixed", "both"], default="both")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        for sources in (["jpeg", "mixed"] if args.sources == "both" else [args.sources]):
            run(Path(tmp), args.n, sources, args.repeat, args.profile)


if __name__ == "__main__":
    main()
