"""The window's one action registry: every menu entry, toolbar button and shortcut is a QAction
registered here — the built-in table (`shortcuts.ACTIONS`) and the actions other modules add
(the model and training tools, through `WindowLink.add_menu`). Help → Keyboard shortcuts is
generated from it, so the help and the keys never disagree."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMenu

from deeplab_studio.gui.window.shortcuts import GESTURES, MENUS, ActionSpec


def _plain(text: str) -> str:
    return text.replace("&", "").rstrip("…")


class ActionRegistry:
    def __init__(self, window: QMainWindow) -> None:
        self.window = window
        self.menus: dict[str, QMenu] = {title: window.menuBar().addMenu(f"&{title}") for title in MENUS}
        self._actions: dict[str, QAction] = {}
        self._menu_of: dict[QAction, str] = {}

    def build(self, spec: ActionSpec) -> QAction:
        """A QAction for one row of the built-in table, placed in its menu."""
        act = QAction(spec.text, self.window)
        act.setObjectName(spec.id)
        act.setShortcuts([QKeySequence(k) for k in spec.keys])
        act.setCheckable(spec.checkable)
        act.setToolTip(f"{_plain(spec.text)} ({', '.join(spec.keys)})" if spec.keys else _plain(spec.text))
        return self.add(act, spec.menu or None)

    def add(self, act: QAction, menu: str | None = None) -> QAction:
        """Register `act` (shortcuts work with its menu closed) and append it to `menu`."""
        act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.window.addAction(act)
        key = act.objectName() or f"action_{len(self._actions)}"
        self._actions[key] = act
        if menu:
            self.menu(menu).addAction(act)
            self._menu_of[act] = menu
        return act

    def menu(self, title: str) -> QMenu:
        if title not in self.menus:
            self.menus[title] = self.window.menuBar().addMenu(title)
        return self.menus[title]

    def __getitem__(self, action_id: str) -> QAction:
        return self._actions[action_id]

    def __contains__(self, action_id: str) -> bool:
        return action_id in self._actions

    def actions(self) -> list[QAction]:
        return list(self._actions.values())

    def rows(self) -> list[tuple[str, str, str]]:
        """(where, what, keys) for the help table: every action with a shortcut, then the canvas
        gestures. Class keys are listed once, as a gesture row."""
        out = []
        for key, act in self._actions.items():
            if not act.shortcuts() or key.startswith("class_"):
                continue
            keys = ", ".join(k.toString(QKeySequence.SequenceFormat.PortableText) for k in act.shortcuts())
            out.append((self._menu_of.get(act, "Window"), _plain(act.text()), keys))
        return out + [("Canvas", what, keys) for keys, what in GESTURES]
