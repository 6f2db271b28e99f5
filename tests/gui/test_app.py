"""run_app's platform check: a missing xcb library or display gives a clear hint."""

from __future__ import annotations

import sys

import pytest

from deeplab_studio.gui.app import XCB_LIBRARIES, platform_problem

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="xcb is Linux only")


def _loader_missing(*names):
    def load(lib):
        if lib in names:
            raise OSError(f"{lib}: cannot open shared object file")
    return load


def test_missing_xcb_library_names_the_debian_package():
    msg = platform_problem({"DISPLAY": ":0"}, loader=_loader_missing("libxcb-cursor.so.0", "libxcb-icccm.so.4"))
    assert "libxcb-cursor.so.0" in msg and "apt-get install libxcb-cursor0 libxcb-icccm4" in msg


def test_no_display_is_explained():
    assert "DISPLAY" in platform_problem({}, loader=_loader_missing())


def test_offscreen_and_complete_xcb_are_fine():
    assert platform_problem({"QT_QPA_PLATFORM": "offscreen"}, loader=_loader_missing("libxcb.so.1")) is None
    assert platform_problem({"DISPLAY": ":0"}, loader=_loader_missing()) is None
    assert len({pkg for _, pkg in XCB_LIBRARIES}) == len(XCB_LIBRARIES)


def test_qt_singleton_refcount_workaround_keeps_long_sessions_alive(qtbot):
    from PySide6.QtWidgets import QWidget

    from deeplab_studio.gui import qt_compat

    qt_compat.apply()
    assert qt_compat.applied == qt_compat._leaks_none()  # a guarded safety net: only on a leaking build
    w = QWidget()
    qtbot.addWidget(w)
    for _ in range(20000):  # far more void calls than None has references on an affected build
        w.update()
    assert sys.getrefcount(None) > 1000


def test_ctrl_c_in_the_terminal_closes_the_window(tmp_path):
    """SIGINT while Qt's event loop runs closes the window (saving first) and ends the process."""
    import subprocess
    import sys

    code = (
        "import os, signal\n"
        "from PySide6.QtCore import QTimer\n"
        "from deeplab_studio.gui import app\n"
        "install = app._close_on_interrupt\n"
        "def install_then_interrupt(window):\n"
        "    install(window)\n"
        "    QTimer.singleShot(200, lambda: os.kill(os.getpid(), signal.SIGINT))\n"
        "app._close_on_interrupt = install_then_interrupt\n"
        "raise SystemExit(app.run_app())\n"
    )
    env = {"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "XDG_DATA_HOME": str(tmp_path / "data")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
