"""ONNX Runtime as the Predictor's CPU backend: the model exported once, cached, run in a session.

`load_onnx_forward(loaded)` returns an `OnnxForward`: a callable from normalised N×3×H×W float32
tensors to N×C×H×W float32 logits, which is what `Predictor(..., backend=...)` plugs in place of
the torch module (tiling, TTA, padding of tiny inputs and the out-of-memory steps stay the
Predictor's). `Predictor(loaded, backend="onnxruntime")` does this itself.

The ONNX file is cached under `cache_dir()` (`$DEEPLAB_STUDIO_CACHE/onnx`, else
`$XDG_CACHE_HOME/deeplab-studio/onnx` or `~/.cache/deeplab-studio/onnx`; `%LOCALAPPDATA%` on
Windows), named by the architecture, a digest of what defines the graph (module structure and
every weight: `onnx_export.graph_digest`, so the same weights from any file, folder or output
stride override share or separate entries correctly), the exporter, the opset and the torch
version. Only files of that pattern in that folder are written, always atomically.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import PredictionError
from .onnx_export import (DEFAULT_EXPORTER, DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, OnnxUnavailable, export_onnx,
                          graph_digest, module_of, require)

__all__ = ["CACHE_ENV", "OnnxForward", "OnnxUnavailable", "cache_dir", "cache_path", "default_threads",
           "load_onnx_forward"]

CACHE_ENV = "DEEPLAB_STUDIO_CACHE"


def cache_dir() -> Path:
    """The folder of cached ONNX exports (read at call time, so the environment may change)."""
    if os.environ.get(CACHE_ENV):
        base = Path(os.environ[CACHE_ENV])
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "deeplab-studio" / "cache"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "deeplab-studio"
    return base / "onnx"


def cache_path(model: Any, *, exporter: str = DEFAULT_EXPORTER, opset: int = DEFAULT_OPSET,
               folder: str | Path | None = None) -> Path:
    """Where the export of `model` (LoadedModel or nn.Module) is cached; it may not exist yet."""
    module = module_of(model)
    arch = str(getattr(module, "arch", type(module).__name__))
    version = torch.__version__.split("+")[0]
    name = f"{arch}-{graph_digest(module)[:20]}-{exporter}-opset{opset}-torch{version}.onnx"
    return Path(folder if folder is not None else cache_dir()) / name


def default_threads() -> int:
    """The cores this process may run on (all of them: batch work)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class OnnxForward:
    """Normalised N×3×H×W float32 images → N×C×H×W float32 logits in an ONNX Runtime CPU session.

    `threads` is the session's intra-op thread count (default: `default_threads()`). A failed
    allocation raises MemoryError (the Predictor then tries smaller tiles); any other runtime
    failure raises PredictionError. One call at a time per instance.
    """

    name = "onnxruntime"

    def __init__(self, model_file: str | Path | bytes, *, threads: int | None = None) -> None:
        require("onnxruntime")
        import onnxruntime as ort

        self.threads = int(threads) if threads else default_threads()
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: no optimiser chatter on stderr
        source = model_file if isinstance(model_file, bytes) else str(model_file)
        self.path = None if isinstance(model_file, bytes) else Path(model_file)
        self.session = ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        try:
            (out,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: array})
        except Exception as exc:  # noqa: BLE001 - onnxruntime's error types are not Python's
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "alloc" in first.lower():
                raise MemoryError(f"onnxruntime: {first}") from None
            raise PredictionError(f"onnxruntime: {first}") from None
        return torch.from_numpy(out)


def load_onnx_forward(model: Any, *, threads: int | None = None, exporter: str = DEFAULT_EXPORTER,
                      opset: int = DEFAULT_OPSET, folder: str | Path | None = None,
                      on_export: Callable[[str], None] | None = None) -> OnnxForward:
    """An `OnnxForward` for `model` (LoadedModel or nn.Module), exporting it into the cache first
    unless it is there (`on_export(message)` is told before a slow export starts).

    Raises OnnxUnavailable (with the pip command) when an [onnx] extra package is missing,
    before any work; OnnxExportError when the export fails.
    """
    require("onnxruntime", "onnx", *(("onnxscript",) if exporter == "dynamo" else ()))
    path = cache_path(model, exporter=exporter, opset=opset, folder=folder)
    if not path.is_file():
        if on_export is not None:
            on_export(f"exporting the model to ONNX once (cached as {path})")
        export_onnx(model, path, exporter=exporter, opset=opset)
        return OnnxForward(path, threads=threads)
    try:
        return OnnxForward(path, threads=threads)
    except Exception:  # noqa: BLE001 - a damaged cache entry (ours by its name): export it again
        if on_export is not None:
            on_export(f"the cached ONNX file {path} does not load; exporting the model again")
        export_onnx(model, path, exporter=exporter, opset=opset)
        return OnnxForward(path, threads=threads)
