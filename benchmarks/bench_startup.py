"""Start-up: seconds from process start to the main window shown, and proof torch is not imported.

Runs `deeplab_studio.gui` in fresh interpreters (offscreen Qt) and, as the plain baseline in the
same run, a bare PySide6 QMainWindow. Also times `import torch` alone to show what lazy
loading saves.

Usage: python benchmarks/bench_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

APP = r"""
import sys, time, json
t0 = float(sys.argv[1])
from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication
app = QApplication([])
from deeplab_studio.gui.window.main_window import MainWindow
w = MainWindow(QSettings(sys.argv[2], QSettings.Format.IniFormat))
w.show()
app.processEvents()
shown = time.time()
print(json.dumps({"shown": shown - t0, "torch": "torch" in sys.modules, "torchvision": "torchvision" in sys.modules,
                  "visible": w.isVisible()}))
"""

BARE = r"""
import sys, time, json
t0 = float(sys.argv[1])
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication([])
w = QMainWindow(); w.resize(1400, 900); w.show(); app.processEvents()
print(json.dumps({"shown": time.time() - t0}))
"""

TORCH = r"""
import sys, time, json
t0 = float(sys.argv[1])
import torch
print(json.dumps({"shown": time.time() - t0}))
"""


def run(code: str, *args: str) -> dict:
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"))
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code, repr(t0), *args], capture_output=True, text=True, env=env,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        ini = os.path.join(d, "s.ini")
        run(APP, ini)  # warm the file cache
        app = [run(APP, ini) for _ in range(args.runs)]
        bare = [run(BARE)["shown"] for _ in range(args.runs)]
        torch_t = [run(TORCH)["shown"] for _ in range(max(1, args.runs // 2))]
    app_t = [r["shown"] for r in app]
    print(f"process start -> DeepLab Studio window shown: median {statistics.median(app_t):.2f} s "
          f"(min {min(app_t):.2f}, max {max(app_t):.2f}, {args.runs} runs)")
    print(f"process start -> bare PySide6 QMainWindow   : median {statistics.median(bare):.2f} s")
    print(f"ratio app / bare Qt window: {statistics.median(app_t) / statistics.median(bare):.2f}×")
    print(f"`import torch` alone (not done at start-up): median {statistics.median(torch_t):.2f} s")
    print(f"torch imported when the window is shown: {any(r['torch'] for r in app)}; "
          f"torchvision: {any(r['torchvision'] for r in app)}; window visible: {all(r['visible'] for r in app)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
