"""Model in the loop, measured through the real window on the CPU (deeplabv3plus_mobilenet).

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_model_loop.py [--images 50] [--size 320x240]

1. Ctrl+R → overlay: a 1024×768 image, from the key press to the proposal drawn on the canvas,
   next to a plain `Predictor.predict` call on the same image (CRF off, then on).
2. Event-loop stalls during a batch of N images: a 5 ms QTimer probe records the longest gap
   between its ticks while "Auto-segment all" runs (target: under 50 ms); then again while a
   simulated user paints brush strokes (a mouse event every 30 ms) and switches image every
   second, with the slowest of those user actions.
3. Batch throughput: images/s of the batch through the worker thread (reading, predicting,
   merging into the saved label maps) against a plain loop `read_image` + `Predictor.predict`.
Weights are random for the standard 21-class model (speed, not quality: its noisy proposals are a
worst case for the CRF); the trained demo model is measured too when present.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QEventLoop, QSettings, Qt, QTimer  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def wait_for(signal, timeout_s: float = 600.0):
    """Run the event loop until `signal` fires; returns its arguments."""
    loop, got = QEventLoop(), []
    signal.connect(lambda *a: (got.append(a), loop.quit()))
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    if not got:
        raise TimeoutError(f"no signal within {timeout_s} s")
    return got[0]


class StallProbe:
    """A 5 ms timer; the longest time between two ticks minus the interval is the worst stall."""

    def __init__(self, interval_ms: int = 5) -> None:
        self.interval = interval_ms / 1000
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.gaps: list[float] = []
        self._last = None

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append(now - self._last - self.interval)
        self._last = now

    def start(self) -> None:
        self._last = None
        self.gaps.clear()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()


def make_images(folder: Path, n: int, size: tuple[int, int]) -> None:
    from PIL import Image

    from deeplab_studio.core.scenes import generate_scene

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(generate_scene(size[1], size[0], seed=(99, i))[0]).save(folder / f"img_{i:03d}.png")


def make_checkpoint(path: Path) -> Path:
    import torch

    from deeplab_studio.ml.checkpoints import save_checkpoint
    from deeplab_studio.ml.zoo import build_model

    torch.manual_seed(0)
    save_checkpoint(path, build_model("deeplabv3plus_mobilenet", num_classes=21).eval(),
                    arch="deeplabv3plus_mobilenet", num_classes=21)
    return path


def open_window(folder: Path, tmp: Path, ckpt: Path, *, crf: bool):
    from deeplab_studio.gui.window.main_window import MainWindow
    from deeplab_studio.gui.model_tools import attach_model_tools

    w = MainWindow(QSettings(str(tmp / f"settings_{time.monotonic_ns()}.ini"), QSettings.Format.IniFormat))
    w.resize(1200, 900)
    w.show()
    w.open_folder(folder)
    c = attach_model_tools(w)
    c.act_crf.setChecked(crf)
    c.load_model(str(ckpt), "cpu")
    wait_for(c.client.modelLoaded)
    return w, c


def bench_ctrl_r(tmp: Path, ckpt: Path, repeats: int) -> None:
    """Ctrl+R → overlay, each run interleaved with a plain predict (the machine's load drifts)."""
    from deeplab_studio.ml.checkpoints import load_checkpoint
    from deeplab_studio.ml.predictor import Predictor
    from deeplab_studio.storage.images import read_image

    folder = tmp / "big"
    if not folder.is_dir():
        make_images(folder, 1, (1024, 768))
    image = read_image(folder / "img_000.png")
    print(f"model: {ckpt.name}")
    predictor = Predictor(load_checkpoint(ckpt), device="cpu")
    predictor.predict(image)  # warm-up
    for crf in (False, True):
        w, c = open_window(folder, tmp, ckpt, crf=crf)
        plain, times = [], []
        for r in range(repeats + 1):
            t0 = time.perf_counter()
            QTest.keyClick(w, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
            wait_for(c.proposalApplied)
            w.canvas.viewport().repaint()  # the overlay drawn
            if r:  # the first run warms the worker's model up
                times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                predictor.predict(image)
                plain.append(time.perf_counter() - t0)
            w.undo.active.undo()
        name = "Ctrl+R -> overlay" + (" (+ CRF)" if crf else "")
        med, base = np.median(times), np.median(plain)
        print(f"1024x768, {name:<27} median {med * 1000:6.0f} ms; plain predict {base * 1000:6.0f} ms "
              f"-> {med / base:.2f}x")
        c.shutdown()
        w.close()


def bench_batch(tmp: Path, ckpt: Path, n: int, size: tuple[int, int]) -> None:
    from deeplab_studio.ml.checkpoints import load_checkpoint
    from deeplab_studio.ml.predictor import Predictor
    from deeplab_studio.storage.images import read_image

    folder = tmp / "batch"
    make_images(folder, n, size)
    paths = sorted(folder.glob("*.png"))
    predictor = Predictor(load_checkpoint(ckpt), device="cpu")
    predictor.predict(read_image(paths[0]))

    def plain_loop() -> float:
        t0 = time.perf_counter()
        for p in paths:
            predictor.predict(read_image(p))
        return time.perf_counter() - t0

    plain_before = plain_loop()

    w, c = open_window(folder, tmp, ckpt, crf=False)
    c.client.request("warm-up", image=read_image(paths[0]), priority=2)
    wait_for(c.client.busyChanged)
    probe = StallProbe()
    probe.start()  # baseline: the same probe with nothing running (this machine's own scheduling noise)
    loop = QEventLoop()
    QTimer.singleShot(5000, loop.quit)
    loop.exec()
    probe.stop()
    idle = np.array(probe.gaps) * 1000
    probe.start()
    t0 = time.perf_counter()
    c.auto_segment_all()
    _, done, failed, _ = wait_for(c.client.batchFinished)
    batch = time.perf_counter() - t0
    probe.stop()
    gaps = np.array(probe.gaps) * 1000
    plain_after = plain_loop()  # before and after the batch: the machine's load drifts
    plain = (plain_before + plain_after) / 2
    print(f"batch of {n} images {size[0]}x{size[1]} ({done} done, {failed} failed):")
    print(f"  plain loop read_image + predict: {n / plain:6.2f} images/s  (before {n / plain_before:.2f}, "
          f"after {n / plain_after:.2f})")
    print(f"  Auto-segment all (worker):       {done / batch:6.2f} images/s  ({plain / batch:.2f}x plain loop)")
    print(f"  event loop during the batch: longest stall {gaps.max():.1f} ms, 99th percentile "
          f"{np.percentile(gaps, 99):.1f} ms, median {np.median(gaps):.2f} ms over {len(gaps)} ticks "
          f"(target < 50 ms)")
    print(f"  same probe with nothing running (5 s): longest {idle.max():.1f} ms, 99th percentile "
          f"{np.percentile(idle, 99):.1f} ms (scheduling noise of this machine)")
    bench_batch_with_user(w, c, paths)
    c.shutdown()
    w.close()


class FakeUser:
    """Drives the real canvas with mouse events (30 ms apart): strokes of 10 moves, and the next
    image every `switch_every` events; records how long each action took on the GUI thread."""

    def __init__(self, window, switch_every: int = 33) -> None:
        self.w, self.switch_every, self.n = window, switch_every, 0
        self.times: dict[str, list[float]] = {"stroke event": [], "image switch": []}
        self.timer = QTimer()
        self.timer.setInterval(30)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        from PySide6.QtCore import QPoint

        vp, self.n = self.w.canvas.viewport(), self.n + 1
        t0 = time.perf_counter()
        if self.n % self.switch_every == 0:
            if not self.w.step(1):
                self.w.go_to(self.w.project.records[0])
            self.times["image switch"].append(time.perf_counter() - t0)
            return
        k = self.n % 11
        pos = QPoint(80 + 25 * k, 80 + 9 * (self.n // 11 % 20))
        if k == 0:
            QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pos)
        elif k == 10:
            QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pos)
        else:
            QTest.mouseMove(vp, pos)
        self.times["stroke event"].append(time.perf_counter() - t0)


def bench_batch_with_user(w, c, paths: list[Path]) -> None:
    """The same batch again (all images are `auto` now) while a simulated user paints and browses."""
    user, probe = FakeUser(w), StallProbe()
    w.go_to(w.project.records[0])
    probe.start()
    user.timer.start()
    t0 = time.perf_counter()
    c.auto_segment_all()
    _, done, failed, _ = wait_for(c.client.batchFinished)
    batch = time.perf_counter() - t0
    user.timer.stop()
    probe.stop()
    gaps = np.array(probe.gaps) * 1000
    slowest = ", ".join(f"{k} {max(v) * 1000:.1f} ms (median {np.median(v) * 1000:.1f}, n={len(v)})"
                        for k, v in user.times.items() if v)
    print(f"  same batch while the user paints and switches images: {done / batch:.2f} images/s, "
          f"longest stall {gaps.max():.1f} ms, 99th percentile {np.percentile(gaps, 99):.1f} ms")
    print(f"  slowest user actions on the GUI thread: {slowest}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=50)
    p.add_argument("--size", default="320x240")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads of the plain baseline (0: as the worker)")
    args = p.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    from deeplab_studio.gui import qt_compat

    qt_compat.apply()
    app = QApplication.instance() or QApplication([])  # noqa: F841 - keeps Qt alive
    import torch

    from deeplab_studio.gui.workers.inference_worker import cpu_threads

    torch.set_num_threads(args.threads or cpu_threads())  # the plain baseline runs like the worker
    print(f"torch {torch.__version__}, CPU, {os.cpu_count()} cores; worker and plain loop use "
          f"{torch.get_num_threads()} torch thread(s)")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ckpt = make_checkpoint(tmp / "bench.safetensors")
        bench_ctrl_r(tmp, ckpt, args.repeats)
        from deeplab_studio.gui.demo import DEMO_MODEL

        if DEMO_MODEL.is_file():  # trained weights: proposals with few, real boundaries (what the CRF sees)
            bench_ctrl_r(tmp, DEMO_MODEL, args.repeats)
        bench_batch(tmp, ckpt, args.images, size)
        bench_threads(size)
    return 0


def bench_threads(size: tuple[int, int]) -> None:
    """Why the worker leaves a core to the GUI: one predict with every core vs. cores − 1."""
    import torch

    from deeplab_studio.core.scenes import generate_scene
    from deeplab_studio.gui.demo import DEMO_MODEL
    from deeplab_studio.gui.workers.inference_worker import cpu_threads
    from deeplab_studio.ml.checkpoints import load_checkpoint
    from deeplab_studio.ml.predictor import Predictor

    if not DEMO_MODEL.is_file():
        return
    predictor = Predictor(load_checkpoint(DEMO_MODEL), device="cpu")
    image = generate_scene(size[1], size[0], seed=3)[0]
    times = {}
    for n in sorted({os.cpu_count() or 1, cpu_threads()}):
        torch.set_num_threads(n)
        predictor.predict(image)
        t0 = time.perf_counter()
        for _ in range(5):
            predictor.predict(image)
        times[n] = (time.perf_counter() - t0) / 5
    print("demo model, one {}x{} predict: ".format(*size)
          + ", ".join(f"{n} thread(s) {t * 1000:.0f} ms" for n, t in times.items()))


if __name__ == "__main__":
    sys.exit(main())
