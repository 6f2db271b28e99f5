"""Save and switch cost of the project store at 10, 2,000 and 20,000 images.

For each folder size it prints, median over repeated runs:
- `save`: one `Project.save_annotation` (new label-map/edit-mask generation + one SQLite
  transaction) on a 64×48 image, against `files only`, the same two atomic PNG writes with no
  index (the floor), and `json index`, the format-1 way: the same writes plus rewriting a
  `project.json` of N records (what every save cost before the SQLite index);
- `switch`: loading the next image's annotation and pixels (what the window does per image);
- `open`: opening the project again (rescan of N files, index read).

Images are hard links of one small PNG so that 20,000 of them take seconds to make.
Usage: python benchmarks/bench_project_scale.py [--sizes 10,2000,20000] [--repeat 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from deeplab_studio.storage.atomic import atomic_write_text
from deeplab_studio.storage.labelmaps import write_label_png, write_mask_png
from deeplab_studio.storage.project import Project

H, W = 48, 64


def make_folder(root: Path, n: int) -> Path:
    folder = root / f"n{n}"
    folder.mkdir()
    first = folder / "img_00000.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(first)
    for i in range(1, n):
        os.link(first, folder / f"img_{i:05d}.png")
    return folder


def median_ms(fn, repeat: int) -> float:
    times = []
    for k in range(repeat):
        t = time.perf_counter()
        fn(k)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def bench(root: Path, n: int, repeat: int) -> dict[str, float]:
    folder = make_folder(root, n)
    t = time.perf_counter()
    proj = Project.open(folder)
    first_open = (time.perf_counter() - t) * 1000
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, (H, W), dtype=np.uint8)
    mask = labels > 2
    recs = proj.records
    pal = proj.labels.palette()
    out: dict[str, float] = {"first open": first_open}
    out["save"] = median_ms(lambda k: proj.save_annotation(recs[k % n], labels, mask), repeat)
    plain = root / f"plain{n}"
    out["files only"] = median_ms(lambda k: (write_label_png(plain / f"l{k % n}.png", labels, pal),
                                             write_mask_png(plain / f"m{k % n}.png", mask)), repeat)
    rows = [{"path": r.path, "width": W, "height": H, "status": "auto", "created": r.created,
             "modified": r.modified, "key": r.key, "file_size": r.file_size, "file_mtime_ns": r.file_mtime_ns}
            for r in recs]

    def json_save(k: int) -> None:
        write_label_png(plain / f"l{k % n}.png", labels, pal)
        write_mask_png(plain / f"m{k % n}.png", mask)
        body = ",\n  ".join(json.dumps(r) for r in rows)
        atomic_write_text(plain / "project.json", f'{{"format_version": 1, "images": [\n  {body}\n]}}\n')

    out["json index"] = median_ms(json_save, max(3, repeat // 3) if n > 5000 else repeat)
    out["switch"] = median_ms(lambda k: (proj.load_annotation(recs[k % n]), proj.read_image(recs[k % n])), repeat)
    proj.close()

    def reopen(_k: int) -> None:
        Project.open(folder).close()

    out["open"] = median_ms(reopen, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,2000,20000")
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        results = {n: bench(Path(tmp), n, args.repeat) for n in sizes}
    base = results[sizes[0]]
    print(f"{'images':>8} {'save ms':>8} {'files only':>10} {'json index':>10} {'switch ms':>9} {'open ms':>8}"
          f"  save/save@{sizes[0]}  switch/switch@{sizes[0]}  json/save")
    for n, r in results.items():
        print(f"{n:>8} {r['save']:>8.2f} {r['files only']:>10.2f} {r['json index']:>10.2f} {r['switch']:>9.2f} "
              f"{r['open']:>8.0f}  {r['save'] / base['save']:>13.2f}  {r['switch'] / base['switch']:>17.2f}"
              f"  {r['json index'] / r['save']:>9.1f}")


if __name__ == "__main__":
    main()
