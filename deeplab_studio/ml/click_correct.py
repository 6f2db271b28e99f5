"""Click to correct the model: a few clicks with a class adapt the network to this image.

f-BRS style (Sofiiuk et al., CVPR 2020, "feature backpropagating refinement"): the network is cut
late in its head (`ml.click_heads`: TF mobile v3 after its ASPP branches, DeepLab v3 and v3+
after the head's last 3×3 convolution, `cut="aspp"` for right after their ASPP); `set_image` runs
the network up to the cut once and caches the features there. Each `correct` optimises a per-channel scale and bias on those features with a
few Adam steps, from (1, 0), minimising

- the cross-entropy of each click's logits (read bilinearly off the logit grid, as the network's
  own upsampling reads them) onto the clicked class, for the clicks not yet won by `margin`;
- `stay` × the KL divergence from the original prediction on a regular sub-grid of `anchors`
  feature cells, so what nobody clicked stays as it was where it can;
- `reg` × the squared distance of the scale and bias from (1, 0).

It stops once every click is won by the margin (or after `steps`). Then the whole head runs once
on the modulated features and every pixel no human painted is re-proposed, so one click can fix
every region of the same kind; human pixels keep their labels (`core.merge.merge_proposal`).
A step evaluates the head only at the clicks' and anchors' cells (`HeadCut.cell_logits`), so its
cost does not grow with the image. The result depends only on the image and the clicks (no state
is carried from one click to the next).

>>> corrector = ClickCorrector(load_checkpoint(path))
>>> corrector.set_image(rgb)                       # backbone + ASPP once per image
>>> proposal = corrector.correct([(120, 80, 18)], labels, edit_mask)   # (x, y, class) clicks
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from deeplab_studio.core.merge import merge_proposal

from .cancel import Cancel, is_cancelled
from .click_heads import Cells, HeadCut, cut_network, supports
from .device import resolve_device
from .errors import PredictionCancelled
from .prediction import as_rgb

Click = tuple[int, int, int]  # x, y in image pixels, class
MIN_SIDE = 32  # the smallest side the network sees (as ml.predictor)


@dataclass
class CorrectionStats:
    """What the last `correct` did: optimiser steps run, clicks won, seconds."""

    steps: int = 0
    clicks: int = 0
    satisfied: int = 0
    seconds: float = 0.0


def work_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """The size the network sees: the longest side at most `max_side`, the shortest at least
    `MIN_SIDE` (aspect kept as far as both allow)."""
    scale = min(1.0, max_side / max(height, width))
    scale = max(scale, MIN_SIDE / min(height, width))
    return max(MIN_SIDE, round(height * scale)), max(MIN_SIDE, round(width * scale))


def inverse_lut(lut: np.ndarray | None, num_classes: int) -> dict[int, list[int]]:
    """Project class -> the model classes that map to it (identity without a `lut`)."""
    if lut is None:
        return {c: [c] for c in range(num_classes)}
    out: dict[int, list[int]] = {}
    for m in range(num_classes):
        out.setdefault(int(lut[m]), []).append(m)
    return out


class ClickCorrector:
    """Adapts one loaded model to one image's clicks (see the module docstring).

    `loaded` is an `ml.checkpoints.LoadedModel`. `steps` is the most Adam steps per `correct`,
    `lr` their learning rate, `reg` the weight of the pull back to the original features,
    `margin` the logit margin by which every click must win for an early stop, `max_side` the
    longest side the network sees (larger images are downscaled for the features; the proposal
    is at full size), `cut` where v3/v3+ networks are cut ("head": measured on the demo v3+ model
    over 8 scenes, the same mIoU after 1-4 clicks as "aspp" at 1/8 of the time per click).
    One corrector serves one thread at a time.
    """

    def __init__(self, loaded, *, device: str | torch.device = "cpu", steps: int = 30, lr: float = 0.02,
                 reg: float = 1e-3, stay: float = 1.0, anchors: int = 256, margin: float = 1.0,
                 max_side: int = 1024, cut: str = "head") -> None:
        model = getattr(loaded, "model", None)
        if model is None or not supports(model):
            what = type(model).__name__ if model is not None else type(loaded).__name__
            raise TypeError(f"click correction needs a loaded DeepLab checkpoint, not a {what}")
        if steps < 0 or lr <= 0 or reg < 0 or max_side < MIN_SIDE:
            raise ValueError(f"need steps >= 0, lr > 0, reg >= 0, max_side >= {MIN_SIDE}")
        self.loaded = loaded
        self.num_classes = int(loaded.num_classes)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.steps, self.lr, self.reg, self.stay = int(steps), float(lr), float(reg), float(stay)
        self.anchors, self.margin, self.max_side = int(anchors), float(margin), int(max_side)
        self.cut = cut
        self._mean = torch.tensor(loaded.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(loaded.std, device=self.device).view(1, 3, 1, 1) * 255.0
        self._cut: HeadCut | None = None
        self._shape: tuple[int, int] | None = None
        self.stats = CorrectionStats()

    # --- image -------------------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int] | None:
        """(height, width) of the image `set_image` was given (None before)."""
        return self._shape

    def set_image(self, rgb: np.ndarray) -> None:
        """Run the network up to its cut on `rgb` (uint8 H×W×3) once and keep the features there."""
        rgb = as_rgb(rgb)
        height, width = rgb.shape[:2]
        x = torch.from_numpy(np.array(rgb, order="C")).to(self.device).permute(2, 0, 1)[None].float()
        x = (x - self._mean) / self._std
        size = work_size(height, width, self.max_side)
        if size != (height, width):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        self._cut = None  # a failure below leaves no stale features behind
        with torch.no_grad():
            self._cut = cut_network(self.model, x, self.cut)
        self._shape = (height, width)

    # --- correction --------------------------------------------------------------------------
    def correct(self, clicks: Sequence[Click], labels: np.ndarray, edit_mask: np.ndarray, *,
                cancel: Cancel = None, lut: np.ndarray | None = None) -> np.ndarray:
        """The proposal (uint8 H×W) after adapting to `clicks`: every pixel where `edit_mask` is
        False is re-proposed, human pixels keep `labels`.

        `clicks` are (x, y, class) in image pixels, every click of this image so far; a class of
        255 (ignore) constrains nothing. With `lut` (model class -> label value, 256 entries)
        click classes are label values (a click wants any model class mapping to it) and the
        proposal is mapped through it. `cancel` is checked between steps (PredictionCancelled).
        """
        if self._cut is None or self._shape is None:
            raise RuntimeError("set_image first")
        labels, edit_mask = np.asarray(labels), np.asarray(edit_mask, dtype=bool)
        if labels.shape != self._shape or edit_mask.shape != self._shape:
            raise ValueError(f"labels {labels.shape} and edit mask {edit_mask.shape} must match the image "
                             f"{self._shape}")
        t0 = time.perf_counter()
        targets = self._targets(list(clicks), lut)
        scale, bias, steps, won = self._optimise(targets, cancel)
        proposal = self._propose(scale, bias, cancel)
        if lut is not None:
            proposal = np.asarray(lut, dtype=np.uint8)[proposal]
        self.stats = CorrectionStats(steps, len(targets), won, time.perf_counter() - t0)
        return merge_proposal(labels, edit_mask, proposal)

    def _targets(self, clicks: list[Click], lut: np.ndarray | None) -> list[tuple[float, float, torch.Tensor]]:
        """(feature row, feature column, class mask) of every click that constrains something."""
        height, width = self._shape
        h, w = self._cut.grid
        wanted = inverse_lut(lut, self.num_classes)
        out = []
        for x, y, cls in clicks:
            if not (0 <= x < width and 0 <= y < height):
                raise ValueError(f"click ({x}, {y}) is outside the {width}×{height} image")
            if int(cls) == 255:
                continue
            models = wanted.get(int(cls))
            if not models:
                raise ValueError(f"class {cls} is not one the model can predict")
            mask = torch.zeros(self.num_classes, dtype=torch.bool, device=self.device)
            mask[models] = True
            if self._cut.align_corners:  # where the network's resize takes pixel (x, y) from
                fy = y * (h - 1) / max(height - 1, 1)
                fx = x * (w - 1) / max(width - 1, 1)
            else:
                fy = (y + 0.5) * h / height - 0.5
                fx = (x + 0.5) * w / width - 0.5
            out.append((min(max(fy, 0.0), h - 1.0), min(max(fx, 0.0), w - 1.0), mask))
        return out

    def _click_logits(self, scale: torch.Tensor, bias: torch.Tensor, cells: Cells, weights: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N×K logits at the clicks, bilinear between their four nearest feature cells;
        M×K logits at the anchor cells), in one batched head evaluation."""
        logits = self._cut.cell_logits(cells, scale, bias)
        n = weights.shape[0]
        at_clicks = (logits[: 4 * n].view(n, 4, -1) * weights[:, :, None]).sum(dim=1)
        return at_clicks, logits[4 * n :]

    def _anchors(self) -> torch.Tensor:
        """M×2 (row, column) cells on a regular sub-grid: where the prediction should stay."""
        h, w = self._cut.grid
        step = max(1, math.ceil(math.sqrt(h * w / self.anchors)))
        ys = torch.arange(step // 2, h, step, device=self.device)
        xs = torch.arange(step // 2, w, step, device=self.device)
        return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).view(-1, 2)

    def _corners(self, targets) -> tuple[torch.Tensor, torch.Tensor]:
        """N×4×2 cells around each click and their N×4 bilinear weights."""
        h, w = self._cut.grid
        cells, weights = [], []
        for fy, fx, _mask in targets:
            y0, x0 = min(math.floor(fy), h - 1), min(math.floor(fx), w - 1)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            ty, tx = fy - y0, fx - x0
            cells.append([(y0, x0), (y0, x1), (y1, x0), (y1, x1)])
            weights.append([(1 - ty) * (1 - tx), (1 - ty) * tx, ty * (1 - tx), ty * tx])
        return (torch.tensor(cells, dtype=torch.long, device=self.device),
                torch.tensor(weights, dtype=torch.float32, device=self.device))

    def _optimise(self, targets, cancel: Cancel) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        c = self._cut.channels
        scale, bias = torch.ones(c, device=self.device), torch.zeros(c, device=self.device)
        if not targets:
            return scale, bias, 0, 0
        masks = torch.stack([m for _fy, _fx, m in targets])
        corners, weights = self._corners(targets)
        anchors = self._anchors()
        cells = self._cut.gather(torch.cat([corners[:, :, 0].reshape(-1), anchors[:, 0]]),
                                 torch.cat([corners[:, :, 1].reshape(-1), anchors[:, 1]]))
        scale.requires_grad_(True)
        bias.requires_grad_(True)
        opt = torch.optim.Adam([scale, bias], lr=self.lr)
        steps, won = 0, 0
        with _frozen(self.model):
            with torch.no_grad():
                _, original = self._click_logits(scale, bias, cells, weights)
                original = original.log_softmax(dim=1)
            for steps in range(self.steps + 1):
                if is_cancelled(cancel):
                    raise PredictionCancelled("click correction cancelled")
                at_clicks, at_anchors = self._click_logits(scale, bias, cells, weights)
                inside = at_clicks.masked_fill(~masks, -math.inf).logsumexp(dim=1)
                outside = at_clicks.masked_fill(masks, -math.inf).amax(dim=1)
                lost = inside - outside < self.margin
                won = len(targets) - int(lost.sum())
                if won == len(targets) or steps == self.steps:
                    break
                # cross-entropy onto each click's classes, for the clicks not yet won by the margin
                loss = ((at_clicks.logsumexp(dim=1) - inside) * lost).sum() / len(targets)
                stay = F.kl_div(at_anchors.log_softmax(dim=1), original, log_target=True, reduction="batchmean")
                loss = loss + self.stay * stay + self.reg * (((scale - 1) ** 2).mean() + (bias ** 2).mean())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return scale.detach(), bias.detach(), steps, won

    def _propose(self, scale: torch.Tensor, bias: torch.Tensor, cancel: Cancel) -> np.ndarray:
        """Argmax labels (uint8 H×W, model classes) of the modulated head, resized as the network
        resizes its logits, in bands of rows (memory: one band of full-width logits)."""
        height, width = self._shape
        with torch.no_grad():
            logits = self._cut.logits(scale, bias)[0].float()  # K×h×w
            out = np.empty((height, width), np.uint8)
            k, h, w = logits.shape
            band = max(1, (32 << 20) // (4 * k * width))
            align = self._cut.align_corners
            gx = _grid(width, w, align, self.device)
            for y0 in range(0, height, band):
                if is_cancelled(cancel):
                    raise PredictionCancelled("click correction cancelled")
                y1 = min(height, y0 + band)
                gy = _grid(height, h, align, self.device, y0, y1)
                grid = torch.stack((gx[None, :].expand(len(gy), -1), gy[:, None].expand(-1, width)), dim=-1)
                up = F.grid_sample(logits[None], grid[None], mode="bilinear", padding_mode="border",
                                   align_corners=align)
                out[y0:y1] = up[0].max(dim=0).indices.to(torch.uint8).cpu().numpy()  # max: 3x argmax's speed
        return out


def _grid(size: int, cells: int, align_corners: bool, device: torch.device, start: int = 0,
          stop: int | None = None) -> torch.Tensor:
    """Normalised sampling positions of output pixels `start..stop` along one axis, so that
    `grid_sample` reproduces `F.interpolate(..., mode="bilinear", align_corners=align_corners)`."""
    stop = size if stop is None else stop
    pos = torch.arange(start, stop, dtype=torch.float32, device=device)
    if align_corners:
        return pos * (2 / max(size - 1, 1)) - 1 if cells > 1 else torch.zeros_like(pos)
    return (pos + 0.5) * (2 / size) - 1


class _frozen:
    """Turns off gradients for a model's parameters while the scale and bias are optimised (the
    model may be shared with a Predictor: the flags are restored afterwards)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.flags: list[tuple[torch.nn.Parameter, bool]] = []

    def __enter__(self) -> None:
        self.flags = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in self.flags:
            p.requires_grad_(False)

    def __exit__(self, *_exc) -> None:
        for p, flag in self.flags:
            p.requires_grad_(flag)


__all__ = ["Click", "ClickCorrector", "CorrectionStats", "inverse_lut", "work_size"]
