"""Background runs in the response store: their events, heartbeats and cancel flags (SQLite).

A background response (``background: true``) runs in the API process that
accepted it, detached from the client's connection (``background``). While it
runs, that process appends its stream events here in batches, a few times a
second, with the response as it stands; each append is also its heartbeat, and
its answer says whether someone asked to cancel. Any router or server replica
can then answer a poll (``GET /v1/responses/{id}``), resume the event stream
from a sequence number, or cancel it, because the events live in the store's
one actor, not in the process that runs it.

A run whose process stopped (its replica died, its node went away) stops
beating: the first look at it after ``LEASE_S`` without a heartbeat ends it
``failed``, with an error saying so, and a ``response.failed`` event for the
streams that follow it. Events are kept with the response and go with it
(expiry, delete). A restart of the store keeps them (the SQLite file); a run
in flight across a store restart carries on once its appends get through again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from serve_app.sqlite_tx import transaction

# A run that has not appended for this long is taken for lost.
LEASE_S = 10.0
LOST_MESSAGE = (
    "The server process running this background response stopped before it finished; "
    "the response is incomplete. Create it again."
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    heartbeat REAL NOT NULL,
    cancel INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT -1
);
CREATE TABLE IF NOT EXISTS events (
    id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (id, seq)
);
"""

TERMINAL = frozenset({"completed", "incomplete", "failed", "cancelled"})


class RunDB:
    """``save(owner, response)`` writes the response row (the store's ``ResponseDB.replace``)."""

    def __init__(
        self,
        db: sqlite3.Connection,
        load: Callable[[str, str], dict[str, Any] | None],
        save: Callable[[str, dict[str, Any]], None],
        clock: Callable[[], float] = time.time,
    ):
        self._db = db
        self._db.executescript(SCHEMA)
        self._load = load
        self._save = save
        self._clock = clock

    def start(self, owner: str, id: str) -> None:
        with transaction(self._db):
            self._db.execute(
                "INSERT OR REPLACE INTO runs (id, owner, heartbeat) VALUES (?, ?, ?)", (id, owner, self._clock())
            )
            self._db.execute("DELETE FROM events WHERE id = ?", (id,))

    def append(self, owner: str, id: str, events: list[dict[str, Any]], response: dict[str, Any]) -> dict[str, bool]:
        """Add events (in order), keep ``response`` as it stands, beat. {"cancel": stop now, "lost": taken for lost}."""
        row = self._run(owner, id)
        if row is None or row["done"]:
            # Deleted, or ended for it (lost): whatever it was doing, it stops.
            return {"cancel": True, "lost": True}
        self._save(owner, response)
        with transaction(self._db):
            self._db.executemany(
                "INSERT OR REPLACE INTO events VALUES (?, ?, ?)",
                [(id, e["sequence_number"], json.dumps(e)) for e in events],
            )
            last = max([row["last_seq"], *(e["sequence_number"] for e in events)])
            done = response.get("status") in TERMINAL
            self._db.execute(
                "UPDATE runs SET heartbeat = ?, last_seq = ?, done = ? WHERE id = ?",
                (self._clock(), last, int(done), id),
            )
        return {"cancel": bool(row["cancel"]), "lost": False}

    def events(self, owner: str, id: str, after: int) -> dict[str, Any] | None:
        """Events with a sequence number above ``after``; ``done`` once the last is there. None: not a run here."""
        self.check(owner, id)
        row = self._run(owner, id)
        if row is None:
            return None
        rows = self._db.execute(
            "SELECT event FROM events WHERE id = ? AND seq > ? ORDER BY seq", (id, after)
        ).fetchall()
        return {"events": [json.loads(r[0]) for r in rows], "done": bool(row["done"]), "last": row["last_seq"]}

    def cancel(self, owner: str, id: str) -> str | None:
        """Ask the run to stop: "requested", "done" (it already ended), or None (not a background run)."""
        self.check(owner, id)
        row = self._run(owner, id)
        if row is None:
            return None
        if row["done"]:
            return "done"
        self._db.execute("UPDATE runs SET cancel = 1 WHERE id = ?", (id,))
        return "requested"

    def check(self, owner: str, id: str) -> None:
        """End a run that stopped beating (``LEASE_S``) as ``failed``, with its last event."""
        row = self._run(owner, id)
        if row is None or row["done"] or self._clock() - row["heartbeat"] < LEASE_S:
            return
        record = self._load(owner, id)
        response = dict(record["response"]) if record is not None else {"id": id, "object": "response", "output": []}
        response.update(status="failed", error={"code": "server_error", "message": LOST_MESSAGE})
        seq = row["last_seq"] + 1
        event = {"type": "response.failed", "sequence_number": seq, "response": response}
        self._save(owner, response)
        with transaction(self._db):
            self._db.execute("INSERT OR REPLACE INTO events VALUES (?, ?, ?)", (id, seq, json.dumps(event)))
            self._db.execute("UPDATE runs SET done = 1, last_seq = ? WHERE id = ?", (seq, id))

    def forget(self, ids: list[str]) -> None:
        """Drop the runs and events of these responses (deleted or expired)."""
        marks = ",".join("?" * len(ids))
        with transaction(self._db):
            self._db.execute(f"DELETE FROM runs WHERE id IN ({marks})", ids)
            self._db.execute(f"DELETE FROM events WHERE id IN ({marks})", ids)

    def prune(self) -> None:
        """Runs and events whose response is gone."""
        with transaction(self._db):
            self._db.execute("DELETE FROM runs WHERE id NOT IN (SELECT id FROM responses)")
            self._db.execute("DELETE FROM events WHERE id NOT IN (SELECT id FROM responses)")

    def _run(self, owner: str, id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT heartbeat, cancel, done, last_seq FROM runs WHERE id = ? AND owner = ?", (id, owner)
        ).fetchone()
        if row is None:
            return None
        return {"heartbeat": row[0], "cancel": row[1], "done": row[2], "last_seq": row[3]}
