"""The simulated annotator (issue 14): actions until an image's mIoU reaches a target.

It drives the app's own tools, headless: an `AnnotationDocument`, the `ToolBox` (brush, wand,
polygon, with the stroke snapper when given) and a Qt-free `PatchHistory`, wired as
`AnnotationSession` wires them; a model proposal is merged as `apply_proposal` merges it (human
pixels kept). The rules are in `sim_rules` (score, where the next action goes, objects) and
`sim_polygon` (the polygon toolset's plan). Toolsets:

- `polygon`: no model; the fewest Douglas–Peucker vertices that reach the target, drawn with
  the polygon tool (one vertex = one action);
- `brush`: the proposal (if any), then per action one brush click at the chosen pixel with the
  largest disk that fits the error region (radius capped at 50 px);
- `assist`: the proposal, then per action each assisted tool is tried at the chosen pixel with
  the true class, as the app applies it, and the one that raises the mIoU most is kept (a user
  who knows their tools). The tools are pluggable (`AssistTool`); `default_tools` gives the
  wand at each scale, the brush stamp, the snapped stamp and, when a corrector is given, click
  to correct.

Each image stops when its mIoU reaches the target or after `max_actions` (then the count is the
cap, as NoC counts). Compute seconds are what the app would spend: the proposal, the set-up once
per image (the superpixels, which the app computes in the background; click to correct's
features, which the app computes with the first click) and the kept actions; trying the other
candidates is the simulator's own cost (`sim_s`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from deeplab_studio.session.document import AnnotationDocument
from deeplab_studio.session.history import PatchHistory
from deeplab_studio.session.sim_polygon import plan as polygon_plan
from deeplab_studio.session.sim_rules import Click, image_miou, next_click, objects
from deeplab_studio.session.snap import StrokeSnapper
from deeplab_studio.session.superpixels import Superpixels, compute_superpixels
from deeplab_studio.session.tools import Mods, ToolBox, ToolContext

TOOLSETS = ("polygon", "brush", "assist")


class Workspace:
    """One image as the session holds it: document, tools, undo history."""

    def __init__(self, image: np.ndarray, superpixels: Superpixels | None = None) -> None:
        self.doc = AnnotationDocument(image)
        self.history = PatchHistory(lambda: self.doc)
        self.stack = self.history.stack_for("simulated")
        self.tools = ToolBox(ToolContext(document=lambda: self.doc, commit=self.commit,
                                         superpixels=lambda: superpixels))

    def commit(self, text: str, lp, ep) -> None:
        """What `AnnotationSession.commit` does: count the change, push it as one undo step."""
        self.doc.account(lp)
        self.history.push(text, lp, ep)

    def apply_proposal(self, labels: np.ndarray, text: str = "Model proposal") -> bool:
        """What `AnnotationSession.apply_proposal` does: merge (human pixels kept), one step."""
        patch = self.doc.proposal_patch(labels)
        if patch is None:
            return False
        self.doc.apply(patch, None)
        self.history.push(text, patch, None)
        return True

    def click(self, tool: str, point: tuple[float, float], cls: int) -> None:
        """Press and release `tool` at `point` with class `cls`."""
        self.tools.ctx.active_class = int(cls)
        self.tools.select(tool)
        t = self.tools.tool_for(Mods())
        t.press(point, Mods())
        t.release(point, Mods())

    def take_back(self, mark: int) -> list:
        """Undo to history index `mark`; the undone entries (to `replay` one of them later)."""
        entries = list(self.stack.entries[mark:self.stack.index()])
        while self.stack.index() > mark:
            self.history.undo()
        return entries

    def replay(self, entries: list) -> None:
        for text, lp, ep in entries:
            self.doc.apply(lp, ep)
            self.history.push(text, lp, ep)


class AssistTool(Protocol):
    """One assisted tool as the simulator uses it: `act` is one user action at `click`."""

    name: str

    def reset(self, image: np.ndarray) -> None: ...
    def act(self, ws: Workspace, click: Click) -> None: ...
    def chosen(self, click: Click) -> None: ...


class _Stateless:
    name = ""

    def reset(self, image: np.ndarray) -> None:
        pass

    def chosen(self, click: Click) -> None:
        pass


class BrushStamp(_Stateless):
    """One brush click with the largest disk that fits the error region (snapped when given)."""

    def __init__(self, snapper: StrokeSnapper | None = None) -> None:
        self.snapper = snapper
        self.name = "snap" if snapper is not None else "brush"

    def act(self, ws: Workspace, click: Click) -> None:
        ws.tools.ctx.snap = self.snapper
        ws.tools.ctx.brush_size = 2 * click.fit + 1
        try:
            ws.click("brush", click.point, click.cls)
        finally:
            ws.tools.ctx.snap = None


class WandClick(_Stateless):
    """One wand click at a superpixel scale."""

    def __init__(self, scale: int) -> None:
        self.scale = scale
        self.name = f"wand{scale}"

    def act(self, ws: Workspace, click: Click) -> None:
        ws.tools.ctx.wand_scale = self.scale
        ws.click("wand", click.point, click.cls)


class ClickCorrect:
    """Click to correct the model: every kept click of this image is a constraint; the
    re-proposal is merged as the app merges proposals (human pixels kept), one undo step."""

    name = "click"

    def __init__(self, set_image: Callable[[np.ndarray], None],
                 correct: Callable[[list, np.ndarray, np.ndarray], np.ndarray]) -> None:
        self._set_image, self._correct = set_image, correct
        self.clicks: list[tuple[int, int, int]] = []

    def reset(self, image: np.ndarray) -> None:
        self.clicks = []
        self._set_image(image)

    def act(self, ws: Workspace, click: Click) -> None:
        clicks = self.clicks + [(click.x, click.y, click.cls)]
        ws.apply_proposal(self._correct(clicks, ws.doc.labels, ws.doc.edit_mask), "Click correction")

    def chosen(self, click: Click) -> None:
        self.clicks.append((click.x, click.y, click.cls))


def default_tools(scales: int, snapper: StrokeSnapper | None, corrector: ClickCorrect | None = None) -> list:
    """The app's assisted tools: wand at each scale, brush, snapped brush, click to correct."""
    tools: list = [WandClick(s) for s in range(scales)] + [BrushStamp()]
    if snapper is not None:
        tools.append(BrushStamp(snapper))
    if corrector is not None:
        tools.append(corrector)
    return tools


