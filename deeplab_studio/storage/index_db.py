"""The project index: one SQLite database (`project.sqlite`, WAL mode) in the project's data folder.

Tables:
- `meta(key, value)`: `format_version`, `app`, `classes` (JSON of `LabelSet.to_json()`),
  `label_rev`, and `folder` (the image folder, when the data lives elsewhere);
- `remaps(rev, lut)`: the 256-byte table turning labels of revision `rev` into `rev + 1`;
- `images`: one row per image — `path` (the relative posix path as bytes, so names that are not
  UTF-8 are exact), `key`, size, `status`, timestamps, the image file's size and mtime, `gen` (the
  generation of its current label-map / edit-mask pair; NULL when unlabeled) and `journal_seq`
  (the last journaled change that the saved pair contains).

Every change is one transaction (`synchronous=FULL`: a committed change survives a power cut).
Format 1 projects (`project.json`) are migrated once by `migrate_json`, which keeps the old file
as `project.json.v1-backup`. A database written by a newer format is refused before any write.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from deeplab_studio.core.labels import LabelSet, LabelSetError
from deeplab_studio.storage import locations
from deeplab_studio.storage.locations import record_key

FORMAT_VERSION = 2
INDEX_FILE = locations.INDEX_FILE
LEGACY_FILE = locations.PROJECT_FILE
LEGACY_BACKUP = "project.json.v1-backup"
HINT = "It was left untouched: restore it from a backup, or move it away to start a new project."

_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE remaps(rev INTEGER PRIMARY KEY, lut BLOB NOT NULL);
CREATE TABLE images(
    path BLOB PRIMARY KEY, key TEXT NOT NULL UNIQUE, width INTEGER NOT NULL, height INTEGER NOT NULL,
    status TEXT NOT NULL, created TEXT NOT NULL, modified TEXT NOT NULL,
    file_size INTEGER NOT NULL, file_mtime_ns INTEGER NOT NULL,
    gen INTEGER, journal_seq INTEGER NOT NULL DEFAULT 0);
"""
COLUMNS = ("path", "key", "width", "height", "status", "created", "modified", "file_size",
           "file_mtime_ns", "gen", "journal_seq")
_KEY_RE = re.compile(r"[A-Za-z0-9_.-]+")
STATUSES = ("unlabeled", "auto", "edited", "reviewed")


class IndexFileError(Exception):
    """Base of the index errors (the project module maps them onto its `ProjectError`s)."""


class IndexVersionError(IndexFileError):
    pass


class IndexCorruptError(IndexFileError):
    pass


def encode_path(rel: str) -> bytes:
    return rel.encode("utf-8", "surrogateescape")


def decode_path(raw: bytes) -> str:
    return bytes(raw).decode("utf-8", "surrogateescape")


def connect(path: Path) -> sqlite3.Connection:
    """A connection usable from any thread (callers serialise), autocommit off, WAL, FULL sync."""
    conn = sqlite3.connect(os.fspath(path), timeout=10.0, check_same_thread=False, isolation_level=None)
    return conn


def open_existing(path: Path) -> sqlite3.Connection:
    """Open an index, checking its format before anything is written."""
    conn = connect(path)
    try:
        version = conn.execute("SELECT value FROM meta WHERE key='format_version'").fetchone()
        if version is None or not str(version[0]).isdigit():
            raise IndexCorruptError(f"{path}: damaged project index (no format version). {HINT}")
        if int(version[0]) > FORMAT_VERSION:
            raise IndexVersionError(
                f"{path}: written by a newer DeepLab Studio (project format {version[0]}, this version reads up to "
                f"{FORMAT_VERSION}); update the app. The project was left untouched.")
        conn.execute("PRAGMA synchronous=FULL")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise IndexCorruptError(f"{path}: damaged project index ({exc}). {HINT}") from None
    except IndexFileError:
        conn.close()
        raise
    return conn


def create(path: Path, labels: LabelSet, *, folder: str | None, label_rev: int = 0,
           remaps: Iterable[np.ndarray] = (), rows: Iterable[dict] = ()) -> None:
    """Write a new index at `path` atomically (built under a temporary name, then renamed)."""
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
        p.unlink(missing_ok=True)
    conn = connect(tmp)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        conn.execute("BEGIN")
        meta = {"format_version": str(FORMAT_VERSION), "app": "deeplab-studio",
                "classes": json.dumps(labels.to_json()), "label_rev": str(label_rev)}
        if folder is not None:
            meta["folder"] = folder
        conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        conn.executemany("INSERT INTO remaps VALUES (?, ?)",
                         [(i, np.asarray(r, np.uint8).tobytes()) for i, r in enumerate(remaps)])
        conn.executemany(f"INSERT INTO images VALUES ({', '.join('?' * len(COLUMNS))})",
                         [row_values(r) for r in rows])
        conn.execute("COMMIT")
        conn.execute(f"PRAGMA user_version={FORMAT_VERSION}")
    finally:
        conn.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def row_values(r: dict) -> tuple:
    return (encode_path(r["path"]), r["key"], r["width"], r["height"], r["status"], r["created"], r["modified"],
            r["file_size"], r["file_mtime_ns"], r.get("gen"), r.get("journal_seq", 0))


