"""Mapping a model's classes onto the project's classes by name (Qt-free).

The model predicts indices into its own class list; the project has its own. A 256-entry lookup
table turns one into the other: classes with the same name (case and spaces/underscores
ignored) match; unmatched model classes go to background (0) or ignore (255), the user's choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deeplab_studio.core.labels import BACKGROUND, IGNORE, VOC_CLASSES, LabelSet


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


# common spellings that mean the same class
_ALIASES = {"tvmonitor": "tv", "monitor": "tv", "diningtable": "table", "pottedplant": "plant",
            "motorbike": "motorcycle", "aeroplane": "airplane", "void": "ignore"}


def _key(name: str) -> str:
    n = _norm(name)
    return _ALIASES.get(n, n)


@dataclass
class ClassMapping:
    """Model class i -> project class `targets[i]` (0..254, or 255 = ignore)."""

    model_names: list[str]
    project_names: list[str]
    targets: list[int]

    @property
    def unmatched(self) -> list[str]:
        return [m for m, t in zip(self.model_names, self.targets) if not self.is_match(m, t)]

    def is_match(self, model_name: str, target: int) -> bool:
        return target != IGNORE and target < len(self.project_names) and \
            _key(self.project_names[target]) == _key(model_name)

    def lut(self) -> np.ndarray:
        """256-entry uint8 table: `lut[model_labels]` gives project labels."""
        table = np.full(256, IGNORE, dtype=np.uint8)
        table[: len(self.targets)] = np.asarray(self.targets, dtype=np.uint8)
        return table

    def is_identity(self) -> bool:
        return all(t == i for i, t in enumerate(self.targets))


def unmatched_note(mapping: ClassMapping) -> str | None:
    """One line telling the user which model classes found no project class of the same name."""
    names = mapping.unmatched
    if not names:
        return None
    where = {mapping.targets[mapping.model_names.index(n)] for n in names}
    goes = "ignore (255)" if where == {IGNORE} else "background" if where == {BACKGROUND} else "other classes"
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (f"{len(names)} of the model's {len(mapping.model_names)} classes are not in this project ({shown}); "
            f"they become {goes}. Map them in Model → Open model….")


def map_classes(model_names: list[str] | None, labelset: LabelSet, *, unmatched: int = BACKGROUND,
                num_classes: int | None = None) -> ClassMapping:
    """Match model classes to project classes by name; the rest go to `unmatched` (0 or 255).

    A model without class names (a bare checkpoint) is assumed to use the project's order when it
    has the same number of classes, the VOC order when it has 21 classes, else index i -> i.
    """
    if unmatched not in (BACKGROUND, IGNORE):
        raise ValueError("unmatched model classes go to background (0) or ignore (255)")
    if model_names is None:
        n = num_classes if num_classes is not None else len(labelset)
        if n == len(labelset):
            model_names = list(labelset.names)
        elif n == len(VOC_CLASSES):
            model_names = list(VOC_CLASSES)
        else:
            model_names = [f"class {i}" for i in range(n)]
    index = {}
    for j, name in enumerate(labelset.names):
        index.setdefault(_key(name), j)
    targets = []
    for i, name in enumerate(model_names):
        j = index.get(_key(name))
        if j is None and i == 0 and _key(name) in ("background", "bg", "class0"):
            j = BACKGROUND
        targets.append(unmatched if j is None else j)
    return ClassMapping(list(model_names), list(labelset.names), targets)


def is_default_labelset(labelset: LabelSet) -> bool:
    """True for a project whose classes were never chosen (only background, or the VOC default)."""
    return len(labelset) <= 1 or list(labelset.names) == list(VOC_CLASSES)


def model_labelset(names: list[str] | None, colors: list | None, num_classes: int) -> LabelSet:
    """The model's own class list as a LabelSet (VOC names for an unnamed 21-class model)."""
    if names is None:
        names = list(VOC_CLASSES) if num_classes == len(VOC_CLASSES) else \
            ["background"] + [f"class {i}" for i in range(1, num_classes)]
    return LabelSet(list(names), [tuple(c) for c in colors] if colors else [])
