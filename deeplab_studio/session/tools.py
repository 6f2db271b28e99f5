"""Annotation tools (Qt-free): brush, eraser, fill, polygon, picker, superpixel wand.

The canvas turns mouse events into image points (x, y) and calls `press/move/release`. Tools
write through the core at once (rasterised immediately, edit mask marked) and hand one finished
change per stroke/fill/polygon to `ToolContext.commit`, which makes it an undo command.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from deeplab_studio.core.brush import paint_disk, paint_line
from deeplab_studio.core.fill import fill_mask, flood_region, polygon_mask
from deeplab_studio.core.labels import BACKGROUND, IGNORE
from deeplab_studio.core.patches import MaskPatch, StrokeRecorder, union_bbox
from deeplab_studio.session.document import AnnotationDocument
from deeplab_studio.session.superpixels import Superpixels

Point = tuple[float, float]


@dataclass(frozen=True)
class Mods:
    """Keyboard modifiers held during a pointer event."""

    shift: bool = False
    ctrl: bool = False
    alt: bool = False


@dataclass
class ToolContext:
    """What tools read and call; owned by the main window."""

    document: Callable[[], AnnotationDocument | None]
    commit: Callable[[str, MaskPatch | None, MaskPatch | None], None]
    pick: Callable[[int], None] = lambda value: None
    preview_changed: Callable[[], None] = lambda: None
    active_class: int = 1
    brush_size: int = 20
    background_only: bool = False
    read_only: bool = False  # the project is open read-only: only the picker acts
    superpixels: Callable[[], Superpixels | None] = lambda: None  # the open image's (waits for them)
    wand_scale: int = 0  # index into the superpixel scales, 0 = finest
    #: refines each finished brush stroke before it is committed (`session.snap.StrokeSnapper`); None = off
    snap: Callable[..., tuple[MaskPatch | None, MaskPatch | None]] | None = None
    message: Callable[[str], None] = lambda text: None  # a passing note for the status bar

    @property
    def radius(self) -> int:
        """Disk radius for the brush size in pixels (the disk is 2r+1 pixels across)."""
        return max(0, int(self.brush_size) // 2)


class Tool:
    """Base tool: ignores everything."""

    name = ""
    title = ""
    shows_brush = False

    def __init__(self, ctx: ToolContext) -> None:
        self.ctx = ctx

    def press(self, p: Point, mods: Mods) -> None: ...
    def move(self, p: Point, mods: Mods) -> None: ...
    def release(self, p: Point, mods: Mods) -> None: ...
    def double_click(self, p: Point, mods: Mods) -> None: ...

    def finish(self) -> bool:
        """Enter pressed: complete a pending action. True if the key was used."""
        return False

    def cancel(self) -> bool:
        """Esc pressed (or the tool/image changes): drop a pending action. True if used."""
        return False

    @property
    def busy(self) -> bool:
        return False


def background_protect(ctx: ToolContext, doc: AnnotationDocument) -> np.ndarray | None:
    """The pixels a "background only" change must leave alone (every labelled one), or None."""
    return doc.labels != BACKGROUND if ctx.background_only else None


class StrokeTool(Tool):
    """A press–drag–release change recorded tile by tile and committed as one undo step (the
    brush, the eraser, the wand): the shared stroke state, finishing and cancelling."""

    def __init__(self, ctx: ToolContext) -> None:
        super().__init__(ctx)
        self._doc: AnnotationDocument | None = None
        self._last: Point | None = None
        self._recorders: tuple[StrokeRecorder, StrokeRecorder] | None = None
        self._protect: np.ndarray | None = None

    @property
    def busy(self) -> bool:
        return self._doc is not None

    def protect_for(self, doc: AnnotationDocument) -> np.ndarray | None:
        return background_protect(self.ctx, doc)

    def _begin(self, doc: AnnotationDocument, p: Point) -> None:
        self._doc, self._last = doc, p
        self._recorders = (StrokeRecorder(doc.labels), StrokeRecorder(doc.edit_mask))
        self._protect = self.protect_for(doc)

    def _finish(self, p: Point, mods: Mods):
        """End the stroke at `p`: (document, labels patch, edit patch, protect mask), or None when
        no stroke was going on or it changed nothing."""
        if self._doc is None:
            return None
        if p != self._last:
            self.move(p, mods)
        lp, ep = (rec.finish() for rec in self._recorders)
        done = (self._doc, lp, ep, self._protect)
        self._doc = self._last = self._recorders = self._protect = None
        return None if lp is None and ep is None else done

    def cancel(self) -> bool:
        if self._doc is None:
            return False
        self.release(self._last or (0.0, 0.0), Mods())
        return True


class BrushTool(StrokeTool):
    """Paints a gap-free capsule stroke of the active class; one undo step per stroke."""

    name, title, shows_brush = "brush", "Brush", True
    snaps = True  # refined by `ctx.snap` when that is set

    def __init__(self, ctx: ToolContext) -> None:
        super().__init__(ctx)
        self._value = 0

    def value(self, mods: Mods) -> int:
        return self.ctx.active_class

    def press(self, p: Point, mods: Mods) -> None:
        doc = self.ctx.document()
        if doc is None:
            return
        self._value = self.value(mods)
        self._begin(doc, p)
        bbox = paint_disk(doc.labels, p, self.ctx.radius, self._value, protect=self._protect,
                          edit_mask=doc.edit_mask, recorders=self._recorders)
        doc.notify(bbox)

    def move(self, p: Point, mods: Mods) -> None:
        doc = self._doc
        if doc is None or self._last is None:
            return
        bbox = paint_line(doc.labels, self._last, p, self.ctx.radius, self._value,
                          protect=self._protect, edit_mask=doc.edit_mask, recorders=self._recorders)
        self._last = p
        doc.notify(bbox)

    def release(self, p: Point, mods: Mods) -> None:
        done = self._finish(p, mods)
        if done is None:
            return
        doc, lp, ep, protect = done
        title = f"{self.title} stroke"
        if self.snaps and self.ctx.snap is not None:
            try:
                lp, ep = self.ctx.snap(doc, lp, ep, self._value, self.ctx.radius, protect)
                title += " (snapped)"
            except (ValueError, ImportError, MemoryError, RuntimeError) as exc:
                self.ctx.message(f"Stroke not snapped: {exc}")
        self.ctx.commit(title, lp, ep)


class EraserTool(BrushTool):
    """Paints background; with Shift held at the press, paints ignore (255)."""

    name, title = "eraser", "Eraser"
    snaps = False

    def value(self, mods: Mods) -> int:
        return IGNORE if mods.shift else BACKGROUND

    def protect_for(self, doc: AnnotationDocument) -> np.ndarray | None:
        return None


def _commit_fill(ctx: ToolContext, doc: AnnotationDocument, region: np.ndarray, title: str) -> None:
    result = fill_mask(doc.labels, region, ctx.active_class, protect=background_protect(ctx, doc),
                       edit_mask=doc.edit_mask)
    if result is None:
        return
    lp, ep = result
    doc.notify(union_bbox(*(q.bbox for q in (lp, ep) if q is not None)))
    ctx.commit(title, lp, ep)


class FillTool(Tool):
    """Fills the 4-connected region of equal label under the click with the active class."""

    name, title = "fill", "Fill"

    def press(self, p: Point, mods: Mods) -> None:
        doc = self.ctx.document()
        if doc is None or not doc.contains(*p):
            return
        _commit_fill(self.ctx, doc, flood_region(doc.labels, p), "Fill")


class PolygonTool(Tool):
    """Click vertices; Enter or double-click closes and fills; Esc cancels."""

    name, title = "polygon", "Polygon"

    def __init__(self, ctx: ToolContext) -> None:
        super().__init__(ctx)
        self.points: list[Point] = []
        self.hover: Point | None = None

    @property
    def busy(self) -> bool:
        return bool(self.points)

    def press(self, p: Point, mods: Mods) -> None:
        if self.ctx.document() is None:
            return
        if not self.points or self.points[-1] != p:
            self.points.append(p)
        self.ctx.preview_changed()

    def move(self, p: Point, mods: Mods) -> None:
        if self.points:
            self.hover = p
            self.ctx.preview_changed()

    def double_click(self, p: Point, mods: Mods) -> None:
        if self.points and self.points[-1] != p and _pixel(self.points[-1]) != _pixel(p):
            self.points.append(p)
        self.finish()

    def finish(self) -> bool:
        doc = self.ctx.document()
        pts, self.points, self.hover = self.points, [], None
        self.ctx.preview_changed()
        if doc is None or len(pts) < 3:
            return bool(pts)
        region = polygon_mask(doc.labels.shape, pts)
        _commit_fill(self.ctx, doc, region, "Polygon")
        return True

    def cancel(self) -> bool:
        had = bool(self.points)
        self.points, self.hover = [], None
        self.ctx.preview_changed()
        return had


def _pixel(p: Point) -> tuple[int, int]:
    return int(p[0] // 1), int(p[1] // 1)


class PickerTool(Tool):
    """Makes the class under the click the active class."""

    name, title = "picker", "Picker"

    def press(self, p: Point, mods: Mods) -> None:
        doc = self.ctx.document()
        value = doc.label_at(*p) if doc is not None else None
        if value is not None:
            self.ctx.pick(value)


class WandTool(StrokeTool):
    """Gives the superpixel under the click the active class; a drag paints every superpixel it
    crosses. Same rules as the brush ("background only", the edit mask); one undo step per drag."""

    name, title = "wand", "Wand"

    def __init__(self, ctx: ToolContext) -> None:
        super().__init__(ctx)
        self._sp: Superpixels | None = None
        self._done: set[int] = set()

    @property
    def scale(self) -> int:
        sp = self._sp
        top = len(sp) - 1 if sp is not None else 0
        return max(0, min(int(self.ctx.wand_scale), top))

    def press(self, p: Point, mods: Mods) -> None:
        doc = self.ctx.document()
        if doc is None or not doc.contains(*p):
            return
        sp = self.ctx.superpixels()
        if sp is None or sp.shape != doc.labels.shape:
            self.ctx.message("The wand's superpixels are not ready for this image")
            return
        self._sp, self._done = sp, set()
        self._begin(doc, p)
        region = sp.region_at(self.scale, *p)
        self._done.add(sp.segment_at(self.scale, *p))
        self._paint(*region)

    def move(self, p: Point, mods: Mods) -> None:
        if self._doc is None or self._last is None:
            return
        (ax, ay), (bx, by) = self._last, p
        steps = max(1, int(math.ceil(max(abs(bx - ax), abs(by - ay)))))
        for t in np.linspace(0.0, 1.0, steps + 1)[1:]:
            seg = self._sp.segment_at(self.scale, ax + (bx - ax) * t, ay + (by - ay) * t)
            if seg is not None and seg not in self._done:
                self._done.add(seg)
                self._paint(*self._sp.mask(self.scale, seg))
        self._last = p

    def _paint(self, box: tuple[int, int, int, int], crop: np.ndarray) -> None:
        doc = self._doc
        x0, y0, x1, y1 = box
        if self._protect is not None:
            crop = crop & ~self._protect[y0:y1, x0:x1]
        if not crop.any():
            return
        for rec in self._recorders:
            rec.before_change(box)
        doc.labels[y0:y1, x0:x1][crop] = self.ctx.active_class
        doc.edit_mask[y0:y1, x0:x1][crop] = True
        doc.notify(box)

    def release(self, p: Point, mods: Mods) -> None:
        done = self._finish(p, mods)
        self._sp = None
        if done is not None:
            self.ctx.commit(self.title, done[1], done[2])


TOOL_CLASSES: dict[str, type[Tool]] = {
    cls.name: cls for cls in (BrushTool, EraserTool, FillTool, PolygonTool, PickerTool, WandTool)
}


@dataclass
class ToolBox:
    """All tools sharing one context, and which one is active."""

    ctx: ToolContext
    tools: dict[str, Tool] = field(init=False)
    active_name: str = "brush"

    def __post_init__(self) -> None:
        self.tools = {name: cls(self.ctx) for name, cls in TOOL_CLASSES.items()}

    @property
    def active(self) -> Tool:
        return self.tools[self.active_name]

    def tool_for(self, mods: Mods) -> Tool | None:
        """The tool a press with `mods` starts (Alt: the picker), or None when a read-only
        project allows no change."""
        tool = self.tools["picker"] if mods.alt else self.active
        return None if self.ctx.read_only and tool.name != "picker" else tool

    def select(self, name: str) -> None:
        if name not in self.tools:
            raise KeyError(f"no tool called {name!r}")
        if name != self.active_name:
            self.active.cancel()
            self.active_name = name