@dataclass
class ImageResult:
    name: str
    toolset: str
    actions: int  # the count (the cap when not reached)
    reached: bool
    miou: float  # where it ended
    proposal_miou: float  # the start: the proposal's (or the empty map's)
    objects: int
    proposal_s: float = 0.0
    setup_s: float = 0.0  # once per image: superpixels, click to correct's features
    actions_s: float = 0.0  # the kept actions, as the app would run them
    sim_s: float = 0.0  # everything this image cost the simulator
    used: Counter = field(default_factory=Counter)  # kept actions per tool

    @property
    def compute_s(self) -> float:
        return self.proposal_s + self.setup_s + self.actions_s


def simulate_image(name: str, image: np.ndarray, gt: np.ndarray, toolset: str, *, target: float = 0.90,
                   max_actions: int = 20, proposal: np.ndarray | None = None, proposal_s: float = 0.0,
                   tools: Sequence[AssistTool] | None = None, snapper: StrokeSnapper | None = None,
                   superpixels: Superpixels | None = None) -> ImageResult:
    """Label one image from scratch as the scripted user does (see the module docstring)."""
    if toolset not in TOOLSETS:
        raise ValueError(f"toolset must be one of {', '.join(TOOLSETS)}, not {toolset!r}")
    t_start = time.perf_counter()
    n_objects = len(objects(gt))
    if toolset == "polygon":
        ws = Workspace(image)
        start = image_miou(ws.doc.labels, gt)
        drawn, _, _ = polygon_plan(gt, target, max_actions)
        t0 = time.perf_counter()
        ws.tools.select("polygon")
        for cls, pts in drawn:
            ws.tools.ctx.active_class = cls
            for p in pts:
                ws.tools.active.press((float(p[0]), float(p[1])), Mods())
            ws.tools.active.finish()
        score = image_miou(ws.doc.labels, gt)
        used = sum(len(p) for _, p in drawn)
        reached = score >= target
        result = ImageResult(name, toolset, used if reached else max_actions, reached, score, start, n_objects,
                             actions_s=time.perf_counter() - t0)
        result.used["vertex"] = used
        result.sim_s = time.perf_counter() - t_start
        return result
    sp_s = 0.0
    if toolset == "assist" and superpixels is None:
        t0 = time.perf_counter()
        superpixels = compute_superpixels(image)
        sp_s = time.perf_counter() - t0
    ws = Workspace(image, superpixels)
    if proposal is not None:
        ws.apply_proposal(proposal)
    start = score = image_miou(ws.doc.labels, gt)
    if toolset == "brush":
        tools = [BrushStamp()]
    elif tools is None:
        tools = default_tools(len(superpixels), snapper)
    t0 = time.perf_counter()
    for tool in tools:
        tool.reset(image)
    sp_s += time.perf_counter() - t0
    result = ImageResult(name, toolset, 0, False, score, start, n_objects, proposal_s=proposal_s, setup_s=sp_s)
    while score < target and result.actions < max_actions:
        click = next_click(ws.doc.labels, gt)
        if click is None:
            break
        best = None
        for tool in tools:
            mark = ws.stack.index()
            t0 = time.perf_counter()
            tool.act(ws, click)
            spent = time.perf_counter() - t0
            after = image_miou(ws.doc.labels, gt)
            undone = ws.take_back(mark) if len(tools) > 1 else []
            if best is None or after > best[0]:
                best = (after, tool, undone, spent)
        score, tool, undone, spent = best
        ws.replay(undone)
        tool.chosen(click)
        result.actions += 1
        result.actions_s += spent
        result.used[tool.name] += 1
    result.reached = score >= target
    result.actions = result.actions if result.reached else max_actions
    result.miou = score
    result.sim_s = time.perf_counter() - t_start
    return result
