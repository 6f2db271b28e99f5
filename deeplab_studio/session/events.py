"""A tiny Qt-free event mechanism for the document model (napari style: model emits, views listen)."""

from __future__ import annotations

from typing import Any, Callable


class Event:
    """A list of callbacks called in connection order by `emit(*args)`."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[..., Any]] = []

    def connect(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        if callback not in self._callbacks:
            self._callbacks.append(callback)
        return callback

    def disconnect(self, callback: Callable[..., Any] | None = None) -> None:
        """Remove `callback`, or every callback when None."""
        if callback is None:
            self._callbacks.clear()
        elif callback in self._callbacks:
            self._callbacks.remove(callback)

    def emit(self, *args: Any) -> None:
        for cb in list(self._callbacks):
            cb(*args)

    def __len__(self) -> int:
        return len(self._callbacks)
