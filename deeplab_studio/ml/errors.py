"""Every error type the ml package raises, in a module that imports neither torch nor numpy.

The window's worker threads pass these exceptions to the GUI thread, which tells them apart with
`isinstance`; importing this module does not pull in torch, so the GUI can do that cheaply.
"""

from __future__ import annotations

import os


class CheckpointError(Exception):
    """A checkpoint cannot be read or used; ``str()`` names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class LayoutError(ValueError):
    """The keys/shapes do not describe a model this package can build."""


class HFLayoutError(ValueError):
    """A Hugging Face folder, config or state dict this package cannot use (one line)."""


class ConvertError(ValueError):
    """The file is not a TFLite file of this graph (one line naming the file and the reason)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")


class WeightsUnavailable(OSError):
    """A weight file could not be downloaded or failed its hash check."""


class PredictionCancelled(Exception):
    """The cancel hook asked to stop; raised between tiles (or images)."""


class PredictionError(RuntimeError):
    """Prediction failed for a reason other than bad input (e.g. out of memory everywhere)."""


class DeviceError(ValueError):
    """An unknown or unavailable device name."""


class CRFCancelled(Exception):
    """The `cancel` hook asked to stop; raised between tiles or mean-field iterations."""


class DatasetError(Exception):
    """Unusable training data; the message names the file or folder and the reason."""


class TrainError(Exception):
    """Training cannot start or resume; the message says why."""


#: errors whose message already reads as one complete line for the user (no class name needed)
SELF_DESCRIBING: tuple[type[BaseException], ...] = (CheckpointError, ConvertError, DatasetError, TrainError,
                                                    WeightsUnavailable, HFLayoutError)
