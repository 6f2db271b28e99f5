"""`predict --engine ray`: the plain engine's Renderer in a pool of Ray actors, fed by Ray Data.

The file list becomes a Ray Dataset of (index, path) rows; `map_batches` sends them, one image per
batch, to a fixed pool of `ImageWorker` actors (`--workers`, `--cpus-per-worker`,
`--gpus-per-worker`), each holding the model once. A worker decodes its image by path (the inputs
must be readable where the workers run), predicts it and returns the bytes of its files; the
driver writes them through the run's OutputGuard, so the safety rules, the manifest and the
report are those of a plain run. `--address` joins a running cluster; otherwise a local one is
started for the run and shut down at its end. Ray is imported only here (the extra `[ray]`).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from deeplab_studio.commands import CommandError
from deeplab_studio.commands.predict_engine import (
    Progress,
    Renderer,
    deliver,
    describe_failure,
)
from deeplab_studio.commands.predict_outputs import OutputGuard

FILES = 3  # the most files one image has: the label PNG, the probabilities, the overlay
BLOCKS = 1000  # the most Ray Data blocks the file list is cut into (the unit of work stealing)


def _ray() -> Any:
    try:
        import ray
        import ray.data  # Ray Data is in the extra ray[data], not in plain ray
    except ImportError as exc:
        raise CommandError(f"--engine ray needs Ray: pip install 'deeplab-studio[ray]' (or 'ray[data]'); {exc}") \
            from None
    return ray


def check_options(args: argparse.Namespace) -> None:
    """CommandError for options Ray cannot run, and if Ray is not installed."""
    if args.workers < 1:
        raise CommandError(f"--workers must be at least 1, not {args.workers}")
    if args.cpus_per_worker <= 0 or args.gpus_per_worker < 0:
        raise CommandError("--cpus-per-worker must be above 0 and --gpus-per-worker at least 0")
    if args.gpus_per_worker > 0 and (args.device == "cpu" or args.backend != "torch"):
        raise CommandError("--gpus-per-worker needs --device auto or cuda and --backend torch")
    if args.gpus_per_worker == 0 and args.device not in ("auto", "cpu"):
        raise CommandError(f"--device {args.device} with --engine ray: give the workers GPUs (--gpus-per-worker)")
    _ray()


class RemoteFailure(Exception):
    """A worker's report of why an image failed (already one line naming the file)."""


class ImageWorker:
    """A Ray actor: the model of the run's options, loaded once; each batch's images by path in,
    the bytes of their files (in `output_files` order) out."""

    def __init__(self, options: dict[str, Any]) -> None:
        import torch

        args = argparse.Namespace(**options)
        if args.device == "auto":  # the devices Ray gave this actor, not the node's
            args.device = "cuda" if args.gpus_per_worker > 0 else "cpu"
        args.threads = max(1, round(args.cpus_per_worker))  # the CPUs Ray reserved, for torch and ONNX Runtime
        torch.set_num_threads(args.threads)
        self.warnings: list[str] = []
        self.render = Renderer(args, on_warning=self.warnings.append)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from deeplab_studio.storage.images import read_image

        rows: dict[str, list[Any]] = {"index": [], "error": [], "warnings": []}
        rows |= {f"file{j}": [] for j in range(FILES)}
        for index, name in zip(batch["index"], batch["path"]):
            path = Path(str(name))
            try:
                data, error = self.render(read_image(path)), ""
            except Exception as exc:
                data, error = [], describe_failure(path, exc)
            rows["index"].append(int(index))
            rows["error"].append(error)
            rows["warnings"].append("\n".join(self.warnings))
            self.warnings.clear()
            for j in range(FILES):
                rows[f"file{j}"].append(data[j] if j < len(data) else b"")
        return {"index": np.asarray(rows["index"], dtype=np.int64)} | {
            key: np.asarray(values, dtype=object) for key, values in rows.items() if key != "index"}


def _start(ray: Any, args: argparse.Namespace) -> None:
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if args.address:
            ray.init(address=args.address, **quiet)
        else:
            need = math.ceil(args.workers * args.cpus_per_worker)
            # "local": a new cluster for this run, never one that RAY_ADDRESS or /tmp/ray points at
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, need), **quiet)
    except Exception as exc:
        where = f"join the Ray cluster at {args.address}" if args.address else "start a local Ray"
        hint = " (a cluster with token authentication needs RAY_AUTH_MODE=token and its token here too)" \
            if args.address else ""
        raise CommandError(f"--engine ray: cannot {where}: {str(exc).strip().splitlines()[-1]}{hint}") from None


def run_ray(args: argparse.Namespace, items: list[Path], files: dict[Path, list[str]], guard: OutputGuard,
            progress: Progress) -> None:
    """Predict `items` in Ray actors; write their files here, in the order they come back."""
    if not items:
        return
    ray = _ray()
    own = not ray.is_initialized()
    if own:
        _start(ray, args)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        rows = [{"index": i, "path": str(path)} for i, path in enumerate(items)]
        dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), BLOCKS)).map_batches(
            ImageWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(args.workers, len(rows))),
            num_cpus=args.cpus_per_worker, num_gpus=args.gpus_per_worker or None,
            fn_constructor_kwargs={"options": {key: value for key, value in vars(args).items()
                                               if isinstance(value, (str, int, float, bool, type(None)))}})
        for row in dataset.iter_rows():
            path = items[int(row["index"])]
            for line in filter(None, str(row["warnings"]).split("\n")):
                print(f"warning: {line}", file=sys.stderr, flush=True)
            n = len(files[path])
            data = RemoteFailure(row["error"]) if row["error"] else [bytes(row[f"file{j}"]) for j in range(n)]
            deliver(guard, progress, path, files[path], data)
    except ray.exceptions.RayError as exc:
        lines = str(exc).strip().splitlines()
        raise CommandError(f"--engine ray: the workers failed: {lines[-1] if lines else type(exc).__name__}; "
                           f"stopped after {progress.done} of {progress.total} images") from None
    finally:
        if own:
            ray.shutdown()
