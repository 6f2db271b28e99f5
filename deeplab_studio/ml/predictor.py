"""Run a segmentation model on whole images: tiling, TTA, out-of-memory fallback.

`Predictor(loaded_or_model).predict(image)` turns a uint8 H×W×3 RGB image into per-class
probabilities at full image size, argmax labels and per-pixel confidence. Images larger than
`tile_size` run in overlapping tiles that cross-fade in the middle of each overlap (or are
downscaled first, per `large_image`); each block is written out as soon as no later tile has
weight there (`ml.prediction.stitch_tiles`), so memory beyond the outputs is one tile plus the
cross-fade strips, never all tiles. The model is moved to its device (`ml.device`) once and
reused. The network's forward is pluggable (`backend`): torch (default) or ONNX Runtime on the
CPU (`ml.onnx_backend`), with the same tiling and TTA. Inputs with a side under `MIN_SIDE` pixels
(a 2×300 strip, a 1×1 icon) are edge-padded to `MIN_SIDE` for the network and the result is
cropped back, so tiny images just work.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deeplab_studio.ml.augment import IMAGENET_MEAN, IMAGENET_STD
from deeplab_studio.ml.prefetch import prefetch_images

from .cancel import Cancel, is_cancelled
from .device import empty_cache, is_oom, resolve_device
from .errors import DeviceError, PredictionCancelled, PredictionError  # noqa: F401 (also imported from here)
from .prediction import FullSizeOutputs, Prediction, as_rgb, softmax_, stitch_tiles, upsample_rows
from .tile_budget import TileBudget

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MIN_SIDE", "MS_SCALES", "PAPER_MS_SCALES", "TTA_SCALES", "DeviceError",
           "Prediction", "PredictionCancelled", "PredictionError", "Predictor", "PredictorWarning", "as_rgb",
           "resolve_device"]

MS_SCALES = (0.75, 1.0, 1.25)
PAPER_MS_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # DeepLab v3+ paper, Table 3 (MS); ~3× the time of "ms"
TTA_SCALES = {None: (1.0,), "flip": (1.0,), "ms": MS_SCALES, "ms-paper": PAPER_MS_SCALES}
#: the smallest side the network sees: smaller inputs are edge-padded to it and the output cropped back
#: (MobileNet backbones fail under 3 px; 32 px gives at least 2×2 features at output stride 16)
MIN_SIDE = 32

class PredictorWarning(UserWarning):
    """A degraded run: smaller tiles or the CPU after an out-of-memory error."""


def _check_cancel(cancel: Cancel) -> None:
    if is_cancelled(cancel):
        raise PredictionCancelled("prediction cancelled")


class Predictor:
    """Segment images with one model on one device.

    `model` is a `LoadedModel` (from `ml.checkpoints.load_checkpoint`; its normalisation and
    class count are used) or any `nn.Module` whose forward maps N×3×H×W normalised images to
    N×C×H×W logits (a dict with "out", as torchvision returns, is accepted).

    - `tile_size`, `tile_overlap` (default `tile_size // 8`): images with a side over `tile_size`
      run in overlapping tiles. "auto" (or a `ml.tile_budget.TileBudget`): per image, whole when it
      fits the memory free on the device (half of it), else the largest tiles that do.
    - `large_image`: "tile" (default) or "downscale" — shrink the image so its longest side is
      `max_side` (default `tile_size`), predict, and resize the probabilities back.
    - `tta`: None, "flip" (average with the mirrored image), "ms" (scales `scales`, default
      0.75/1/1.25, each with flip) or "ms-paper" (the paper's 0.5/0.75/.../1.75, each with flip);
      softmax outputs are averaged.
    - `probs_dtype`: float32 or float16 for `Prediction.probs`; `keep_probs=False` returns none
      (labels and confidence only), which is what very large images need.
    - On CUDA: autocast (`amp` "auto" = bf16 where supported, else fp16; None to disable) and
      channels_last.
    - `backend`: "torch" (default); "onnxruntime" — the model exported to ONNX once (cached,
      `ml.onnx_backend`) and run on the CPU in `threads` intra-op threads (default: all cores),
      which needs a LoadedModel or nn.Module and the [onnx] extra (OnnxUnavailable otherwise); or
      any callable mapping normalised N×3×H×W float32 CPU tensors to N×C×H×W logits. A backend
      other than torch runs on the CPU (device "auto" or "cpu").
    - Out of memory → the tile size halves (down to `min_tile_size`), then the model moves to
      the CPU; each step is reported through `on_warning` or `warnings.warn`.

    One Predictor serves one thread at a time (the GUI's inference worker owns it).
    """

    def __init__(
        self,
        model: Any,
        *,
        device: str | torch.device = "auto",
        tile_size: int | str | TileBudget = 1024,
        tile_overlap: int | None = None,
        large_image: str = "tile",
        max_side: int | None = None,
        tta: str | None = None,
        scales: Iterable[float] | None = None,
        probs_dtype: Any = np.float32,
        keep_probs: bool = True,
        mean: Iterable[float] | None = None,
        std: Iterable[float] | None = None,
        amp: str | None = "auto",
        min_tile_size: int = 256,
        on_warning: Callable[[str], None] | None = None,
        backend: str | Callable[[torch.Tensor], torch.Tensor] = "torch",
        threads: int | None = None,
    ) -> None:
        module = model if isinstance(model, nn.Module) else getattr(model, "model", None)
        if not isinstance(module, nn.Module):
            raise TypeError(f"expected an nn.Module or a loaded checkpoint, got {type(model).__name__}")
        self.loaded = None if model is module else model
        self.num_classes: int | None = getattr(self.loaded, "num_classes", None)
        self.class_names = getattr(self.loaded, "class_names", None)
        self.class_colors = getattr(self.loaded, "class_colors", None)
        mean = mean if mean is not None else getattr(self.loaded, "mean", None) or IMAGENET_MEAN
        std = std if std is not None else getattr(self.loaded, "std", None) or IMAGENET_STD
        self._mean_std = (tuple(float(v) for v in mean), tuple(float(v) for v in std))
        if len(self._mean_std[0]) != 3 or len(self._mean_std[1]) != 3 or min(self._mean_std[1]) <= 0:
            raise ValueError(f"mean/std need 3 values each (std > 0), got {mean!r} / {std!r}")

        self.tile_budget = TileBudget() if tile_size == "auto" else tile_size if isinstance(tile_size, TileBudget) else None
        tile_size = 1024 if self.tile_budget is not None else tile_size
        tile_overlap = tile_size // 8 if tile_overlap is None else tile_overlap
        if tile_size < 32 or tile_overlap < 0 or tile_overlap >= tile_size:
            raise ValueError(f"need tile_size >= 32 and 0 <= tile_overlap < tile_size, got {tile_size}/{tile_overlap}")
        if large_image not in ("tile", "downscale"):
            raise ValueError(f"large_image must be 'tile' or 'downscale', not {large_image!r}")
        if tta not in TTA_SCALES:
            raise ValueError(f"tta must be None, 'flip', 'ms' or 'ms-paper', not {tta!r}")
        if amp not in (None, False, "auto", "fp16", "bf16"):
            raise ValueError(f"amp must be 'auto', 'fp16', 'bf16' or None, not {amp!r}")
        self.tile_size, self.tile_overlap, self.min_tile_size = int(tile_size), int(tile_overlap), int(min_tile_size)
        self.large_image = large_image
        self.max_side = int(max_side) if max_side else self.tile_size
        self.tta = tta
        self.scales = tuple(scales) if scales is not None else TTA_SCALES[tta]
        self.flip = tta is not None
        self.probs_dtype = torch.float16 if np.dtype(probs_dtype) == np.float16 else torch.float32
        if np.dtype(probs_dtype) not in (np.float16, np.float32):
            raise ValueError(f"probs_dtype must be float32 or float16, not {probs_dtype!r}")
        self.keep_probs = keep_probs
        self.amp = amp
        self.on_warning = on_warning
        self.model = module.eval()
        self.backend, self._net = self._make_backend(backend, threads)
        #: intra-op threads of an ONNX Runtime backend (None for torch, which uses torch's setting)
        self.threads: int | None = getattr(self._net, "threads", None)
        if self._net is not None:
            if resolve_device(device).type != "cpu" and str(device) != "auto":
                raise DeviceError(f"the {self.backend} backend runs on the CPU, not on {device}")
            device = "cpu"
        self._move_to(resolve_device(device))

    def _make_backend(self, backend: Any, threads: int | None) -> tuple[str, Callable[[torch.Tensor], Any] | None]:
        if backend == "torch":
            return "torch", None
        if backend == "onnxruntime":
            from .onnx_backend import load_onnx_forward

            return "onnxruntime", load_onnx_forward(self.loaded or self.model, threads=threads)
        if callable(backend) and not isinstance(backend, str):
            return str(getattr(backend, "name", type(backend).__name__)), backend
        raise ValueError(f"backend must be 'torch', 'onnxruntime' or a callable, not {backend!r}")

    # --- device ----------------------------------------------------------------------------
    def _move_to(self, device: torch.device) -> None:
        self.device = device
        cuda = device.type == "cuda"
        self._channels_last = cuda
        if cuda and self.amp == "auto":
            self._amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif cuda and self.amp in ("fp16", "bf16"):
            self._amp_dtype = torch.float16 if self.amp == "fp16" else torch.bfloat16
        else:
            self._amp_dtype = None
        if self._net is not None:
            pass  # the backend runs the network; the torch module is not needed on a device
        elif cuda:
            self.model.to(device, memory_format=torch.channels_last)
        else:
            self.model.to(device)
        mean, std = self._mean_std
        self._mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0

    def _warn(self, message: str) -> None:
        if self.on_warning is not None:
            self.on_warning(message)
        else:
            warnings.warn(message, PredictorWarning, stacklevel=3)

    # --- public API ------------------------------------------------------------------------
    def predict(self, image: np.ndarray, *, cancel: Cancel = None,
                progress: Callable[[int, int], None] | None = None) -> Prediction:
        """Probabilities, labels and confidence for one uint8 H×W×3 RGB image.

        `cancel` (a callable returning True, or a `threading.Event`) is checked between tiles;
        when set, `PredictionCancelled` is raised. `progress(done, total)` is called after each tile.
        """
        image = as_rgb(image)
        while True:
            try:
                with torch.inference_mode():
                    return self._run(image, cancel, progress)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled here
                if not is_oom(exc):
                    raise
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            self._recover_from_oom(image, reason)  # outside `except`: the failed tensors are freed

    def predict_many(
        self, paths: Iterable[str | Path], *, read: Callable[[Path], np.ndarray], decode_workers: int = 1,
        cancel: Cancel = None,
    ) -> Iterator[tuple[Path, Prediction | Exception]]:
        """Yield `(path, Prediction or the error)` for each image, in order.

        `read` decodes one file (e.g. `storage.images.read_image`). Images are decoded
        `decode_workers` threads ahead (0 = on this thread), so the model does not wait for
        decoding; an unreadable image yields its error and the rest go on.
        """
        for path, item in prefetch_images(paths, workers=decode_workers, read=read):
            _check_cancel(cancel)
            if isinstance(item, Exception):
                yield path, item
                continue
            try:
                result: Prediction | Exception = self.predict(item, cancel=cancel)
            except (ValueError, PredictionError) as exc:
                result = exc
            yield path, result

    # --- internals -------------------------------------------------------------------------
    def _work_side(self, image: np.ndarray) -> int:
        side = max(image.shape[:2])
        if self.large_image == "downscale":
            side = min(side, self.max_side)
        return min(side, self.tile_size)

    def _recover_from_oom(self, image: np.ndarray, reason: str) -> None:
        empty_cache(self.device)
        side = self._work_side(image)
        self.tile_budget = None  # the budget was too hopeful: fixed, halving tiles from here on
        if side > self.min_tile_size:
            self.tile_size = max(self.min_tile_size, side // 2)
            self.tile_overlap = min(self.tile_overlap, self.tile_size // 4)
            self._warn(f"out of memory on {self.device} ({reason}); retrying with {self.tile_size}px tiles")
        elif self.device.type != "cpu":
            old = self.device
            self._move_to(torch.device("cpu"))
            self._warn(f"out of memory on {old} even with {side}px tiles ({reason}); continuing on the CPU")
        else:
            h, w = image.shape[:2]
            raise PredictionError(f"out of memory on the CPU even with {side}px tiles for a {w}×{h} image ({reason}); "
                                  "float16 or no probabilities (probs_dtype, keep_probs) need less")

    def _run(self, image: np.ndarray, cancel: Cancel, progress: Callable[[int, int], None] | None) -> Prediction:
        height, width = image.shape[:2]
        if self.tile_budget is not None and self.large_image == "tile":
            self.tile_size = self._budget_tile(height, width)
            self.tile_overlap = self.tile_size // 8
        if self.large_image == "downscale" and max(height, width) > self.max_side:
            from PIL import Image

            scale = self.max_side / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small_image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
            small = torch.from_numpy(self._tiled(small_image, cancel, progress, keep_probs=True,
                                                 dtype=torch.float32).probs)
            out = FullSizeOutputs(height, width, self.keep_probs, self.probs_dtype)
            band = max(1, (64 << 20) // (4 * small.shape[0] * width))  # ~64 MB of float32 per band
            for y0 in range(0, height, band):
                out.write(y0, upsample_rows(small, height, width, y0, min(height, y0 + band)))
            return out.result()
        return self._tiled(image, cancel, progress, keep_probs=self.keep_probs, dtype=self.probs_dtype)

    def _budget_tile(self, height: int, width: int) -> int:
        """The tile side the memory budget allows for this image now (its longest side: whole)."""
        assert self.tile_budget is not None
        return self.tile_budget.tile_for(
            height, width, model=self.model, device=self.device, channels=self.num_classes or 21,
            batch=2 if self.flip else 1, scale=max(self.scales), keep_probs=self.keep_probs,
            probs_bytes=self.probs_dtype.itemsize, arch=getattr(self.loaded, "arch", None),
            output_stride=getattr(self.loaded, "output_stride", None), amp_dtype=self._amp_dtype,
            channels_last=self._channels_last)

    def _tiled(self, image: np.ndarray, cancel: Cancel, progress: Callable[[int, int], None] | None, *,
               keep_probs: bool, dtype: torch.dtype) -> Prediction:
        out = FullSizeOutputs(image.shape[0], image.shape[1], keep_probs, dtype)
        return stitch_tiles(image, self._tile_probs, out, tile_size=self.tile_size, overlap=self.tile_overlap,
                            check=lambda: _check_cancel(cancel), progress=progress)

    def _tile_probs(self, tile: np.ndarray) -> torch.Tensor:
        """Softmax probabilities (C×h×w float32, on the device) for one tile, TTA averaged."""
        h, w = tile.shape[:2]
        if not (tile.flags.c_contiguous and tile.flags.writeable):
            tile = np.array(tile, order="C")
        x = torch.from_numpy(tile).to(self.device).permute(2, 0, 1)[None].float()
        x = (x - self._mean) / self._std
        total: torch.Tensor | None = None
        passes = 0
        for s in self.scales:
            xs = x
            if s != 1.0:
                size = (max(8, round(h * s)), max(8, round(w * s)))
                xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            batch = torch.cat([xs, xs.flip(-1)]) if self.flip else xs
            logits = self._forward(batch)
            if logits.shape[-2:] != (h, w):
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            probs = softmax_(logits)
            summed = probs[0] + probs[1].flip(-1) if self.flip else probs[0]
            total = summed if total is None else total + summed
            passes += 2 if self.flip else 1
        assert total is not None
        return total if passes == 1 else total.div_(passes)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×C×H×W float32 logits at the size of `x`; a side under `MIN_SIDE` is edge-padded (centred)
        for the network and cropped back."""
        h, w = x.shape[-2:]
        pad_h, pad_w = max(0, MIN_SIDE - h), max(0, MIN_SIDE - w)
        top, left = pad_h // 2, pad_w // 2
        if pad_h or pad_w:
            x = F.pad(x, (left, pad_w - left, top, pad_h - top), mode="replicate")
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self._net is not None:
            out = self._net(x)
        elif self._amp_dtype is not None:
            with torch.autocast(device_type=self.device.type, dtype=self._amp_dtype):
                out = self.model(x)
        else:
            out = self.model(x)
        if isinstance(out, dict):
            out = out["out"]
        elif isinstance(out, (tuple, list)):
            out = out[0]
        if out.ndim != 4 or out.shape[0] != x.shape[0]:
            raise PredictionError(f"the model returned shape {tuple(out.shape)}; expected N×C×H×W logits")
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
        if pad_h or pad_w:
            out = out[:, :, top : top + h, left : left + w]
        return out.float()
