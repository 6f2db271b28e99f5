"""Work around a reference-count bug of some PySide6 builds on Python < 3.12.

Those builds return `None`/`True`/`False` from wrapped C++ calls without taking a reference
(correct only on 3.12+, where these objects are immortal). Every `widget.update()` or signal
`emit()` then steals one reference, and after a few thousand calls CPython aborts with
"Fatal Python error: none_dealloc" (or bool_dealloc). We detect the leak at import with a probe
and, only when present, give the three singletons a huge reference count, which is what
Python 3.12 does for them anyway. Nothing happens on a correct build.
"""

from __future__ import annotations

import ctypes
import sys

_HEADROOM = 1 << 40
applied = False


def _leaks_none() -> bool:
    from PySide6.QtCore import QObject, QTimer

    timer, obj = QTimer(), QObject()
    before_none, before_bool = sys.getrefcount(None), sys.getrefcount(False)
    for _ in range(20):
        timer.stop()  # void
        obj.blockSignals(False)  # returns a bool
    return sys.getrefcount(None) < before_none or sys.getrefcount(False) < before_bool


def make_singletons_immortal() -> None:
    for obj in (None, True, False):
        ref = ctypes.c_ssize_t.from_address(id(obj))  # ob_refcnt is the first field of a PyObject
        ref.value += _HEADROOM


def apply() -> bool:
    """Apply the work-around if this PySide6 build needs it; True when applied."""
    global applied
    if not applied and sys.version_info < (3, 12) and not hasattr(sys, "gettotalrefcount") and _leaks_none():
        make_singletons_immortal()
        applied = True
    return applied
