"""The tile size a prediction can afford: the whole image when it fits a memory budget, else the
largest tiles that do (the tiled path keeps memory bounded whatever the image size).

The memory model, for an h×w input (or tile) on the device the network runs on::

    bytes(h, w) = h·w · (batch · s² · cost + 12·(1 + batch) + 4·C·(batch + 1)) + h·w · out

- ``cost``: the network's peak activation memory per input pixel, one fp32 image (its weights are
  already resident). It is a property of the architecture and output stride, measured as the
  slope of the allocator's peak between two input sizes (``measure_cost_per_pixel``): for the
  bundled ``deeplabv3_mobilenetv2_voc`` 330 B/px on the CPU (the same from 128² to 2048², and the
  process's peak RSS grows by 340 B/px from 1024² to 2048²). ``COST_PER_PIXEL`` holds the figures
  of every registered architecture (``benchmarks/bench_tile_budget.py --measure``: 160–544 B/px);
  on a GPU, or for a model not in it, the figure is measured once on first use.
- ``batch`` 2 with flip TTA (the image and its mirror run as one batch), ``s`` the largest TTA scale;
- 12·(1 + batch): the float input and its normalised copies; 4·C·(batch + 1): the C-class logits
  at input size and the averaged probabilities (counted in full although most are freed before
  the activation peak: the model errs towards smaller tiles);
- ``out``: bytes per image pixel of the full-size outputs when they share the device's memory (the
  CPU: uint8 labels, float32 confidence, C probabilities when kept); 0 for a GPU.

``tile_size_for`` solves it for the tile side; ``TileBudget`` applies it per image with the memory
available now (``available_bytes``: free GPU memory, or the host's MemAvailable and cgroup limit)
times a safety ``fraction``.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

#: bytes of peak activation memory per input pixel, fp32, batch 1, on the CPU: (arch, output
#: stride) → B/px, slopes between 512² and 768² measured by benchmarks/bench_tile_budget.py --measure
#: (torch 2.14, oneDNN; smaller inputs under-state the ResNets: 276 instead of 388 at 192²→320²)
COST_PER_PIXEL: dict[tuple[str, int], float] = {
    ("deeplabv3plus_resnet50", 16): 388.0, ("deeplabv3plus_resnet50", 8): 544.0,
    ("deeplabv3plus_resnet101", 16): 388.0, ("deeplabv3plus_resnet101", 8): 544.0,
    ("deeplabv3plus_mobilenet", 16): 303.0, ("deeplabv3plus_mobilenet", 8): 318.0,
    ("deeplabv3_resnet50", 16): 224.0, ("deeplabv3_resnet50", 8): 480.0,
    ("deeplabv3_resnet101", 16): 224.0, ("deeplabv3_resnet101", 8): 480.0,
    ("deeplabv3_mobilenet", 16): 249.0, ("deeplabv3_mobilenet", 8): 249.0,
    ("deeplabv3_mobilenet_v3_large", 16): 160.0,
    ("deeplabv3_mobilenetv2_tf", 16): 330.0, ("deeplabv3_mobilenetv2_tf", 8): 330.0,
    ("deeplabv3_mobilenetv2_tf_dm05", 16): 165.0, ("deeplabv3_mobilenetv2_tf_dm05", 8): 165.0,
}
#: the share of the available memory a prediction may plan to use (other programs, fragmentation)
DEFAULT_FRACTION = 0.5


def input_bytes_per_pixel(cost: float, *, channels: int, batch: int = 1, scale: float = 1.0) -> float:
    """Device bytes per input pixel of one forward and its outputs (the module's memory model)."""
    return batch * scale * scale * cost + 12.0 * (1 + batch) + 4.0 * channels * (batch + 1)


def output_bytes_per_pixel(channels: int, *, keep_probs: bool, probs_bytes: int = 4) -> float:
    """Bytes per image pixel of the full-size outputs: labels, confidence and (kept) probabilities."""
    return 1.0 + 4.0 + (channels * probs_bytes if keep_probs else 0.0)


def tile_size_for(height: int, width: int, *, channels: int, model_cost_per_pixel: float, budget_bytes: float,
                  batch: int = 1, scale: float = 1.0, output_bytes_per_pixel: float = 0.0, min_tile: int = 256,
                  multiple: int = 32) -> int | None:
    """None when a ``height``×``width`` image fits ``budget_bytes`` whole, else the tile side to use.

    Tiles are at most ``min(side, height)`` × ``min(side, width)``; the side is the largest
    multiple of ``multiple`` whose tile fits what the full-size outputs leave of the budget, and at
    least ``min_tile`` (then the budget is exceeded: the tiled path's out-of-memory fallback remains).
    """
    if height < 1 or width < 1 or budget_bytes <= 0 or model_cost_per_pixel <= 0:
        raise ValueError(f"need a positive size, budget and cost, got {height}×{width}, {budget_bytes}, "
                         f"{model_cost_per_pixel}")
    per_px = input_bytes_per_pixel(model_cost_per_pixel, channels=channels, batch=batch, scale=scale)
    left = budget_bytes - height * width * output_bytes_per_pixel
    if height * width * per_px <= left:
        return None
    short, long = min(height, width), max(height, width)
    pixels = max(0.0, left) / per_px  # the tile area that fits
    side = pixels / short if short * short <= pixels else math.sqrt(pixels)  # full-height strips, else squares
    side = int(side) // multiple * multiple
    return max(min_tile, min(side, long - 1))


# --- what memory there is -----------------------------------------------------------------------
def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def host_available_bytes() -> int | None:
    """Memory a new allocation can use without swapping: /proc/meminfo's MemAvailable, lowered to
    what the cgroup's limit leaves (containers); None where neither can be read."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    cg = Path("/sys/fs/cgroup")
    for limit, usage in ((cg / "memory.max", cg / "memory.current"),  # cgroup v2, then v1
                         (cg / "memory" / "memory.limit_in_bytes", cg / "memory" / "memory.usage_in_bytes")):
        lim, use = _read_int(limit), _read_int(usage)
        if lim is not None and use is not None and lim < 1 << 60:
            found.append(max(0, lim - use))
    return min(found) if found else None


def available_bytes(device: torch.device) -> int | None:
    """Memory free for a prediction on ``device``: CUDA's free memory plus what torch's caching
    allocator holds unused; the host's for the CPU; None when unknown (e.g. MPS)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        return host_available_bytes()
    return None


# --- measuring a network --------------------------------------------------------------------------
def peak_allocated_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak bytes allocated on ``device`` while ``fn()`` runs, over what was allocated before: CUDA's
    allocator statistics, or on the CPU the allocation events of torch's profiler."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def measure_cost_per_pixel(model: nn.Module, device: torch.device, *, sides: tuple[int, int] = (320, 512),
                           amp_dtype: torch.dtype | None = None, channels_last: bool = False) -> float:
    """The model's peak activation bytes per input pixel on ``device``: the slope of the peak between
    two square inputs (each run once before, so one-off buffers such as reordered weights do not count)."""
    peaks = []
    for side in sides:
        x = torch.zeros(1, 3, side, side, device=device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)

        def forward(x: torch.Tensor = x) -> None:
            amp = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
            with torch.inference_mode(), amp:
                model(x)

        forward()
        peaks.append(peak_allocated_bytes(forward, device))
    (a, b), (pa, pb) = sides, peaks
    return max(1.0, (pb - pa) / (b * b - a * a))


