"""Class lists and colours: `LabelSet`, the Pascal VOC colormap and the ignore index."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BACKGROUND = 0
IGNORE = 255
MAX_CLASSES = 255  # indices 0..254; 255 is reserved for ignore/void

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)

Color = tuple[int, int, int]


def voc_colormap(n: int = 256) -> np.ndarray:
    """The Pascal VOC colormap (`n`×3 uint8) built by interleaving the bits of each index."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


_VOC_CMAP = voc_colormap()
IGNORE_COLOR: Color = tuple(int(v) for v in _VOC_CMAP[IGNORE])  # (224, 224, 192)


class LabelSetError(ValueError):
    """An invalid change to a class list (too many classes, bad name, bad index)."""


@dataclass
class LabelSet:
    """An ordered list of class names with one RGB colour each; index 0 is background.

    Index 255 is never a class: it means ignore/void and is drawn in `IGNORE_COLOR`.
    """

    names: list[str] = field(default_factory=lambda: list(VOC_CLASSES))
    colors: list[Color] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.names = [self._check_name(n) for n in self.names]
        if not self.names:
            raise LabelSetError("a class list needs at least one class (background)")
        if len(self.names) > MAX_CLASSES:
            raise LabelSetError(f"at most {MAX_CLASSES} classes (index 255 is reserved for ignore)")
        if len(set(self.names)) != len(self.names):
            raise LabelSetError("class names must be unique")
        colors = [self._check_color(c) for c in self.colors]
        for i in range(len(colors), len(self.names)):
            colors.append(tuple(int(v) for v in _VOC_CMAP[i]))
        self.colors = colors[: len(self.names)]

    @classmethod
    def voc(cls) -> "LabelSet":
        """The 21 Pascal VOC classes in their standard colours."""
        return cls(list(VOC_CLASSES))

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Index of the class called `name` (KeyError if absent)."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(name) from None

    def palette(self) -> np.ndarray:
        """256×3 uint8 lookup table: class colours, VOC colours beyond them, 255 = ignore colour."""
        lut = _VOC_CMAP.copy()
        lut[: len(self.colors)] = np.asarray(self.colors, dtype=np.uint8)
        lut[IGNORE] = IGNORE_COLOR
        return lut

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """An H×W×3 RGB image of a uint8 label map."""
        return self.palette()[labels]

    # --- editing -------------------------------------------------------------------------
    def add(self, name: str, color: Color | None = None) -> int:
        """Append a class and return its index."""
        name = self._check_name(name)
        if name in self.names:
            raise LabelSetError(f"a class called {name!r} already exists")
        if len(self.names) >= MAX_CLASSES:
            raise LabelSetError(f"at most {MAX_CLASSES} classes (index 255 is reserved for ignore)")
        i = len(self.names)
        self.names.append(name)
        self.colors.append(self._check_color(color) if color is not None else tuple(int(v) for v in _VOC_CMAP[i]))
        return i

    def rename(self, index: int, name: str) -> None:
        self._check_index(index)
        name = self._check_name(name)
        if name in self.names and self.names.index(name) != index:
            raise LabelSetError(f"a class called {name!r} already exists")
        self.names[index] = name

    def recolor(self, index: int, color: Color) -> None:
        self._check_index(index)
        self.colors[index] = self._check_color(color)

    def delete(self, index: int, *, replacement: int = BACKGROUND) -> np.ndarray:
        """Remove class `index`; returns a 256-entry uint8 lookup table to remap label maps.

        Pixels of the deleted class become `replacement` (an index in the old numbering, or 255);
        classes after it shift down by one. Apply with `lut[labels]`.
        """
        self._check_index(index)
        if index == BACKGROUND:
            raise LabelSetError("the background class cannot be deleted")
        if replacement != IGNORE:
            self._check_index(replacement)
            if replacement == index:
                raise LabelSetError("a deleted class cannot take its own pixels")
        lut = np.arange(256, dtype=np.int32)
        lut[index + 1 : len(self.names)] -= 1
        new_repl = IGNORE if replacement == IGNORE else int(lut[replacement])
        lut[index] = new_repl
        del self.names[index]
        del self.colors[index]
        return lut.astype(np.uint8)

    # --- (de)serialisation ---------------------------------------------------------------
    def to_json(self) -> list[dict]:
        return [{"name": n, "color": list(c)} for n, c in zip(self.names, self.colors)]

    @classmethod
    def from_json(cls, items: list[dict]) -> "LabelSet":
        try:
            return cls([str(it["name"]) for it in items], [tuple(it["color"]) for it in items])
        except (KeyError, TypeError) as exc:
            raise LabelSetError(f"malformed class list: {exc}") from None

    # --- checks --------------------------------------------------------------------------
    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self.names):
            raise LabelSetError(f"no class with index {index}")

    @staticmethod
    def _check_name(name: str) -> str:
        name = str(name).strip()
        if not name or any(ch in name for ch in "\n\r\t:"):
            raise LabelSetError(f"invalid class name {name!r} (empty, or contains ':' or a line break)")
        return name

    @staticmethod
    def _check_color(color) -> Color:
        try:
            r, g, b = (int(v) for v in color)
        except (TypeError, ValueError):
            raise LabelSetError(f"a colour is three integers 0..255, not {color!r}") from None
        if not all(0 <= v <= 255 for v in (r, g, b)):
            raise LabelSetError(f"a colour is three integers 0..255, not {color!r}")
        return (r, g, b)
