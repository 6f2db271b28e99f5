"""Weight files in the torch hub cache: real downloads with a timeout and a hash check.

File names follow torch.hub's convention ``name-<sha256 prefix>.ext``. A download is hashed
while it streams and only moved into the cache when the prefix matches. A file already in the
cache is used without any network access; like ``torch.hub``, its hash is not re-checked
unless ``verify=True`` is passed.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import BinaryIO
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..core.atomic_file import write_atomic
from .errors import WeightsUnavailable  # noqa: F401 (also imported from here)

Progress = Callable[[int, int | None], None]
"""progress(bytes_done, bytes_total or None)"""

_HASH_PREFIX = re.compile(r"-([a-f0-9]+)\.")
_CHUNK = 1 << 20


def hub_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (read at call time, so TORCH_HOME may change)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_path(url: str) -> Path:
    """Where the file for ``url`` lives in the hub cache (it may not exist yet)."""
    return hub_checkpoint_dir() / os.path.basename(urlparse(url).path)


def expected_hash_prefix(path: str | Path) -> str | None:
    """The sha256 prefix encoded in a hub file name, or None when the name carries none."""
    match = _HASH_PREFIX.search(Path(path).name)
    return match.group(1) if match else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_hash(path: Path, digest: str) -> None:
    prefix = expected_hash_prefix(path)
    if prefix and not digest.startswith(prefix):
        raise WeightsUnavailable(
            f"{path.name}: sha256 {digest[:len(prefix)]}… does not match the expected {prefix}")


def _resolve(host: str, port: int, timeout: float) -> None:
    """Resolve ``host`` within ``timeout`` seconds (getaddrinfo itself has no timeout, and a
    broken resolver can block for a long time), else raise WeightsUnavailable."""
    result: list[BaseException | None] = []

    def worker() -> None:
        try:
            socket.getaddrinfo(host, port)
            result.append(None)
        except OSError as exc:
            result.append(exc)

    thread = threading.Thread(target=worker, name="resolve-" + host, daemon=True)
    thread.start()
    thread.join(timeout)
    if not result:
        raise WeightsUnavailable(f"cannot resolve {host} within {timeout:g} s (offline?)")
    if result[0] is not None:
        raise WeightsUnavailable(f"cannot resolve {host} ({result[0]}); no network?")


def download(url: str, *, progress: Progress | None = None, timeout: float = 10.0,
             verify: bool = False) -> Path:
    """Return the cached file for ``url``, downloading it first when it is not cached.

    Raises WeightsUnavailable quickly when offline (connect/read ``timeout`` seconds) or when
    the downloaded bytes fail the hash check; nothing partial is left in the cache.
    """
    dst = cached_path(url)
    if dst.is_file():
        if verify:
            check_hash(dst, sha256_of(dst))
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)  # where the offline message tells to put the file
    parts = urlparse(url)
    if parts.hostname:
        try:
            _resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), timeout)
        except WeightsUnavailable as exc:
            raise WeightsUnavailable(f"{exc} To work offline, fetch {url} elsewhere and put it at {dst}") from None
    try:
        response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (https URL)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsUnavailable(
            f"cannot download {url} ({reason}); no network? Put the file at {dst} to use it "
            "offline") from exc

    def stream(out: BinaryIO) -> None:  # hashed while it streams; a mismatch never reaches dst
        total = response.headers.get("Content-Length")
        total_n = int(total) if total and total.isdigit() else None
        digest, done = hashlib.sha256(), 0
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total_n)
        if total_n is not None and done != total_n:
            raise WeightsUnavailable(f"download of {url} stopped at {done} of {total_n} bytes")
        check_hash(dst, digest.hexdigest())

    try:
        with response:
            write_atomic(dst, stream)
    except WeightsUnavailable:
        raise
    except (OSError, TimeoutError) as exc:
        raise WeightsUnavailable(f"download of {url} failed: {exc}") from exc
    return dst
