"""Class names across datasets: a forgiving normaliser, the `--classes` mapping file, and the plan
that brings a dataset's class numbering onto a project's.

Names are matched by `normalise`: case, spaces, `/`, `-` and `_` are ignored, so "potted plant",
"pottedplant" and "Potted-Plant" are one class, and "tv/monitor" is "tvmonitor".

The `--classes` file maps dataset names onto project names, one mapping a line::

    # dataset name = project name
    person = human
    tv/monitor = television
    blurred = (void)

`(void)` makes the class's pixels void (255: ignored in training). Blank lines and lines starting
with `#` are skipped; the dataset name is matched with the normaliser, the project name is taken
as written (a name the project lacks becomes a new class). A dataset class that is neither mapped
nor found in the project is added as a new class: no class is ever dropped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deeplab_studio.core.labels import IGNORE, MAX_CLASSES, LabelSet, LabelSetError
from deeplab_studio.storage.formats.base import FormatError

VOID = "(void)"
_IGNORED_RE = re.compile(r"[\s/_\-]+")


def normalise(name: str) -> str:
    """The form names are compared in: no case, spaces, `/`, `-` or `_`."""
    return _IGNORED_RE.sub("", str(name)).casefold()


def parse_class_map(path: str | Path) -> dict[str, str]:
    """The `--classes` file: dataset name (as written) → project name (or `VOID`)."""
    path = Path(path)
    try:
        text = path.read_text("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: cannot read the class mapping ({exc})") from None
    mapping: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        src, sep, dst = (part.strip() for part in line.partition("="))
        if not sep or not src or not dst:
            raise FormatError(f"{path}:{lineno}: expected 'dataset name = project name', got {line!r}")
        if ":" in dst or "=" in dst:
            raise FormatError(f"{path}:{lineno}: a project class name cannot contain ':' or '=' ({dst!r})")
        if any(normalise(have) == normalise(src) for have in mapping):
            raise FormatError(f"{path}:{lineno}: {src!r} is mapped twice")
        mapping[src] = dst
    return mapping


@dataclass
class ClassMatch:
    source: str  # the dataset's class name
    target: str | None  # the project's class it became (None: void)
    how: str  # "same", "by name", "mapped", "added", "void"


@dataclass
class ClassPlan:
    labels: LabelSet  # the project's class list after the import
    lut: np.ndarray  # 256 uint8: dataset index → project index (255 stays 255)
    matches: list[ClassMatch]
    changed: bool  # `labels` differs from the project's list
    unused: list[str] = field(default_factory=list)  # mapping entries no dataset class matched

    def summary(self) -> str:
        """One line: how each dataset class was matched (names shown for all but exact matches)."""
        parts = []
        for how in ("same", "by name", "mapped", "added", "void"):
            ms = [m for m in self.matches if m.how == how]
            if not ms:
                continue
            if how == "same":
                parts.append(f"{len(ms)} same")
                continue
            shown = [m.source if how == "added" else f"{m.source} → {m.target or VOID}" for m in ms[:8]]
            more = f", {len(ms) - 8} more" if len(ms) > 8 else ""
            parts.append(f"{len(ms)} {'matched by name' if how == 'by name' else how} ({', '.join(shown)}{more})")
        return "classes: " + "; ".join(parts)


#: normalised names a dataset gives its class 0 when it is the background (labelme: `_background_`)
BACKGROUND_NAMES = frozenset({"background"})


def _clean(name: str, index: int) -> str:
    """A dataset name the project can hold (no ':' or line breaks; never empty)."""
    cleaned = re.sub(r"[:\r\n\t]+", " ", str(name)).strip()
    return cleaned or f"class {index}"


def _find(labels: LabelSet, name: str) -> tuple[int | None, str]:
    """(index, "same" | "by name") of `name` in `labels`, or (None, "")."""
    if name in labels.names:
        return labels.names.index(name), "same"
    key = normalise(name)
    for i, have in enumerate(labels.names):
        if normalise(have) == key:
            return i, "by name"
    return None, ""


def plan_classes(names: list[str], colors: list[tuple[int, int, int]] | None, project: LabelSet, *,
                 adopt: bool, mapping: dict[str, str] | None = None) -> ClassPlan:
    """Where each dataset class goes. `adopt` (a project without label maps): the project takes
    the dataset's classes and colours in the dataset's order; else the project's classes stay as
    they are and the dataset's are matched to them by name, unknown ones appended."""
    by_key = {normalise(k): v for k, v in (mapping or {}).items()}
    base = LabelSet(["background"]) if adopt else LabelSet(list(project.names), list(project.colors))
    lut = np.full(256, IGNORE, np.uint8)
    matches: list[ClassMatch] = []
    used_keys: set[str] = set()
    for i, raw in enumerate(names):
        src = _clean(raw, i)
        key = normalise(src)
        target = by_key.get(key)
        used_keys.add(key)
        if target == VOID:
            matches.append(ClassMatch(src, None, "void"))
            continue
        want = target or src
        if adopt and i == 0 and base.names == ["background"]:  # the dataset's first class takes index 0
            base.names[0] = want
            if colors and i < len(colors) and colors[i] is not None:
                base.colors[0] = tuple(colors[i])
            lut[i] = 0
            matches.append(ClassMatch(src, want, "mapped" if target else "same"))
            continue
        index, how = _find(base, want)
        if index is None and i == 0 and not target and normalise(src) in BACKGROUND_NAMES:
            index, how = 0, "by name"  # a dataset's background is the project's class 0, whatever its name
        if index is None:
            color = tuple(colors[i]) if colors and i < len(colors) and colors[i] is not None else None
            if color is not None and color in base.colors:
                color = None  # taken: the default colour of the new index
            if len(base) >= MAX_CLASSES:
                raise FormatError(f"{src}: the project would have more than {MAX_CLASSES} classes")
            try:
                index = base.add(want, color)
            except LabelSetError as exc:
                raise FormatError(f"class {src!r}: {exc}") from None
            how = "same" if adopt and not target else "added"
        if target:
            how = "mapped"
        lut[i] = index
        matches.append(ClassMatch(src, base.names[index], how))
    changed = base.names != project.names or base.colors != project.colors
    unused = [k for k in mapping or {} if normalise(k) not in used_keys]
    return ClassPlan(base, lut, matches, changed, unused)