@dataclass
class TileBudget:
    """Per image: the tile side a Predictor can afford now (the image's longest side: whole).

    ``budget_bytes`` None: ``fraction`` of ``available_bytes(device)``, read per image (unknown:
    ``fallback_tile``). ``cost_per_pixel`` None: ``COST_PER_PIXEL`` for the model's arch and
    output stride on the CPU, else measured once (``measure_cost_per_pixel``) and kept.
    """

    budget_bytes: int | None = None
    fraction: float = DEFAULT_FRACTION
    cost_per_pixel: float | None = None
    min_tile: int = 256
    fallback_tile: int = 1024
    _measured: dict[tuple, float] = field(default_factory=dict, repr=False)

    def cost(self, model: nn.Module, device: torch.device, *, arch: str | None = None, output_stride: int | None = None,
             amp_dtype: torch.dtype | None = None, channels_last: bool = False) -> float:
        """Bytes per pixel of ``model``'s forward on ``device`` (given, tabled or measured once)."""
        if self.cost_per_pixel is not None:
            return float(self.cost_per_pixel)
        if device.type == "cpu" and (arch, output_stride) in COST_PER_PIXEL:
            return COST_PER_PIXEL[(arch, output_stride)]
        key = (id(model), str(device), amp_dtype, channels_last)
        if key not in self._measured:
            self._measured[key] = measure_cost_per_pixel(model, device, amp_dtype=amp_dtype, channels_last=channels_last)
        return self._measured[key]

    def tile_for(self, height: int, width: int, *, model: nn.Module, device: torch.device, channels: int,
                 batch: int = 1, scale: float = 1.0, keep_probs: bool = True, probs_bytes: int = 4,
                 **cost_kw: Any) -> int:
        """The tile side for a ``height``×``width`` image (its longest side when it runs whole)."""
        budget = self.budget_bytes
        if budget is None:
            free = available_bytes(device)
            if free is None:
                return min(self.fallback_tile, max(height, width))
            budget = int(free * self.fraction)
        out = output_bytes_per_pixel(channels, keep_probs=keep_probs, probs_bytes=probs_bytes) \
            if device.type == "cpu" else 0.0
        side = tile_size_for(height, width, channels=channels, budget_bytes=max(1, budget), batch=batch, scale=scale,
                             model_cost_per_pixel=self.cost(model, device, **cost_kw), output_bytes_per_pixel=out,
                             min_tile=self.min_tile)
        return max(height, width) if side is None else side
