"""One SQLite transaction on an autocommit connection (``isolation_level=None``): BEGIN, then COMMIT or ROLLBACK."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def transaction(db: sqlite3.Connection, immediate: bool = False) -> Iterator[sqlite3.Connection]:
    """``immediate``: take the write lock at BEGIN (other processes writing the same file)."""
    db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
