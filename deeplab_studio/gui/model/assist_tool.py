"""The base of the model-assisted tools the controller owns (click to correct, the label-error
review): what each is handed, the window link, the inference client, the model → project class
table and the "is a model loaded?" check, and its `message` signal for the status bar."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtCore import QObject, Signal

from deeplab_studio.gui.workers.inference_client import InferenceClient


class AssistTool(QObject):
    """A tool that asks the loaded model for help through `client`."""

    message = Signal(str)

    def __init__(self, link, client: InferenceClient, *, lut: Callable[[], np.ndarray | None],
                 require_model: Callable[[], bool], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.link, self.client = link, client
        self._lut, self._require_model = lut, require_model  # read when a request is sent
