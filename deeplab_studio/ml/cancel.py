"""The cancel hook of long ml jobs (prediction, CRF, training): ``core.cancel``'s, re-exported
under the name ml modules import it by."""

from __future__ import annotations

from deeplab_studio.core.cancel import Cancel, is_cancelled

__all__ = ["Cancel", "is_cancelled"]
