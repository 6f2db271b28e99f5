"""The proposal merge rule: human pixels win.

A model run or a CRF pass proposes a whole label map; every pixel a human painted (edit mask
True) keeps its label. This is the one place the rule is written; the session, the window's
workers and the CLI all call it.
"""

from __future__ import annotations

import numpy as np


def merge_proposal(labels: np.ndarray, edit_mask: np.ndarray, proposal: np.ndarray) -> np.ndarray:
    """A new uint8 label map: `proposal` where no human painted, `labels` where one did."""
    labels = np.asarray(labels)
    proposal = np.asarray(proposal)
    if proposal.shape != labels.shape or edit_mask.shape != labels.shape:
        raise ValueError(f"the proposal is {proposal.shape[1]}×{proposal.shape[0]}, "
                         f"the image is {labels.shape[1]}×{labels.shape[0]}")
    return np.where(edit_mask, labels, proposal).astype(np.uint8, copy=False)
