"""`run_app`: start Qt, show the main window, open a folder (or the last one, or the demo).

Before Qt starts, a Linux start on the xcb platform checks the system libraries Qt's xcb plugin
needs but pip does not install; a missing one gives a clear hint (which Debian/Ubuntu packages to
install) instead of Qt's abort. Nothing here imports torch.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import signal
import sys
from pathlib import Path

#: shared library the xcb platform plugin loads -> Debian/Ubuntu package that provides it
XCB_LIBRARIES: tuple[tuple[str, str], ...] = (
    ("libxcb.so.1", "libxcb1"),
    ("libX11-xcb.so.1", "libx11-xcb1"),
    ("libxcb-cursor.so.0", "libxcb-cursor0"),
    ("libxcb-icccm.so.4", "libxcb-icccm4"),
    ("libxcb-keysyms.so.1", "libxcb-keysyms1"),
    ("libxcb-image.so.0", "libxcb-image0"),
    ("libxcb-util.so.1", "libxcb-util1"),
    ("libxcb-render.so.0", "libxcb-render0"),
    ("libxcb-render-util.so.0", "libxcb-render-util0"),
    ("libxcb-randr.so.0", "libxcb-randr0"),
    ("libxcb-shape.so.0", "libxcb-shape0"),
    ("libxcb-shm.so.0", "libxcb-shm0"),
    ("libxcb-sync.so.1", "libxcb-sync1"),
    ("libxcb-xfixes.so.0", "libxcb-xfixes0"),
    ("libxcb-xkb.so.1", "libxcb-xkb1"),
    ("libxkbcommon.so.0", "libxkbcommon0"),
    ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
    ("libfontconfig.so.1", "libfontconfig1"),
    ("libdbus-1.so.3", "libdbus-1-3"),
    ("libGL.so.1", "libgl1"),
    ("libEGL.so.1", "libegl1"),
    ("libglib-2.0.so.0", "libglib2.0-0"),
)


def _uses_xcb(env: dict) -> bool:
    platform = env.get("QT_QPA_PLATFORM", "").split(":")[0].split(";")[0].strip()
    if platform:
        return platform == "xcb"
    # Qt prefers Wayland in a Wayland session; otherwise it uses xcb
    return not (env.get("WAYLAND_DISPLAY") and env.get("XDG_SESSION_TYPE", "") == "wayland")


def missing_xcb_libraries(loader=ctypes.CDLL) -> list[tuple[str, str]]:
    """(library, package) pairs of the xcb plugin's system libraries that cannot be loaded."""
    missing = []
    for lib, package in XCB_LIBRARIES:
        try:
            loader(lib)
        except OSError:
            missing.append((lib, package))
    return missing


def platform_problem(env: dict | None = None, loader=ctypes.CDLL) -> str | None:
    """A clear message when Qt's platform plugin cannot start here, else None."""
    env = dict(os.environ if env is None else env)
    if not sys.platform.startswith("linux") or not _uses_xcb(env):
        return None
    missing = missing_xcb_libraries(loader)
    if missing:
        libs = ", ".join(lib for lib, _ in missing)
        pkgs = " ".join(pkg for _, pkg in missing)
        return (f"deeplab-studio: Qt's xcb (X11) platform plugin needs system libraries that are missing: "
                f"{libs}.\nInstall them, e.g. on Debian/Ubuntu:\n  sudo apt-get install {pkgs}\n"
                "(or run headless with QT_QPA_PLATFORM=offscreen)")
    if not env.get("DISPLAY"):
        return ("deeplab-studio: no X display (DISPLAY is not set). Start it from a desktop session, "
                "under Xvfb (`xvfb-run deeplab-studio`), or headless with QT_QPA_PLATFORM=offscreen.")
    return None


def app_icon():
    """The application icon from package data (`deeplab_studio.resources`); an empty QIcon if absent."""
    from importlib import resources

    from PySide6.QtGui import QIcon, QImage, QPixmap

    try:
        entry = resources.files("deeplab_studio.resources").joinpath("icons", "deeplab-studio.svg")
        svg = entry.read_bytes()
    except (ModuleNotFoundError, OSError):
        return QIcon()
    if isinstance(entry, Path):  # an installed file: Qt's SVG icon engine draws it sharp at every size
        return QIcon(str(entry))
    return QIcon(QPixmap.fromImage(QImage.fromData(svg, "SVG")))


def _open_demo(window, kind: str = "auto") -> None:
    if importlib.util.find_spec("deeplab_studio.gui.demo") is None:
        window.show_message("The demo project is not part of this build.", "info")
        return
    from deeplab_studio.gui import demo

    try:
        demo.open_demo(window, kind=kind)
    except Exception as exc:  # noqa: BLE001 - the demo must never take the app down
        window.show_message(f"Cannot open the demo project: {exc}")


def run_app(folder: str | None = None, demo: bool | str = False) -> int:
    """Show the annotation window (opening `folder`, the last folder, or the demo — `demo` is True
    or a kind: "auto", "photos", "scenes"); returns the exit code."""
    problem = platform_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from deeplab_studio.gui import qt_compat
    from deeplab_studio.gui.window import settings as prefs
    from deeplab_studio.gui.window.main_window import MainWindow
    from deeplab_studio.gui.model_tools import attach_model_tools

    qt_compat.apply()

    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "deeplab-studio"])
    app.setOrganizationName(prefs.ORG)
    app.setApplicationName(prefs.APP)
    app.setApplicationDisplayName("DeepLab Studio")
    app.setStyle("Fusion")
    app.setWindowIcon(app_icon())
    window = MainWindow()
    attach_model_tools(window)  # Model menu, inference worker, training; torch stays unimported until used
    window.show()
    if demo:
        kind = demo if isinstance(demo, str) else "auto"
        QTimer.singleShot(0, lambda: _open_demo(window, kind))
    else:
        target = folder or prefs.last_folder(window.settings)
        if target:
            QTimer.singleShot(0, lambda: window.open_folder(target))
    _close_on_interrupt(window)
    return app.exec()


def _close_on_interrupt(window) -> None:
    """Ctrl+C in the terminal closes the window the normal way (saving first) instead of being
    ignored while Qt's event loop holds the interpreter."""
    from PySide6.QtCore import QTimer

    signal.signal(signal.SIGINT, lambda *_: window.close())
    ticker = QTimer(window)  # wakes the interpreter so that Python's signal handler can run
    ticker.timeout.connect(lambda: None)
    ticker.start(250)
