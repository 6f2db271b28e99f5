"""What every `predict` engine shares: one image's output files, their delivery through the
OutputGuard, the progress lines, and the plain in-process loop.

The plain loop and the Ray workers (`predict_ray`) both make an image's files with `Renderer`
and both hand them to `deliver`, so the two engines write the same bytes under the same rules.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from deeplab_studio.commands import CommandError
from deeplab_studio.commands.predict_outputs import RUN_ERRNOS, OutputGuard, plural


def describe_failure(path: Path, error: BaseException) -> str:
    """One line saying why `path` was skipped (storage errors already name the file)."""
    text, kind = str(error), type(error).__name__
    if text.startswith(str(path)):
        return text
    if isinstance(error, MemoryError):
        return f"{path}: out of memory" + (f" ({text})" if text else "")
    if text and isinstance(error, (ValueError, RuntimeError, OSError)):
        return f"{path}: {text}"
    return f"{path}: {kind}: {text}" if text else f"{path}: {kind}"  # an unexpected kind of error: name it


class Progress:
    """One stderr line per image with the running rate (successful images per second); keeps which
    images were written and which failed (for a shard's summary)."""

    def __init__(self, total: int, *, quiet: bool = False) -> None:
        self.total, self.quiet, self.done, self.failed = total, quiet, 0, 0
        self.written: list[Path] = []
        self.failures: dict[Path, str] = {}
        self._open_line = False  # a `tile k/n` line is on the terminal, not yet ended
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def rate(self) -> float:
        elapsed = self.elapsed()
        return (self.done - self.failed) / elapsed if elapsed > 0 else 0.0

    def tiles(self, path: Path) -> Callable[[int, int], None] | None:
        """A `Predictor.predict(progress=...)` callback: on a terminal, a `tile k/n` line that the
        next message overwrites, so a large tiled image is not minutes of silence."""
        stream = sys.stderr
        if self.quiet or not stream.isatty():
            return None

        def show(done: int, total: int) -> None:
            if total > 1:
                self._open_line = done < total
                end = "" if self._open_line else "\r\x1b[K"
                print(f"\r[{self.done + 1}/{self.total}] {path}: tile {done}/{total}{end}", end="", file=stream,
                      flush=True)
        return show

    def step(self, path: Path, error: BaseException | None = None) -> None:
        if self._open_line:  # a failure mid-image: clear its tile line first
            print("\r\x1b[K", end="", file=sys.stderr, flush=True)
            self._open_line = False
        self.done += 1
        if error is not None:
            self.failed += 1
            text = self.failures[path] = describe_failure(path, error)
            print(f"[{self.done}/{self.total}] skipped {text}", file=sys.stderr, flush=True)
            return
        self.written.append(path)
        if not self.quiet:
            print(f"[{self.done}/{self.total}] {path}  ({self.rate():.2f} images/s)", file=sys.stderr, flush=True)

    def summary(self, what: str) -> str:
        ok = self.done - self.failed
        text = f"{what} {ok} of {plural(self.total, 'image')} in {self.elapsed():.1f} s ({self.rate():.2f} images/s)"
        return text + (f"; {self.failed} failed (see 'skipped' above)" if self.failed else "")


class Renderer:
    """The model of `args` (loaded once) and what it makes of one image: the label PNG, then the
    probabilities and the overlay when `args` asks for them, in `output_files` order."""

    def __init__(self, args: argparse.Namespace, *, on_warning: Callable[[str], None] | None = None) -> None:
        from deeplab_studio import __version__
        from deeplab_studio.commands import predict

        self._npy, self._overlay = predict.npy_bytes, predict.overlay_jpeg
        self.probs, self.overlay = bool(args.save_probs), bool(args.overlay)
        self.predictor = predict.load_predictor(args, keep_probs=args.crf or self.probs, on_warning=on_warning)
        self.refine: Any = None
        if args.crf:  # the model card's CRF setting (ml.crf.model_crf), else the defaults
            from deeplab_studio.ml.crf import model_crf

            try:
                self.refine = model_crf(args.model)
            except ValueError as exc:
                raise CommandError(f"{args.model}: {exc}") from None
        self.palette = predict.model_palette(self.predictor)
        self.text = {"Software": f"deeplab-studio {__version__} predict"}

    def __call__(self, image: np.ndarray, progress: Callable[[int, int], None] | None = None) -> list[bytes]:
        from deeplab_studio.storage.labelmaps import encode_label_png

        pred = self.predictor.predict(image, progress=progress)
        labels = self.refine(image, pred.probs) if self.refine is not None else pred.labels
        data = [encode_label_png(labels, self.palette, text=self.text)]  # all made first: a failure writes nothing
        if self.probs:
            data.append(self._npy(pred.probs.astype(np.float16, copy=False)))
        if self.overlay:
            data.append(self._overlay(image, labels, self.palette))
        return data


def deliver(guard: OutputGuard, progress: Progress, path: Path, files: list[str],
            data: list[bytes] | BaseException) -> None:
    """Write one image's files (or report why there are none). A write that dooms every later one
    (a full disk, a read-only or over-quota file system) stops the run with a CommandError."""
    if isinstance(data, BaseException):
        progress.step(path, data)
        return
    try:
        for rel, blob in zip(files, data, strict=True):
            guard.write(rel, blob)
    except CommandError:
        raise
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno in RUN_ERRNOS:
            raise CommandError(f"{exc}; stopped after {progress.done} of "
                               f"{plural(progress.total, 'image')}") from None
        progress.step(path, exc)
        return
    progress.step(path)


def run_plain(items: list[Path], files: dict[Path, list[str]], guard: OutputGuard, render: Renderer,
              progress: Progress, *, decode_workers: int) -> None:
    """Predict `items` in this process, decoding ahead on `decode_workers` threads."""
    from deeplab_studio.ml.prefetch import prefetch_images
    from deeplab_studio.storage.images import read_image

    for path, image in prefetch_images(items, workers=decode_workers, read=read_image):
        if isinstance(image, Exception):
            progress.step(path, image)
            continue
        try:
            data: list[bytes] | BaseException = render(image, progress=progress.tiles(path))
        except CommandError:
            raise
        except Exception as exc:
            data = exc
        deliver(guard, progress, path, files[path], data)
