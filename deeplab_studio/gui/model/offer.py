"""The offer of the bundled VOC model to a folder that has no model yet, and bundled weights as files.

A window opened on a folder with no model chosen (none remembered for the project, none loaded)
shows a slim notice under the message banner: "Use the VOC model" loads the bundled Pascal VOC
model in the worker at once (one click, no dialog), "Other model…" opens the model dialog, ✕ hides
it until another folder is opened. Nothing loads by itself: a project's class list and memory
stay as they are until the user chooses, and the model a project used last always wins (the
controller loads it instead of offering). Once chosen, the VOC model is remembered per project
like any other model.

`bundled_weights(name)` gives a bundled model's weights as a file path (through
`deeplab_studio.models`, never a path relative to the source tree) that stays valid while the
program runs.
"""

from __future__ import annotations

import atexit
import functools
from contextlib import ExitStack
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget

from deeplab_studio.gui.window.widgets import dismiss_button
from deeplab_studio.models import VOC_MODEL, bundled_model_path, bundled_models

_OPEN = ExitStack()  # bundled files stay available (a zipped install extracts them) until exit
atexit.register(_OPEN.close)

OFFER_TEXT = ("No model chosen for this folder yet. The bundled DeepLab v3 model trained on the 21 Pascal VOC "
              "classes (person, car, cat, dog, chair, …) can propose labels now.")
_STYLE = ("ModelOffer {background:#1f3d5c; border-bottom:1px solid #3a6ea8;} "
          "QLabel {color:#e3f0ff; background:transparent;}")


@functools.cache
def bundled_weights(name: str) -> str:
    """The weights file of bundled model `name` (LookupError when there is none)."""
    return str(_OPEN.enter_context(bundled_model_path(name)))


def voc_model_available() -> bool:
    return VOC_MODEL in bundled_models()


def bundled_name(path: str | Path) -> str | None:
    """The bundled model whose weights are `path`, else None."""
    for name in bundled_models():
        try:
            if Path(path).resolve() == Path(bundled_weights(name)).resolve():
                return name
        except OSError:
            continue
    return None


class ModelOffer(QFrame):
    """The notice: text, "Use the VOC model", "Other model…", dismiss (never modal)."""

    useRequested = Signal()
    otherRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("model_offer")
        self.setStyleSheet(_STYLE)
        self.label = QLabel(OFFER_TEXT)
        self.label.setWordWrap(True)
        self.use_button = QPushButton("Use the VOC model")
        self.use_button.setToolTip(f"Load the bundled model {VOC_MODEL} (DeepLab v3 MobileNetV2, 21 Pascal VOC "
                                   "classes); Ctrl+R then proposes labels")
        self.use_button.clicked.connect(self.useRequested.emit)
        self.other_button = QPushButton("Other model…")
        self.other_button.clicked.connect(self.otherRequested.emit)
        self.close_button = close = dismiss_button("Not now (offered again when another folder is opened)",
                                                   self.dismiss)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(10, 4, 6, 4)
        lay.addWidget(self.label, 1)
        lay.addWidget(self.use_button)
        lay.addWidget(self.other_button)
        lay.addWidget(close)
        self.dismissed = False  # "not now" for the open folder
        self.hide()

    def dismiss(self) -> None:
        self.dismissed = True
        self.hide()


def install_offer(link) -> ModelOffer:
    """A hidden ModelOffer placed right under the window's message banner (`link`: its WindowLink)."""
    offer = ModelOffer()
    link.insert_under_banner(offer)
    return offer


__all__ = ["ModelOffer", "bundled_name", "bundled_weights", "install_offer", "voc_model_available"]
