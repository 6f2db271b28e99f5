"""The weights shipped inside the package and their model cards, read with `importlib.resources`.

A bundled model is a `<name>.safetensors` file in this package with a `<name>.json` model card
beside it. They are package data, so they are found the same way in a source checkout, an
editable install and a wheel:

    from deeplab_studio.models import bundled_model_path, bundled_models, model_card
    with bundled_model_path("demo_deeplabv3plus_mobilenet") as path:
        loaded = load_checkpoint(path)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

#: the VOC-trained DeepLab v3 MobileNetV2 (21 Pascal VOC classes), the default model of the app
VOC_MODEL = "deeplabv3_mobilenetv2_voc"
#: the small model of the offline demo, trained on generated scenes (`models/train_demo_model.py`)
SCENES_MODEL = "demo_deeplabv3plus_mobilenet"
WEIGHTS_SUFFIX = ".safetensors"
CARD_SUFFIX = ".json"


def _folder() -> Traversable:
    return resources.files(__name__)


def bundled_models() -> list[str]:
    """Names of the bundled models (their `.safetensors` files without the suffix), sorted."""
    return sorted(entry.name[: -len(WEIGHTS_SUFFIX)] for entry in _folder().iterdir()
                  if entry.name.endswith(WEIGHTS_SUFFIX) and entry.is_file())


def _entry(name: str, suffix: str) -> Traversable:
    if name not in bundled_models():  # also refuses names such as "../x"
        raise LookupError(f"no bundled model named {name!r} (bundled: {', '.join(bundled_models()) or 'none'})")
    return _folder() / f"{name}{suffix}"


@contextmanager
def bundled_model_path(name: str) -> Iterator[Path]:
    """A file system path to the weights of bundled model `name` while the context is open
    (the file itself in a normal install; a temporary copy when the package is zipped)."""
    with resources.as_file(_entry(name, WEIGHTS_SUFFIX)) as path:
        yield Path(path)


def model_card(name: str) -> dict:
    """The model card (`<name>.json`) of bundled model `name`; LookupError when there is none."""
    card = _entry(name, CARD_SUFFIX)
    if not card.is_file():
        raise LookupError(f"bundled model {name!r} has no model card {name}{CARD_SUFFIX}")
    return json.loads(card.read_text(encoding="utf-8"))
