"""Brush and image-switch cost through the real annotation window (offscreen Qt).

1. A scripted 500-stamp stroke with a 40 px brush on an 8000×6000 image: every mouse-move
   event is sent to the canvas viewport and the resulting repaint is processed; the cost per
   event (median, p99) includes the label write, the edit mask, the undo recorder and the
   overlay repaint. Baseline in the same process: the naive way, rebuilding and repainting the
   whole overlay after every event.
2. Switching images in a 500-image folder of 12 MP images (20 distinct, the rest hard links):
   time to open the folder, time per switch and resident memory over many switches (must stay flat: no image or label-map cache growing without bound).

Usage: QT_QPA_PLATFORM=offscreen python benchmarks/bench_brush_gui.py [--images N] [--size WxH]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# paint as soon as the event loop is idle instead of on a 5 ms frame timer, so each event's
# repaint can be waited for and timed
os.environ.setdefault("QT_QPA_UPDATE_IDLE_TIME", "0")

from PIL import Image  # noqa: E402
from PySide6.QtCore import QEvent, QObject, QPointF, QSettings, Qt  # noqa: E402
from PySide6.QtGui import QMouseEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


class PaintCounter(QObject):
    """Counts paint events of the canvas viewport (proves each move event was repainted)."""

    n = 0

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.Paint:
            self.n += 1
        return False


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_image(path: Path, w: int, h: int, seed: int) -> None:
    """A smooth synthetic photo-like image (fast to encode) with some texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h:8, 0:w:8].astype(np.float32)
    small = np.stack([(np.sin(xx / (300 + 50 * c) + seed) * 0.5 + 0.5) * 200 + rng.random(xx.shape) * 40
                      for c in range(3)], axis=-1).astype(np.uint8)
    Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR).save(path, quality=90)


def stroke_points(w: int, h: int, n: int, step: float = 9.0, box: float = 900.0) -> list[tuple[float, float]]:
    """n points `step` image pixels apart of a wavy back-and-forth stroke inside a `box`-wide
    square around the image centre (so it stays in view at 1:1 zoom too)."""
    pts, x, direction = [], w / 2 - box / 2, 1.0
    for i in range(n):
        x += direction * step
        if not w / 2 - box / 2 <= x <= w / 2 + box / 2:
            direction = -direction
        row = (i * step) // box  # move down a little on each pass
        pts.append((x, h / 2 - box / 3 + row * 60 + math.sin(i / 9.0) * 25))
    return pts


