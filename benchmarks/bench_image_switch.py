"""GUI cost of switching images (next image) against the number of images in the folder.

Builds folders of 10, 2,000 and 20,000 small PNG images (one encoded file, the rest hard links,
so a big folder costs no disk and little time), opens each in the real MainWindow (offscreen
Qt, the model tools attached as the app does) and times `step(+1)` plus the event processing
it triggers. Before each timed switch the neighbour prefetch is allowed to finish, so the
figure is the window's own work (list, status bar, document, canvas), not the image decode.
Prints the median (and p90) per size and the ratio against the smallest folder: a switch must
cost the same in a 20,000-image folder as in a 10-image one. With the image list shown, a list
longer than its view scrolls (and repaints its visible rows) on every switch, which a 10-image
list never does; `--hide-list` leaves that constant out.

Usage: QT_QPA_PLATFORM=offscreen python benchmarks/bench_image_switch.py [--sizes 10,2000,20000]
       [--switches 60] [--image 64x48] [--hide-list]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import wait
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PIL import Image  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def make_folder(folder: Path, n: int, w: int, h: int) -> None:
    """`n` PNG images: one real file, the others hard links to it (copies where links fail)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    first = folder / "img_000000.png"
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(first)
    data = None
    for i in range(1, n):
        path = folder / f"img_{i:06d}.png"
        try:
            os.link(first, path)
        except OSError:
            data = data if data is not None else first.read_bytes()
            path.write_bytes(data)


def settle(app: QApplication, window) -> None:
    """Let the background prefetch of the neighbours finish and the event queue drain."""
    pre = window.session.prefetcher
    if pre is not None:
        wait(list(getattr(pre, "_cache", {}).values()), timeout=5)
    app.processEvents()


def bench(app: QApplication, tmp: Path, n: int, switches: int, w: int, h: int,
          hide_list: bool = False) -> tuple[float, float, float]:
    """(open seconds, median switch ms, p90 switch ms) for an `n`-image folder."""
    from deeplab_studio.gui.window.main_window import MainWindow
    from deeplab_studio.gui.model_tools import attach_model_tools

    folder = tmp / f"images_{n}"
    make_folder(folder, n, w, h)
    window = MainWindow(QSettings(str(tmp / f"settings_{n}.ini"), QSettings.Format.IniFormat))
    attach_model_tools(window)  # as the app does: its image-changed handler runs on every switch
    window.resize(1200, 800)
    window.docks["images"].setVisible(not hide_list)
    window.show()
    app.processEvents()
    t = time.perf_counter()
    if not window.open_folder(folder):
        raise SystemExit(f"cannot open {folder}")
    app.processEvents()
    opened = time.perf_counter() - t
    # start in the middle of the list: a switch near the end of a long list must be as cheap
    window.open_image(n // 2 - min(n // 2, switches // 2))
    times = []
    for _ in range(switches + 5):
        settle(app, window)
        t = time.perf_counter()
        moved = window.step(+1)
        app.processEvents()
        times.append(time.perf_counter() - t)
        if not moved:
            window.open_image(0)
    window.close()
    app.processEvents()
    ms = np.array(times[5:]) * 1000  # the first few warm caches up
    return opened, float(np.median(ms)), float(np.percentile(ms, 90))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,2000,20000", help="comma-separated folder sizes (first = baseline)")
    ap.add_argument("--switches", type=int, default=60, help="timed switches per folder")
    ap.add_argument("--image", default="64x48", help="image size WxH")
    ap.add_argument("--hide-list", action="store_true", help="hide the image list dock (no list scrolling)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    w, h = (int(v) for v in args.image.lower().split("x"))
    app = QApplication.instance() or QApplication(sys.argv[:1])
    print(f"next-image switch through the real window, {w}×{h} PNG images, "
          f"{args.switches} switches per folder (median / p90 of the GUI work, prefetch settled)"
          + (", image list hidden" if args.hide_list else ""))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_switch_") as tmp:
        for n in sizes:
            opened, med, p90 = bench(app, Path(tmp), n, args.switches, w, h, args.hide_list)
            rows.append((n, opened, med, p90))
            print(f"  {n:>6} images: open {opened:6.2f} s, switch median {med:7.2f} ms, p90 {p90:7.2f} ms",
                  flush=True)
    base = rows[0][2]
    print("ratio of the median switch to the", f"{rows[0][0]}-image folder:")
    for n, _, med, _ in rows:
        print(f"  {n:>6} images: ×{med / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