def read_all(conn: sqlite3.Connection, path: Path) -> tuple[LabelSet, int, list[np.ndarray], list[dict]]:
    """(classes, label_rev, remaps, image rows) of an open index; IndexCorruptError if damaged."""
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        labels = LabelSet.from_json(json.loads(meta["classes"]))
        rev = int(meta.get("label_rev", "0"))
        remaps = [np.frombuffer(lut, np.uint8).copy() for _, lut in
                  conn.execute("SELECT rev, lut FROM remaps ORDER BY rev").fetchall()]
        if len(remaps) != rev or any(r.shape != (256,) for r in remaps):
            raise ValueError("label remaps do not match label_rev")
        rows = [checked_row(dict(zip(COLUMNS, values)))
                for values in conn.execute(f"SELECT {', '.join(COLUMNS)} FROM images").fetchall()]
    except (sqlite3.DatabaseError, KeyError, TypeError, ValueError, LabelSetError, RecursionError) as exc:
        raise IndexCorruptError(f"{path}: damaged project index ({type(exc).__name__}: {exc}). {HINT}") from None
    return labels, rev, remaps, rows


def checked_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row with `path` decoded, validated (ValueError names what is wrong)."""
    raw = row["path"]
    row["path"] = decode_path(raw) if isinstance(raw, (bytes, memoryview)) else str(raw)
    rel = row["path"]
    if (not rel or rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in rel.split("/"))
            or "\x00" in rel):
        raise ValueError(f"bad image path {rel!r}")
    if not isinstance(row["key"], str) or not _KEY_RE.fullmatch(row["key"]) or row["key"].startswith("."):
        raise ValueError(f"bad storage key {row['key']!r}")
    if row["status"] not in STATUSES:
        raise ValueError(f"bad status {row['status']!r}")
    for name in ("width", "height"):
        if not isinstance(row[name], int) or row[name] < 1:
            raise ValueError(f"bad {name} {row[name]!r} for {rel!r}")
    if row["gen"] is not None and (not isinstance(row["gen"], int) or row["gen"] < 0):
        raise ValueError(f"bad generation {row['gen']!r} for {rel!r}")
    return row


# --- format 1 (project.json) --------------------------------------------------------------------------
def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def read_legacy(pfile: Path) -> dict:
    """The checked content of a format-1 `project.json` (classes, label_rev, remaps, rows)."""
    try:
        raw = pfile.read_bytes()
    except OSError as exc:
        raise IndexCorruptError(f"{pfile}: cannot read the project file ({exc.strerror or exc})") from None
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise IndexCorruptError(f"{pfile}: damaged project file (not valid JSON: {exc}). {HINT}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("format_version"), int):
        raise IndexCorruptError(f"{pfile}: damaged project file (no integer format_version). {HINT}")
    version = doc["format_version"]
    if version > 1:
        raise IndexVersionError(
            f"{pfile}: written by a newer DeepLab Studio (project format {version}, this version reads up to "
            f"{FORMAT_VERSION}); update the app. The file was left untouched.")
    try:
        if version < 1:
            raise ValueError(f"format_version {version}")
        labels = LabelSet.from_json(doc["classes"])
        rev = int(doc.get("label_rev", 0))
        remaps = [np.asarray(r, dtype=np.int64) for r in doc.get("label_remaps", [])]
        if len(remaps) != rev or any(r.shape != (256,) or r.min() < 0 or r.max() > 255 for r in remaps):
            raise ValueError("label_remaps do not match label_rev")
        rows, seen = [], set()
        for item in doc["images"]:
            rel = str(item["path"])
            row = checked_row({
                "path": rel, "key": str(item.get("key") or record_key(rel)), "width": int(item["width"]),
                "height": int(item["height"]), "status": str(item.get("status", "unlabeled")),
                "created": str(item.get("created", "")), "modified": str(item.get("modified", "")),
                "file_size": int(item.get("file_size", -1)), "file_mtime_ns": int(item.get("file_mtime_ns", -1)),
                "gen": None, "journal_seq": 0})
            if row["path"] in seen:
                raise ValueError(f"image {row['path']!r} listed twice")
            seen.add(row["path"])
            rows.append(row)
    except (KeyError, TypeError, ValueError, LabelSetError, RecursionError) as exc:
        raise IndexCorruptError(f"{pfile}: damaged project file ({type(exc).__name__}: {exc}). {HINT}") from None
    return {"labels": labels, "label_rev": rev, "remaps": [r.astype(np.uint8) for r in remaps],
            "rows": rows, "folder": doc.get("folder")}


def migrate_json(data_dir: Path, *, has_labels) -> None:
    """Turn a format-1 `project.json` into `project.sqlite` (once); the JSON becomes a backup.

    `has_labels(key)` says whether the format-1 label map `labels/<key>.png` exists: those rows get
    generation 0 (the format-1 file names), the others none."""
    legacy = read_legacy(data_dir / LEGACY_FILE)
    for row in legacy["rows"]:
        row["gen"] = 0 if has_labels(row["key"]) else None
    create(data_dir / INDEX_FILE, legacy["labels"], folder=legacy["folder"], label_rev=legacy["label_rev"],
           remaps=legacy["remaps"], rows=legacy["rows"])
    os.replace(data_dir / LEGACY_FILE, data_dir / LEGACY_BACKUP)
