"""The per-stroke journal: every finished edit survives a crash that comes before the next save.

Each change to an image's annotation (a stroke, a fill, an undo, a model proposal) appends one
record to `<data dir>/journal/<key>.jnl`: the pixels of the changed box *after* the change (label
values and edit-mask bits), the image's label revision, and a sequence number. The record is one
`write()` of an `O_APPEND` file, so once `append` returns the bytes belong to the operating system
and a killed process cannot lose them (no fsync per stroke: the next save, about a second later,
fsyncs the whole state).

A save records the last sequence number its snapshot contains (`journal_seq` in the index). On
open, records with a larger number are replayed over the saved state in order: since each holds
absolute "after" pixels, the result is the state the user last saw. Records are length-prefixed
and CRC-checked; a torn tail (a kill in the middle of `write`) ends the replay there.

The format is plain binary (no pickle): magic `DLSJ1\\n`, then records of
`<u32 length><u32 crc32>` + payload `<u64 seq><u32 label_rev><u32 x0 y0 x1 y1>` + zlib(label bytes)
length-prefixed + zlib(packed mask bits).
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"DLSJ1\n"
_HEAD = struct.Struct("<II")  # payload length, crc32 of payload
_BODY = struct.Struct("<QIIIIII")  # seq, label_rev, x0, y0, x1, y1, compressed label length


@dataclass(frozen=True)
class JournalEntry:
    """One journaled change: the box `bbox` holds `labels` and `mask` after it."""

    seq: int
    label_rev: int
    bbox: tuple[int, int, int, int]
    labels: np.ndarray  # uint8 h×w
    mask: np.ndarray  # bool h×w

    def apply(self, labels: np.ndarray, mask: np.ndarray) -> None:
        """Write the box into full-size arrays (boxes outside them are ignored)."""
        x0, y0, x1, y1 = self.bbox
        if x1 > labels.shape[1] or y1 > labels.shape[0]:
            return
        labels[y0:y1, x0:x1] = self.labels
        mask[y0:y1, x0:x1] = self.mask


def encode_entry(entry: JournalEntry) -> bytes:
    """One record (header + payload) of `entry`."""
    x0, y0, x1, y1 = entry.bbox
    lab = zlib.compress(np.ascontiguousarray(entry.labels, dtype=np.uint8).tobytes(), 1)
    bits = zlib.compress(np.packbits(np.asarray(entry.mask, dtype=bool), axis=None).tobytes(), 1)
    payload = _BODY.pack(entry.seq, entry.label_rev, x0, y0, x1, y1, len(lab)) + lab + bits
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def _decode_payload(payload: bytes) -> JournalEntry:
    seq, rev, x0, y0, x1, y1, nlab = _BODY.unpack_from(payload)
    if x1 <= x0 or y1 <= y0:
        raise ValueError("empty box")
    h, w = y1 - y0, x1 - x0
    start = _BODY.size
    labels = np.frombuffer(zlib.decompress(payload[start:start + nlab], bufsize=h * w), np.uint8)
    bits = np.frombuffer(zlib.decompress(payload[start + nlab:]), np.uint8)
    mask = np.unpackbits(bits, count=h * w).astype(bool)
    if labels.size != h * w or mask.size != h * w:
        raise ValueError("pixel data does not fit the box")
    return JournalEntry(seq, rev, (x0, y0, x1, y1), labels.reshape(h, w).copy(), mask.reshape(h, w))


def read_entries(path: str | Path) -> list[JournalEntry]:
    """The intact records of a journal file, in order (a torn or damaged tail is dropped)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    if not data.startswith(MAGIC):
        return []
    out: list[JournalEntry] = []
    pos = len(MAGIC)
    while pos + _HEAD.size <= len(data):
        length, crc = _HEAD.unpack_from(data, pos)
        payload = data[pos + _HEAD.size:pos + _HEAD.size + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            break
        try:
            out.append(_decode_payload(payload))
        except (ValueError, zlib.error, struct.error):
            break
        pos += _HEAD.size + length
    return out


class Journal:
    """The journal folder of one project (thread-safe; one writer process, see `project_lock`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._last: dict[str, int] = {}  # key -> last sequence number appended or known

    def file(self, key: str) -> Path:
        return self.folder / f"{key}.jnl"

    def keys(self) -> list[str]:
        """Keys that have a journal file."""
        try:
            return sorted(n[:-4] for n in os.listdir(self.folder) if n.endswith(".jnl"))
        except OSError:
            return []

    def last_seq(self, key: str, saved_seq: int = 0) -> int:
        """The sequence number of the newest change of `key` (what a save made now contains)."""
        with self._lock:
            return max(self._last.get(key, 0), saved_seq)

    def append(self, key: str, saved_seq: int, label_rev: int, bbox: tuple[int, int, int, int],
               labels: np.ndarray, mask: np.ndarray) -> int:
        """Journal a change of image `key` (pixels of `bbox` after it); returns its sequence number."""
        with self._lock:
            seq = max(self._last.get(key, 0), saved_seq) + 1
            record = encode_entry(JournalEntry(seq, label_rev, tuple(int(v) for v in bbox), labels, mask))
            path = self.file(key)
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size == 0:
                    record = MAGIC + record
                view = memoryview(record)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            self._last[key] = seq
            return seq

    def saved(self, key: str, seq: int) -> None:
        """A save containing every change up to `seq` is committed: drop the file if nothing newer."""
        with self._lock:
            if self._last.get(key, 0) <= seq:
                self._last[key] = max(self._last.get(key, 0), seq)
                self.file(key).unlink(missing_ok=True)

    def pending(self, key: str, saved_seq: int) -> list[JournalEntry]:
        """Records of `key` newer than the saved state, in order."""
        entries = [e for e in read_entries(self.file(key)) if e.seq > saved_seq]
        if entries:
            with self._lock:
                self._last[key] = max(self._last.get(key, 0), entries[-1].seq)
        return entries

    def discard(self, key: str) -> None:
        """Forget every record of `key` (its annotation was cleared or forgotten)."""
        with self._lock:
            self.file(key).unlink(missing_ok=True)
