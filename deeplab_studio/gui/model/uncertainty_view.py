"""What the user sees of the kept confidence maps: the canvas overlay and "next most uncertain".

Qt-free apart from what it is handed: the window link, the `UncertaintyStore`, whether the
overlay is switched on, and where status messages go.
"""

from __future__ import annotations

from collections.abc import Callable

from deeplab_studio.gui.model.uncertainty import OVERLAY_COLORS, UncertaintyStore, contrasting_color, uncertainty_overlay


class UncertaintyView:
    """Draws the current image's uncertainty and jumps to the least certain unreviewed image."""

    def __init__(self, link, store: UncertaintyStore, is_shown: Callable[[], bool],
                 message: Callable[[str], None]) -> None:
        self.link = link
        self.store = store
        self.is_shown = is_shown
        self.message = message

    def refresh(self) -> None:
        """Redraw the canvas's extra layer: the uncertainty overlay when it is on, else nothing."""
        doc = self.link.document()
        conf = self.store.map(doc.key) if doc is not None else None
        if self.is_shown() and conf is not None and conf.shape == doc.labels.shape:
            color = contrasting_color(doc.labelset.colors)  # never the colour of a class
            self.link.set_extra_overlay(uncertainty_overlay(conf, color=color))
            self.message(f"Uncertainty in {OVERLAY_COLORS[color]}: model under 90 % sure "
                         f"(mean {self.store.mean.get(doc.key, 0.0):.2f})")
        else:
            self.link.set_extra_overlay(None)
            if self.is_shown() and doc is not None:
                known = doc.key in self.store.mean
                self.message("Only the last proposals' confidence maps are kept: Ctrl+R recomputes this one."
                             if known else "No confidence for this image yet: auto-segment it first.")

    def next_most_uncertain(self) -> str | None:
        """Go to the image not yet reviewed whose proposal the model was least sure about."""
        doc = self.link.document()
        keys = [k for k in self.link.unreviewed_keys() if doc is None or k != doc.key]
        ranked = self.store.ranked(keys)
        if not ranked:
            self.message("No proposals with a known uncertainty left: run Auto-segment all first.")
            return None
        self.link.go_to(ranked[0])
        self.message(f"Most uncertain unreviewed image: {ranked[0]} "
                     f"(mean uncertainty {self.store.mean[ranked[0]]:.2f})")
        return ranked[0]
