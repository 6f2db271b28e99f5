"""The one cancel hook of long jobs (prediction, CRF, training, dataset import/export): a callable
returning True to stop, or anything with ``is_set()`` (a ``threading.Event``); None never stops.
Standard library only, so every layer (ml, storage) checks it the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

#: what ``cancel=`` parameters accept (training also takes any object with ``is_set()``)
Cancel = Callable[[], bool] | threading.Event | None


def is_cancelled(cancel: Any) -> bool:
    """Whether ``cancel`` (None, a callable or anything with ``is_set()``) asks to stop now."""
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())
