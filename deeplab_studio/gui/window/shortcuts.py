"""The window's built-in actions and shortcuts as a table (`gui.actions.ActionRegistry` turns
them into QActions; Help → Keyboard shortcuts is generated from the registry)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ActionSpec:
    id: str
    text: str
    keys: tuple[str, ...]
    menu: str  # menu title, or "" for actions that live only on the window (class keys)
    checkable: bool = False


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("open_folder", "&Open Folder…", ("Ctrl+O",), "File"),
    ActionSpec("import_dataset", "&Import Dataset…", ("Ctrl+Shift+I",), "File"),
    ActionSpec("export_voc", "&Export Dataset…", ("Ctrl+E",), "File"),
    ActionSpec("quit", "&Quit", ("Ctrl+Q",), "File"),
    ActionSpec("undo", "&Undo", ("Ctrl+Z",), "Edit"),
    ActionSpec("redo", "&Redo", ("Ctrl+Shift+Z", "Ctrl+Y"), "Edit"),
    ActionSpec("history", "Undo &History", ("Ctrl+H",), "Edit", checkable=True),
    ActionSpec("fit", "&Fit to Window", ("Ctrl+0",), "View"),
    ActionSpec("actual_size", "&Actual Size (1:1)", ("Ctrl+1",), "View"),
    ActionSpec("zoom_in", "Zoom &In", ("Ctrl+=", "Ctrl++"), "View"),
    ActionSpec("zoom_out", "Zoom &Out", ("Ctrl+-",), "View"),
    ActionSpec("toggle_overlay", "Show &Overlay", ("T",), "View", checkable=True),
    ActionSpec("toggle_edit_outline", "Show &Edited Pixels' Outline", ("Shift+T",), "View", checkable=True),
    ActionSpec("opacity_down", "Overlay Opacity −10%", ("Ctrl+[",), "View"),
    ActionSpec("opacity_up", "Overlay Opacity +10%", ("Ctrl+]",), "View"),
    ActionSpec("tool_brush", "&Brush", ("B",), "Tools", checkable=True),
    ActionSpec("tool_eraser", "&Eraser (Shift: ignore)", ("E",), "Tools", checkable=True),
    ActionSpec("tool_fill", "&Fill", ("F",), "Tools", checkable=True),
    ActionSpec("tool_polygon", "&Polygon", ("P",), "Tools", checkable=True),
    ActionSpec("tool_picker", "Pick&er", ("I",), "Tools", checkable=True),
    ActionSpec("tool_wand", "&Wand (superpixels; Shift+wheel: scale)", ("W",), "Tools", checkable=True),
    ActionSpec("brush_smaller", "&Smaller Brush", ("[",), "Tools"),
    ActionSpec("brush_bigger", "B&igger Brush", ("]",), "Tools"),
    ActionSpec("background_only", "Paint Over Back&ground Only", ("G",), "Tools", checkable=True),
    ActionSpec("snap_strokes", "S&nap Strokes to Edges", (), "Tools", checkable=True),
    ActionSpec("prev_image", "&Previous Image", ("A", "PgUp"), "Image"),
    ActionSpec("next_image", "&Next Image", ("D", "PgDown"), "Image"),
    ActionSpec("next_unreviewed", "Next &Not Reviewed", ("Ctrl+Shift+D",), "Image"),
    ActionSpec("mark_reviewed", "Mark &Reviewed and Next", ("Ctrl+Return", "Ctrl+Enter"), "Image"),
    ActionSpec("shortcuts", "&Keyboard Shortcuts", ("F1",), "Help"),
    ActionSpec("about", "&About DeepLab Studio", (), "Help"),
) + tuple(
    ActionSpec(f"class_{k}", f"Select Class {k}" if k else "Select Background", (str(k),), "")
    for k in range(10)
)

#: pointer gestures and keys handled by the canvas itself (listed in the help too)
GESTURES: tuple[tuple[str, str], ...] = (
    ("Wheel", "Zoom at the cursor"),
    ("Shift+wheel (wand)", "Coarser (up) or finer (down) superpixels"),
    ("Middle-drag, Space+drag", "Pan"),
    ("Alt+click", "Pick the class under the cursor"),
    ("Ctrl+click", "Correct the model here with the active class (a model is loaded)"),
    ("Shift+drag (eraser)", "Paint ignore (255) instead of background"),
    ("Enter, double-click", "Close the polygon and fill it"),
    ("Esc", "Cancel the polygon"),
    ("1 … 9, 0", "Select class 1 … 9; 0 selects background"),
)

MENUS: tuple[str, ...] = ("File", "Edit", "View", "Tools", "Image", "Model", "Help")
