"""QActions of the model tools, made one way: named (the window's action registry keys them by
object name), with their shortcut, and checkable ones remembered in the settings."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, QSettings
from PySide6.QtGui import QAction, QKeySequence


def setting_bool(value) -> bool:
    """A QSettings value as a bool (INI files give back strings)."""
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


def make_action(parent: QObject, name: str, text: str, slot: Callable[[], object] | None = None, *,
                shortcut: str | None = None) -> QAction:
    """A plain action; `slot()` is called without the `checked` argument QAction.triggered sends."""
    act = QAction(text, parent)
    act.setObjectName(name)
    if shortcut:
        act.setShortcut(QKeySequence(shortcut))
    if slot is not None:
        act.triggered.connect(lambda _checked=False: slot())
    return act


def make_toggle(parent: QObject, name: str, text: str, slot: Callable[[bool], object], *,
                shortcut: str | None = None, settings: QSettings | None = None, key: str = "",
                default: bool = False) -> QAction:
    """A checkable action calling `slot(on)`; with `settings` and `key` its state is remembered."""
    act = make_action(parent, name, text, shortcut=shortcut)
    act.setCheckable(True)
    if settings is not None and key:
        act.setChecked(setting_bool(settings.value(key, default)))
        act.toggled.connect(lambda on: settings.setValue(key, bool(on)))
    else:
        act.setChecked(default)
    act.toggled.connect(slot)
    return act


__all__ = ["make_action", "make_toggle", "setting_bool"]
