"""Per-image model confidence: the maps of recent proposals, mean uncertainty of all (Qt-free).

Each proposal's per-pixel confidence (max softmax probability as uint8) is kept for the most
recent images (bounded memory); every image's mean uncertainty is kept and saved beside the
project so "next most uncertain image" works across sessions.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np

FILE_NAME = "uncertainty.json"


class UncertaintyStore:
    def __init__(self, max_maps: int = 16) -> None:
        self.max_maps = max_maps
        self._maps: OrderedDict[str, np.ndarray] = OrderedDict()
        self.mean: dict[str, float] = {}
        self.model: str | None = None  # the checkpoint whose proposals the means describe
        self._path: Path | None = None

    def bind(self, data_dir: str | Path | None) -> None:
        """Load (and later save) the mean uncertainties of the project in `data_dir`."""
        self._maps.clear()
        self.mean = {}
        self.model = None
        self._path = Path(data_dir) / FILE_NAME if data_dir is not None else None
        if self._path is not None and self._path.is_file():
            try:
                raw = json.loads(self._path.read_text(encoding="utf-8"))
                self.mean = {str(k): float(v) for k, v in raw.get("mean_uncertainty", {}).items()}
                self.model = raw.get("model")
            except (OSError, ValueError, AttributeError):
                self.mean, self.model = {}, None  # a damaged side file only loses the ordering hint

    def set_model(self, path: str) -> None:
        """Proposals now come from `path`: the means of another model's proposals are dropped,
        so the ranking never mixes models."""
        if path != self.model:
            self.mean = {}
            self._maps.clear()
            self.model = path
            self.save()

    def save(self) -> None:
        if self._path is None:
            return
        from deeplab_studio.storage.atomic import atomic_write_json

        try:
            atomic_write_json(self._path, {"version": 1, "model": self.model, "mean_uncertainty": self.mean})
        except OSError:
            pass  # the hint is recomputed by the next batch

    def put(self, key: str, confidence: np.ndarray) -> float:
        """Keep `confidence` (uint8 H×W) for `key`; returns its mean uncertainty in [0, 1]."""
        value = 1.0 - float(confidence.mean()) / 255.0
        self.mean[key] = value
        self._maps[key] = confidence
        self._maps.move_to_end(key)
        while len(self._maps) > self.max_maps:
            self._maps.popitem(last=False)
        return value

    def map(self, key: str) -> np.ndarray | None:
        return self._maps.get(key)

    def ranked(self, keys: list[str]) -> list[str]:
        """`keys` that have a known uncertainty, most uncertain first."""
        known = [k for k in keys if k in self.mean]
        return sorted(known, key=lambda k: -self.mean[k])


#: overlay colours to choose from, most preferred first
OVERLAY_COLORS: dict[tuple[int, int, int], str] = {
    (255, 0, 255): "magenta", (255, 255, 255): "white", (0, 255, 0): "green", (255, 90, 0): "orange",
    (0, 0, 255): "blue", (255, 0, 0): "red", (0, 255, 255): "cyan", (255, 255, 0): "yellow", (128, 0, 255): "violet"}


def contrasting_color(class_colors) -> tuple[int, int, int]:
    """The overlay colour farthest (RGB distance) from every class colour, so the uncertainty
    layer never looks like a class (magenta when no class colour is near it)."""
    used = np.asarray([tuple(c)[:3] for c in class_colors] or [(0, 0, 0)], np.float32)
    options = list(OVERLAY_COLORS)
    cands = np.asarray(options, np.float32)
    nearest = np.sqrt(((cands[:, None, :] - used[None, :, :]) ** 2).sum(-1)).min(axis=1)
    ok = np.flatnonzero(nearest >= 150.0)  # far enough: keep the preference order
    best = int(ok[0]) if ok.size else int(nearest.argmax())
    return options[best]


def uncertainty_overlay(confidence: np.ndarray, *, threshold: float = 0.9,
                        color: tuple[int, int, int] = (255, 0, 255)) -> np.ndarray:
    """RGBA uint8 H×W×4: `color` where confidence < `threshold`, more opaque where lower."""
    conf = confidence.astype(np.float32) / 255.0
    alpha = np.clip((threshold - conf) / max(threshold, 1e-6), 0.0, 1.0)
    out = np.zeros(confidence.shape + (4,), np.uint8)
    out[..., :3] = np.asarray(color, np.uint8)
    out[..., 3] = (alpha * 220.0).astype(np.uint8)
    return out
