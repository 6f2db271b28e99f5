"""Remembered settings (`QSettings`): window geometry and docks, recent folders, last image and
last model (checkpoint path and device) per folder. Brush size, opacity and tool are stored by
the window as they change. Tests pass their own `QSettings` (an INI file in a temporary
folder), never the user's."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt

ORG, APP = "DeepLabStudio", "DeepLab Studio"
MAX_RECENT = 10


def default_settings() -> QSettings:
    return QSettings(ORG, APP)


def _list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value]


def recent_folders(settings: QSettings) -> list[str]:
    return _list(settings.value("recent_folders"))


def add_recent(settings: QSettings, folder: str) -> None:
    folder = str(Path(folder))
    items = [folder] + [f for f in recent_folders(settings) if f != folder]
    settings.setValue("recent_folders", items[:MAX_RECENT])
    settings.setValue("last_folder", folder)


def last_folder(settings: QSettings) -> str | None:
    folder = settings.value("last_folder")
    return str(folder) if folder and Path(str(folder)).is_dir() else None


def _folder_key(folder: str, group: str = "last_image") -> str:
    return f"{group}/" + str(Path(folder)).replace("/", "|").replace("\\", "|")


def last_image(settings: QSettings, folder: str) -> str | None:
    v = settings.value(_folder_key(folder))
    return str(v) if v else None


def set_last_image(settings: QSettings, folder: str, path: str) -> None:
    settings.setValue(_folder_key(folder), path)


def last_model(settings: QSettings, folder: str) -> tuple[str, str] | None:
    """(checkpoint path, device asked for) of the model last used with the project `folder`."""
    v = _list(settings.value(_folder_key(folder, "last_model")))
    return (v[0], v[1] if len(v) > 1 else "auto") if v else None


def set_last_model(settings: QSettings, folder: str, path: str, device: str = "auto") -> None:
    settings.setValue(_folder_key(folder, "last_model"), [str(path), str(device)])


def forget_last_model(settings: QSettings, folder: str) -> None:
    settings.remove(_folder_key(folder, "last_model"))


def first_size(window, preferred: tuple[int, int] = (1400, 900)) -> tuple[int, int]:
    """The first start's window size: `preferred`, shrunk to 95 % of the screen's free area so
    the docks and the status bar are never cut off on a small screen."""
    screen = window.screen()
    if screen is None:
        return preferred
    free = screen.availableGeometry()
    return (min(preferred[0], int(free.width() * 0.95)), min(preferred[1], int(free.height() * 0.95)))


def restore_window(window, settings: QSettings, docks: list, set_overlay_visible) -> None:
    """Geometry, dock layout and overlay visibility of the last session (slim docks at first)."""
    geometry = settings.value("geometry")
    if geometry is not None:
        window.restoreGeometry(geometry)
    else:
        window.resize(*first_size(window))
    state = settings.value("window_state")
    if state is not None:
        window.restoreState(state)
    else:  # first start: slim docks, the canvas gets the room
        window.resizeDocks(docks, [190, 230], Qt.Orientation.Horizontal)
    set_overlay_visible(str(settings.value("overlay_visible", "true")).lower() != "false")


def save_window(window, settings: QSettings, overlay_visible: bool) -> None:
    settings.setValue("geometry", window.saveGeometry())
    settings.setValue("window_state", window.saveState())
    settings.setValue("overlay_visible", overlay_visible)
    settings.sync()
