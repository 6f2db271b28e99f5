"""The Tools toolbar and the view settings it controls: tool choice, brush size, "background
only", snapping strokes to edges, the wand's superpixel scale, overlay opacity and visibility. Tool state lives in the session's `ToolContext`; the
overlay's in the canvas; this class keeps the buttons, sliders and actions in step with both and
remembers the choices in the settings."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QCheckBox, QLabel, QSlider, QSpinBox, QToolBar, QWidget

from deeplab_studio.gui.canvas.view import CanvasView
from deeplab_studio.gui.window.actions import ActionRegistry
from deeplab_studio.session.superpixels import SCALES
from deeplab_studio.session.tools import ToolBox

TOOL_ACTIONS = ("tool_brush", "tool_eraser", "tool_fill", "tool_polygon", "tool_picker", "tool_wand")
MAX_BRUSH = 500
SCALE_NAMES = ("fine", "medium", "coarse")


def _quietly(widget: QWidget, change: Callable[[], None]) -> None:
    """Make `change` to `widget` without it emitting (the value came from elsewhere)."""
    widget.blockSignals(True)
    change()
    widget.blockSignals(False)


class ToolControls:
    def __init__(self, toolbox: ToolBox, canvas: CanvasView, actions: ActionRegistry, settings: QSettings,
                 parent: QWidget) -> None:
        self.toolbox, self.canvas, self.actions, self.settings = toolbox, canvas, actions, settings
        self.toolbar = QToolBar("Tools", parent)
        self.toolbar.setObjectName("toolbar_tools")
        self.toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        for name in TOOL_ACTIONS:
            self.toolbar.addAction(actions[name])
            self.toolbar.widgetForAction(actions[name]).setText(name[5:].capitalize())
        self.toolbar.addSeparator()
        self.toolbar.addWidget(QLabel(" Size "))
        self.size_slider = QSlider(Qt.Orientation.Horizontal)
        self.size_slider.setRange(1, MAX_BRUSH)
        self.size_slider.setFixedWidth(140)
        self.size_spin = QSpinBox()
        self.size_spin.setRange(1, MAX_BRUSH)
        self.size_spin.setSuffix(" px")
        self.toolbar.addWidget(self.size_slider)
        self.toolbar.addWidget(self.size_spin)
        self.bg_only = QCheckBox("Background only")
        self.bg_only.setToolTip("Paint over background pixels only (G)")
        self.toolbar.addWidget(self.bg_only)
        self.wand_scale = QLabel()
        self.wand_scale.setToolTip("The wand's superpixel size (Shift+wheel over the image changes it)")
        self.toolbar.addWidget(self.wand_scale)
        self.toolbar.addSeparator()
        self.toolbar.addWidget(QLabel(" Opacity "))
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setFixedWidth(110)
        self.toolbar.addWidget(self.opacity_slider)
        self._connect()
        self.set_brush_size(int(settings.value("brush_size", 20)))
        self.set_opacity(float(settings.value("opacity", 0.5)))
        self.set_wand_scale(int(settings.value("wand_scale", 0)))
        self.set_snap_strokes(str(settings.value("snap_strokes", "false")).lower() == "true")
        self.set_tool(str(settings.value("tool", "brush")))

    def _connect(self) -> None:
        a = self.actions
        self.size_slider.valueChanged.connect(self.set_brush_size)
        self.size_spin.valueChanged.connect(self.set_brush_size)
        self.opacity_slider.valueChanged.connect(lambda v: self.set_opacity(v / 100.0))
        self.bg_only.toggled.connect(self.set_background_only)
        a["toggle_overlay"].setChecked(True)
        a["toggle_overlay"].toggled.connect(self.set_overlay_visible)
        a["toggle_edit_outline"].toggled.connect(self.canvas.set_edit_outline_visible)
        a["background_only"].toggled.connect(self.set_background_only)
        a["snap_strokes"].toggled.connect(self.set_snap_strokes)
        self.canvas.wandScaleChanged.connect(self.set_wand_scale)
        a["brush_smaller"].triggered.connect(lambda: self.set_brush_size(self.brush_step(-1)))
        a["brush_bigger"].triggered.connect(lambda: self.set_brush_size(self.brush_step(+1)))
        a["opacity_down"].triggered.connect(lambda: self.set_opacity(self.canvas.overlay.opacity() - 0.1))
        a["opacity_up"].triggered.connect(lambda: self.set_opacity(self.canvas.overlay.opacity() + 0.1))
        for name in TOOL_ACTIONS:
            a[name].triggered.connect(lambda _=False, n=name[5:]: self.set_tool(n))

    def set_tool(self, name: str) -> None:
        if name not in self.toolbox.tools:
            name = "brush"
        self.toolbox.select(name)
        self.actions[f"tool_{name}"].setChecked(True)
        self.wand_scale.setVisible(name == "wand")
        self.canvas.update_brush()
        self.settings.setValue("tool", name)

    def brush_step(self, direction: int) -> int:
        size = self.toolbox.ctx.brush_size
        return max(1, min(MAX_BRUSH, size + direction * max(1, round(size * 0.15))))

    def set_brush_size(self, size: int) -> None:
        size = max(1, min(MAX_BRUSH, int(size)))
        self.toolbox.ctx.brush_size = size
        for w in (self.size_slider, self.size_spin):
            if w.value() != size:
                _quietly(w, lambda w=w: w.setValue(size))
        self.canvas.update_brush()
        self.settings.setValue("brush_size", size)

    def set_opacity(self, value: float) -> None:
        value = max(0.0, min(1.0, float(value)))
        self.canvas.overlay.setOpacity(value)
        if self.opacity_slider.value() != round(value * 100):
            _quietly(self.opacity_slider, lambda: self.opacity_slider.setValue(round(value * 100)))
        self.settings.setValue("opacity", value)
        self._overlay_notice()

    def set_overlay_visible(self, on: bool) -> None:
        self.canvas.overlay.setVisible(on)
        if self.actions["toggle_overlay"].isChecked() != on:
            self.actions["toggle_overlay"].setChecked(on)
        self._overlay_notice()

    def _overlay_notice(self) -> None:
        """Say so on the canvas when the labels cannot be seen (painting would look like it did nothing)."""
        overlay = self.canvas.overlay
        if not overlay.isVisible():
            self.canvas.set_notice("Labels hidden — press T to show them")
        elif overlay.opacity() < 0.05:
            self.canvas.set_notice("Label opacity 0 % — Ctrl+] or the Opacity slider shows them")
        else:
            self.canvas.set_notice("")

    def set_background_only(self, on: bool) -> None:
        self.toolbox.ctx.background_only = bool(on)
        for w in (self.bg_only, self.actions["background_only"]):
            if w.isChecked() != on:
                _quietly(w, lambda w=w: w.setChecked(on))

    def set_wand_scale(self, scale: int) -> None:
        scale = max(0, min(len(SCALES) - 1, int(scale)))
        self.toolbox.ctx.wand_scale = scale
        self.wand_scale.setText(f" Superpixels: {SCALE_NAMES[scale] if scale < len(SCALE_NAMES) else scale} ")
        self.settings.setValue("wand_scale", scale)

    def set_snap_strokes(self, on: bool) -> None:
        """Snap each brush stroke to image edges with the dense CRF (`session.snap`)."""
        if on:
            from deeplab_studio.ml.crf import refine  # numpy at import; pydensecrf on the first stroke
            from deeplab_studio.session.snap import StrokeSnapper

            self.toolbox.ctx.snap = StrokeSnapper(refine)
        else:
            self.toolbox.ctx.snap = None
        if self.actions["snap_strokes"].isChecked() != on:
            _quietly(self.actions["snap_strokes"], lambda: self.actions["snap_strokes"].setChecked(on))
        self.settings.setValue("snap_strokes", bool(on))
