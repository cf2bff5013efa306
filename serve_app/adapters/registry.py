"""The adapter registry: one SQLite database in WAL mode, durable across restarts.

Each row is one adapter name; every change bumps a registry-wide version so
readers (routers, replicas) can tell cheaply whether their cached view is
stale. Writes are transactions (``BEGIN IMMEDIATE``), so concurrent
registrations from several threads or processes are serialized by SQLite.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from serve_app.sqlite_tx import transaction

Status = Literal["ready", "failed"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS adapters (
    name TEXT PRIMARY KEY,
    base_model TEXT NOT NULL,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    rank INTEGER NOT NULL,
    alpha REAL NOT NULL,
    target_modules TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('version', 0);
"""


@dataclass(frozen=True)
class AdapterRecord:
    name: str
    base_model: str
    source: str
    sha256: str
    rank: int
    alpha: float
    target_modules: list[str] = field(default_factory=list)
    size_bytes: int = 0
    status: Status = "ready"
    reason: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    # The registry version at this record's last change.
    version: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def ref(self) -> str:
        """What replicas load: the name pinned to its weights (``name@sha256-prefix``).

        A re-registered name with new weights gets a new ref, so no replica
        can serve a stale copy under the old one.
        """
        return f"{self.name}@{self.sha256[:16]}"


class Registry:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._db().executescript(_SCHEMA)  # idempotent; executescript commits by itself

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a registration survives power loss once acknowledged
            db.row_factory = sqlite3.Row
            self._local.db = db
        return db

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db(), immediate=True)

    @staticmethod
    def _bump(db: sqlite3.Connection) -> int:
        db.execute("UPDATE meta SET value = value + 1 WHERE key = 'version'")
        return db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0]

    @staticmethod
    def _record(row: sqlite3.Row) -> AdapterRecord:
        d = dict(row)
        d["target_modules"] = json.loads(d["target_modules"])
        return AdapterRecord(**d)

    def version(self) -> int:
        return self._db().execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0]

    def put(self, record: AdapterRecord) -> AdapterRecord:
        """Insert or replace ``record.name``; keeps its first creation time."""
        now = time.time()
        with self._tx() as db:
            version = self._bump(db)
            old = db.execute("SELECT created_at FROM adapters WHERE name = ?", (record.name,)).fetchone()
            d = record.to_dict() | {
                "created_at": old[0] if old else now,
                "updated_at": now,
                "version": version,
            }
            d["target_modules"] = json.dumps(sorted(d["target_modules"]))
            cols = ", ".join(d)
            db.execute(
                f"INSERT OR REPLACE INTO adapters ({cols}) VALUES ({', '.join('?' * len(d))})", tuple(d.values())
            )
        return self.get(record.name)  # type: ignore[return-value]

    def get(self, name: str) -> AdapterRecord | None:
        row = self._db().execute("SELECT * FROM adapters WHERE name = ?", (name,)).fetchone()
        return self._record(row) if row else None

    def list(self) -> list[AdapterRecord]:
        return [self._record(r) for r in self._db().execute("SELECT * FROM adapters ORDER BY name")]

    def delete(self, name: str) -> bool:
        with self._tx() as db:
            gone = db.execute("DELETE FROM adapters WHERE name = ?", (name,)).rowcount > 0
            if gone:
                self._bump(db)
        return gone
