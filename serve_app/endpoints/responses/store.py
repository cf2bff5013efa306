"""ResponseStore: stored responses, persisted (a plain class; ``serve_app.app`` deploys it).

One actor behind every router replica, so a response made through one router
is found through any other; SQLite in ``responses.store_dir``, so it survives
restarts of the actor, the application and the machine. Each response is
scoped to the tenant (API key name) that made it: another tenant's lookup is
the same "not found" as an id that never existed. Kept ``retention_s``, at most
``max_stored`` of them (oldest dropped first).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from serve_app.config import AppConfig
from serve_app.endpoints.conversations.db import ConversationDB
from serve_app.endpoints.responses.runs import RunDB
from serve_app.sqlite_tx import transaction

CONVERSATION_OPS = frozenset({"create", "get", "update", "delete", "add", "items", "item", "delete_item"})

logger = logging.getLogger("ray.serve")

# Expired rows are removed every this many writes (and at start).
PRUNE_EVERY = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    response TEXT NOT NULL,
    input_items TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created);
-- Every item of a stored response by its own id (rs_..., msg_..., fc_...), for item_reference inputs.
CREATE TABLE IF NOT EXISTS items (
    id TEXT NOT NULL,
    owner TEXT NOT NULL,
    response_id TEXT NOT NULL,
    item TEXT NOT NULL,
    PRIMARY KEY (owner, id)
);
CREATE INDEX IF NOT EXISTS items_response ON items (response_id);
"""


class ResponseDB:
    """The SQLite table itself: small indexed queries, run inline (one actor, one writer)."""

    def __init__(self, path: Path, retention_s: float, max_stored: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._retention_s = retention_s
        self._max = max_stored
        self._writes = 0
        self._runs: RunDB | None = None
        self.prune()
        self._runs = RunDB(self._db, self.get, self.replace)

    @property
    def runs(self) -> RunDB:
        assert self._runs is not None
        return self._runs

    @property
    def connection(self) -> sqlite3.Connection:
        return self._db

    def put(self, owner: str, response: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
        now = time.time()
        items = [i for i in [*input_items, *response.get("output", [])] if isinstance(i.get("id"), str)]
        with transaction(self._db):
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                (response["id"], owner, now, now + self._retention_s, json.dumps(response), json.dumps(input_items)),
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?)",
                [(i["id"], owner, response["id"], json.dumps(i)) for i in items],
            )
        self._writes += 1
        if self._writes % PRUNE_EVERY == 0:
            self.prune()

    def replace(self, owner: str, response: dict[str, Any]) -> None:
        """The response as it stands now (a background run's progress); its input items stay."""
        self._db.execute(
            "UPDATE responses SET response = ? WHERE id = ? AND owner = ?",
            (json.dumps(response), response["id"], owner),
        )

    def get(self, owner: str, id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT response, input_items FROM responses WHERE id = ? AND owner = ? AND expires > ?",
            (id, owner, time.time()),
        ).fetchone()
        if row is None:
            return None
        return {"response": json.loads(row[0]), "input_items": json.loads(row[1])}

    def items(self, owner: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The stored items of ``owner`` with these ids (of responses not expired); others are absent."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(
            f"SELECT items.id, items.item FROM items JOIN responses ON responses.id = items.response_id "
            f"AND responses.owner = items.owner WHERE items.owner = ? AND items.id IN ({marks}) "
            "AND responses.expires > ?",
            (owner, *ids, time.time()),
        ).fetchall()
        return {id: json.loads(item) for id, item in rows}

    def delete(self, owner: str, id: str) -> bool:
        with transaction(self._db):
            cur = self._db.execute("DELETE FROM responses WHERE id = ? AND owner = ?", (id, owner))
            self._db.execute("DELETE FROM items WHERE response_id = ? AND owner = ?", (id, owner))
        if cur.rowcount > 0:
            self.runs.forget([id])
        return cur.rowcount > 0

    def prune(self) -> None:
        with transaction(self._db):
            self._db.execute("DELETE FROM responses WHERE expires <= ?", (time.time(),))
            self._db.execute(
                "DELETE FROM responses WHERE id IN (SELECT id FROM responses ORDER BY created DESC LIMIT -1 OFFSET ?)",
                (self._max,),
            )
            self._db.execute("DELETE FROM items WHERE response_id NOT IN (SELECT id FROM responses)")
        if self._runs is not None:
            self._runs.prune()


class ResponseStore:
    """The actor: stored responses and conversations, one SQLite file."""

    def __init__(self, config: dict | AppConfig):
        cfg = AppConfig.model_validate(config).responses
        self._db = ResponseDB(Path(cfg.resolved_store_dir()) / "responses.sqlite3", cfg.retention_s, cfg.max_stored)
        self._conversations = ConversationDB(self._db.connection)

    async def conversation(self, op: str, owner: str, *args: Any, **kwargs: Any) -> Any:
        """One ``ConversationDB`` operation (create, get, update, delete, add, items, item, delete_item)."""
        if op not in CONVERSATION_OPS:
            raise ValueError(f"no conversation operation {op!r}")
        return getattr(self._conversations, op)(owner, *args, **kwargs)

    async def put(self, owner: str, response: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
        self._db.put(owner, response, input_items)

    async def get(self, owner: str, id: str) -> dict[str, Any] | None:
        self._db.runs.check(owner, id)  # a background run whose process stopped ends failed here
        return self._db.get(owner, id)

    # -- background runs (``runs``) ----------------------------------------------

    async def run_start(self, owner: str, response: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
        self._db.put(owner, response, input_items)
        self._db.runs.start(owner, response["id"])

    async def run_append(
        self, owner: str, id: str, events: list[dict[str, Any]], response: dict[str, Any]
    ) -> dict[str, bool]:
        return self._db.runs.append(owner, id, events, response)

    async def run_events(self, owner: str, id: str, after: int) -> dict[str, Any] | None:
        return self._db.runs.events(owner, id, after)

    async def run_cancel(self, owner: str, id: str) -> str | None:
        return self._db.runs.cancel(owner, id)

    async def items(self, owner: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        return self._db.items(owner, ids)

    async def delete(self, owner: str, id: str) -> bool:
        return self._db.delete(owner, id)
