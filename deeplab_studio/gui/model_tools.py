"""The one place that builds the model-in-the-loop tools of a window and connects them.

`attach_model_tools(window)` makes the window's `WindowLink`, the bundled-model offer under its
banner, the `ModelController` (Model menu, inference worker, proposals) and the `TrainingTools`
(training actions, after the controller's in the Model menu), handing each what it needs. It
is idempotent per window: a second call (e.g. the demo after the app attached) returns the
same controller. torch stays unimported until a model is used.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from PySide6.QtCore import QObject

from deeplab_studio.gui.model.controller import ModelController
from deeplab_studio.gui.model.offer import install_offer
from deeplab_studio.gui.training.tools import TrainingTools
from deeplab_studio.gui.window.link import WindowLink


@dataclass(frozen=True)
class ModelTools:
    """What `attach_model_tools` built for one window."""

    link: WindowLink
    controller: ModelController
    training: TrainingTools


_ATTACHED: weakref.WeakKeyDictionary[QObject, ModelTools] = weakref.WeakKeyDictionary()


def model_tools(window) -> ModelTools:
    """The window's model tools, built and connected on the first call."""
    tools = _ATTACHED.get(window)
    if tools is None:
        link = WindowLink(window)
        controller = ModelController(link, settings=link.settings(), offer=install_offer(link), parent=window)
        training = TrainingTools(link, controller, parent=window)
        tools = _ATTACHED[window] = ModelTools(link, controller, training)
    return tools


def attach_model_tools(window) -> ModelController:
    """The window's ModelController (with the training tools attached after it)."""
    return model_tools(window).controller


def attach_training_tools(window) -> TrainingTools:
    """The window's TrainingTools (the model tools are attached first when they are not yet)."""
    return model_tools(window).training


__all__ = ["ModelTools", "attach_model_tools", "attach_training_tools", "model_tools"]