def send_move(view, scene_pt) -> None:
    pos = QPointF(view.mapFromScene(QPointF(*scene_pt)))
    ev = QMouseEvent(QEvent.Type.MouseMove, pos, view.viewport().mapToGlobal(pos), Qt.MouseButton.NoButton,
                     Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(view.viewport(), ev)


def send_button(view, scene_pt, kind) -> None:
    pos = QPointF(view.mapFromScene(QPointF(*scene_pt)))
    buttons = Qt.MouseButton.LeftButton if kind == QEvent.Type.MouseButtonPress else Qt.MouseButton.NoButton
    ev = QMouseEvent(kind, pos, view.viewport().mapToGlobal(pos), Qt.MouseButton.LeftButton, buttons,
                     Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(view.viewport(), ev)


def timed_stroke(app, window, pts, paints) -> np.ndarray:
    canvas = window.canvas
    send_button(canvas, pts[0], QEvent.Type.MouseButtonPress)
    app.processEvents()
    times = []
    for p in pts[1:]:
        before = paints.n
        t = time.perf_counter()
        send_move(canvas, p)
        spins = 0
        while paints.n == before and spins < 50:  # until this event's repaint happened (or none is due)
            app.processEvents()
            spins += 1
        times.append(time.perf_counter() - t)
    send_button(canvas, pts[-1], QEvent.Type.MouseButtonRelease)
    app.processEvents()
    return np.array(times) * 1000.0


def fmt(ms: np.ndarray) -> str:
    return f"median {np.median(ms):7.2f} ms   p99 {np.percentile(ms, 99):7.2f} ms   max {ms.max():7.2f} ms"


def bench_brush(app, tmp: Path, w: int, h: int, stamps: int, naive_stamps: int) -> None:
    from deeplab_studio.gui.window.main_window import MainWindow

    folder = tmp / "big"
    folder.mkdir()
    make_image(folder / "big.jpg", w, h, 0)
    window = MainWindow(QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat))
    window.resize(1400, 900)
    window.show()
    app.processEvents()
    t = time.perf_counter()
    window.open_folder(folder)
    app.processEvents()
    print(f"opened {w}×{h} image in {time.perf_counter() - t:.2f} s")
    window.set_brush_size(40)
    window.set_active_class(15)
    paints = PaintCounter()
    window.canvas.viewport().installEventFilter(paints)
    pts = stroke_points(w, h, stamps + 1)
    for label, setup in (("fit to window", window.canvas.fit), ("1:1 zoom", window.canvas.actual_size)):
        setup()
        window.canvas.centerOn(QPointF(*pts[len(pts) // 2]))
        app.processEvents()
        paints.n = 0
        ours = timed_stroke(app, window, pts, paints)
        repainted = paints.n
        # naive: rebuild the whole overlay image and repaint it after every event
        canvas = window.canvas
        doc = window.document
        doc.changed.disconnect(canvas._on_changed)
        naive_handler = doc.changed.connect(lambda bbox: canvas.overlay.set_labels(doc.labels))
        window.set_active_class(7)  # a real change again, not a repaint of identical pixels
        naive = timed_stroke(app, window, stroke_points(w, h, naive_stamps + 1)[::-1], paints)
        doc.changed.disconnect(naive_handler)
        doc.changed.connect(canvas._on_changed)
        window.set_active_class(15)
        print(f"\nbrush 40 px, {label} (zoom {canvas.zoom():.3f}), {len(ours)} move events, each with its repaint:")
        print(f"  bbox overlay update : {fmt(ours)}   ({repainted} viewport repaints)")
        print(f"  naive full overlay  : {fmt(naive)}   ({len(naive)} events)")
        print(f"  naive / ours (median): {np.median(naive) / np.median(ours):.1f}×")
    stack = window.undo.active
    print(f"\nundo: {stack.count()} steps, patch memory {window.undo.memory() / 1e6:.1f} MB "
          f"(labels + edit mask; whole-image snapshots would take {stack.count() * w * h * 4 / 1e6:.0f} MB)")
    window.canvas.viewport().removeEventFilter(paints)
    window.autosave.flush()
    window.close()


def idle(app, seconds: float) -> None:
    """Let the event loop idle (the user looks at the image; background prefetch runs)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.005)


def bench_switch(app, tmp: Path, n: int, w: int, h: int, switches: int, dwell: float, distinct: int) -> None:
    from deeplab_studio.gui.window.main_window import MainWindow

    folder = tmp / "many"
    folder.mkdir()
    t = time.perf_counter()
    distinct = max(1, min(distinct, n))
    for i in range(n):
        path = folder / f"img_{i:03d}.jpg"
        if i < distinct:
            make_image(path, w, h, i)
        else:  # the same bytes under another name: a big folder without gigabytes of disk
            os.link(folder / f"img_{i % distinct:03d}.jpg", path)
    print(f"\ngenerated {n} JPEG images of {w}×{h} ({w * h / 1e6:.0f} MP; {distinct} distinct, "
          f"the rest hard links) in {time.perf_counter() - t:.1f} s")
    window = MainWindow(QSettings(str(tmp / "s2.ini"), QSettings.Format.IniFormat))
    window.resize(1400, 900)
    window.show()
    app.processEvents()
    t = time.perf_counter()
    window.open_folder(folder)
    app.processEvents()
    print(f"open the {n}-image folder and show the first image: {(time.perf_counter() - t) * 1000:.0f} ms")
    rapid = []
    for _ in range(10):  # back to back, no time for the prefetch
        t = time.perf_counter()
        window.step(+1)
        app.processEvents()
        rapid.append(time.perf_counter() - t)
    view_t, edit_t, rss = [], [], []
    for k in range(switches):
        idle(app, dwell)
        edit = k % 2 == 1
        if edit:  # paint a short stroke so the switch must save the label map first
            tool = window.toolbox.tools["brush"]
            tool.press((100.0 + k, 100.0), _mods())
            tool.move((400.0 + k, 300.0), _mods())
            tool.release((400.0 + k, 300.0), _mods())
        t = time.perf_counter()
        window.step(+1) if window.index + 1 < n else window.open_image(0)
        app.processEvents()
        (edit_t if edit else view_t).append(time.perf_counter() - t)
        rss.append(rss_mb())
    undo_mb = window.undo.memory() / 1e6
    window.close()
    view_ms, edit_ms = np.array(view_t) * 1000, np.array(edit_t) * 1000
    rapid_ms = np.array(rapid) * 1000
    print(f"image switch, back to back ({len(rapid_ms)}×): median {np.median(rapid_ms):.0f} ms, max {rapid_ms.max():.0f} ms")
    print(f"after looking {dwell:.1f} s at each image (neighbours prefetched meanwhile):")
    print(f"image switch, view only   ({len(view_ms)}×): median {np.median(view_ms):.0f} ms, max {view_ms.max():.0f} ms")
    print(f"image switch, after edit  ({len(edit_ms)}×): median {np.median(edit_ms):.0f} ms, max {edit_ms.max():.0f} ms "
          "(includes the atomic save of label map + edit mask)")
    q = max(1, switches // 4)
    print(f"RSS after switch 1 / {q} / {2 * q} / {switches}: "
          f"{rss[0]:.0f} / {rss[q - 1]:.0f} / {rss[2 * q - 1]:.0f} / {rss[-1]:.0f} MB "
          f"(growth over the last {switches - q} switches: {rss[-1] - rss[q - 1]:+.0f} MB, of which undo history "
          f"of the {len(edit_t)} edited images, kept by design up to a 1 GiB budget: {undo_mb:.0f} MB)")


def _mods():
    from deeplab_studio.session.tools import Mods

    return Mods()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="8000x6000", help="brush benchmark image size WxH")
    ap.add_argument("--stamps", type=int, default=500, help="0 skips the brush benchmark")
    ap.add_argument("--naive-stamps", type=int, default=40)
    ap.add_argument("--images", type=int, default=500, help="images in the switching folder")
    ap.add_argument("--distinct", type=int, default=20,
                    help="distinct images in the switching folder (the others are hard links to them)")
    ap.add_argument("--switch-size", default="4000x3000", help="size of the switching images WxH")
    ap.add_argument("--switches", type=int, default=60)
    ap.add_argument("--dwell", type=float, default=0.5, help="seconds spent on each image before switching")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    sw, sh = (int(v) for v in args.switch_size.lower().split("x"))
    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as d:
        if args.stamps > 0:
            bench_brush(app, Path(d), w, h, args.stamps, args.naive_stamps)
        if args.switches > 0:
            bench_switch(app, Path(d), args.images, sw, sh, args.switches, args.dwell, args.distinct)
    print(f"\ntorch imported: {'torch' in sys.modules}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
