"""One write transaction of a project's index: `BEGIN IMMEDIATE` … `COMMIT`, rolled back on any
failure, SQLite's errors told as one `ProjectError` naming the index file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from deeplab_studio.storage import index_db
from deeplab_studio.storage.records import ImageRecord, ProjectError


@contextmanager
def index_transaction(conn: sqlite3.Connection, index_file: Path) -> Iterator[sqlite3.Connection]:
    """One transaction on `conn` (the index at `index_file`); a failure rolls back and an SQLite
    error is a ProjectError."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise ProjectError(f"{index_file}: cannot update the project index ({exc})") from None
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException as exc:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        if isinstance(exc, sqlite3.Error):
            raise ProjectError(f"{index_file}: cannot update the project index ({exc})") from None
        raise


def upsert_records(conn: sqlite3.Connection, recs: Iterable[ImageRecord]) -> None:
    """Insert or replace the image rows of `recs` (inside the caller's transaction)."""
    cols = index_db.COLUMNS
    conn.executemany(f"INSERT OR REPLACE INTO images ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     [index_db.row_values(r.row()) for r in recs])
