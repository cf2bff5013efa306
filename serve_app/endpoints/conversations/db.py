"""Conversations and their items, in the response store's SQLite database (durable, tenant-scoped).

A conversation is an ordered list of items in their stored (output) form,
each with its own id; ``seq`` keeps their order. Another tenant's
conversation or item is the same "not found" as one that never existed.
Conversations have no expiry (OpenAI keeps them until deleted).
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from serve_app.sqlite_tx import transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created REAL NOT NULL,
    metadata TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS conversation_items (
    conversation_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    item TEXT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS conversation_item_ids ON conversation_items (owner, conversation_id, id);
"""


def _record(row: tuple) -> dict[str, Any]:
    id, created, metadata = row
    return {"id": id, "object": "conversation", "created_at": int(created), "metadata": json.loads(metadata)}


class ConversationDB:
    """The two tables; every call scoped to ``owner``."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db
        self._db.executescript(SCHEMA)

    def _own(self, owner: str, id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM conversations WHERE id = ? AND owner = ?", (id, owner)).fetchone()
        return row is not None

    def create(self, owner: str, id: str, metadata: dict[str, str], items: list[dict[str, Any]]) -> dict[str, Any]:
        now = time.time()
        with transaction(self._db):
            self._db.execute("INSERT INTO conversations VALUES (?, ?, ?, ?)", (id, owner, now, json.dumps(metadata)))
            self._append(owner, id, items)
        return _record((id, now, json.dumps(metadata)))

    def get(self, owner: str, id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT id, created, metadata FROM conversations WHERE id = ? AND owner = ?", (id, owner)
        ).fetchone()
        return None if row is None else _record(row)

    def update(self, owner: str, id: str, metadata: dict[str, str]) -> dict[str, Any] | None:
        self._db.execute(
            "UPDATE conversations SET metadata = ? WHERE id = ? AND owner = ?", (json.dumps(metadata), id, owner)
        )
        return self.get(owner, id)

    def delete(self, owner: str, id: str) -> bool:
        with transaction(self._db):
            cur = self._db.execute("DELETE FROM conversations WHERE id = ? AND owner = ?", (id, owner))
            self._db.execute("DELETE FROM conversation_items WHERE conversation_id = ? AND owner = ?", (id, owner))
        return cur.rowcount > 0

    def _append(self, owner: str, id: str, items: list[dict[str, Any]]) -> None:
        (last,) = self._db.execute(
            "SELECT COALESCE(MAX(seq), -1) FROM conversation_items WHERE conversation_id = ?", (id,)
        ).fetchone()
        self._db.executemany(
            "INSERT INTO conversation_items VALUES (?, ?, ?, ?, ?)",
            [(id, owner, last + 1 + i, item["id"], json.dumps(item)) for i, item in enumerate(items)],
        )

    def add(self, owner: str, id: str, items: list[dict[str, Any]]) -> bool:
        """Append ``items`` (each with its ``id``); False if the conversation is not the owner's."""
        with transaction(self._db):
            if not self._own(owner, id):
                return False
            self._append(owner, id, items)
        return True

    def items(
        self, owner: str, id: str, *, after: str | None = None, limit: int | None = None, order: str = "asc"
    ) -> tuple[list[dict[str, Any]], bool] | None:
        """A page of the items (``after`` an item id, in ``order``), and whether more follow; None: no such."""
        if not self._own(owner, id):
            return None
        direction = "DESC" if order == "desc" else "ASC"
        start = None
        if after is not None:
            row = self._db.execute(
                "SELECT seq FROM conversation_items WHERE conversation_id = ? AND id = ?", (id, after)
            ).fetchone()
            if row is None:
                return [], False
            start = row[0]
        where = "conversation_id = ?"
        args: list[Any] = [id]
        if start is not None:
            where += " AND seq > ?" if direction == "ASC" else " AND seq < ?"
            args.append(start)
        sql = f"SELECT item FROM conversation_items WHERE {where} ORDER BY seq {direction}"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit + 1)
        rows = [json.loads(r[0]) for r in self._db.execute(sql, args).fetchall()]
        more = limit is not None and len(rows) > limit
        return rows[:limit] if limit is not None else rows, more

    def item(self, owner: str, id: str, item_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT item FROM conversation_items WHERE conversation_id = ? AND owner = ? AND id = ?",
            (id, owner, item_id),
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def delete_item(self, owner: str, id: str, item_id: str) -> bool:
        cur = self._db.execute(
            "DELETE FROM conversation_items WHERE conversation_id = ? AND owner = ? AND id = ?", (id, owner, item_id)
        )
        return cur.rowcount > 0
