"""Background responses (no Ray: the fake replica and a real response store in process).

The run goes on apart from the request, its events reach the store, and a
poll, a resumed stream or a cancel reads or flags it there; a run whose
process stops beating ends failed (``runs.LEASE_S``, on a fake clock).
"""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from serve_app.endpoints.responses import runs
from tests.support.fake_router import AUTH, BASE, OTHER, fresh

EVENTS = TypeAdapter(ResponseStreamEvent)


@pytest.fixture
def client(fakes):
    client, replica, _ = fakes
    fresh(replica)
    # One event loop for every request of a test: the runs live on it between requests.
    with client:
        yield client
    replica.delay_s = 0.0


def _wait(client, id: str, headers=AUTH, timeout_s: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(f"/v1/responses/{id}", headers=headers).json()
        if body["status"] not in ("queued", "in_progress"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def _events(text: str) -> list[dict]:
    blocks = [b for b in text.split("\n\n") if b]
    assert blocks[-1] == "data: [DONE]", blocks[-3:]
    out = []
    for block in blocks[:-1]:
        name, data = block.split("\n")
        event = json.loads(data[len("data: ") :])
        assert name == f"event: {event['type']}"
        EVENTS.validate_python(event)
        out.append(event)
    return out


def test_a_background_response_is_queued_then_polled_and_its_stream_read_again(client):
    r = client.post("/v1/responses", headers=AUTH, json={"model": BASE, "input": "Hi", "background": True})
    assert r.status_code == 200, r.text
    queued = Response.model_validate(r.json())
    assert queued.status == "queued" and queued.background is True and queued.output == []
    done = _wait(client, queued.id)
    assert done["status"] == "completed" and done["output"][-1]["content"][0]["text"] == "Hello there!"
    assert done["usage"]["output_tokens"] > 0
    events = _events(client.get(f"/v1/responses/{queued.id}?stream=true", headers=AUTH).text)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"] == done["output"]
    # From a sequence number on: only what came after it.
    later = _events(client.get(f"/v1/responses/{queued.id}?stream=true&starting_after=3", headers=AUTH).text)
    assert later == events[4:]
    for after, param in (("999", "starting_after"), ("x", "starting_after"), ("-5", "starting_after")):
        r = client.get(f"/v1/responses/{queued.id}?stream=true&starting_after={after}", headers=AUTH)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    # Another tenant sees nothing of it.
    assert client.get(f"/v1/responses/{queued.id}?stream=true", headers=OTHER).status_code == 404


def test_a_background_stream_left_by_its_client_runs_to_the_end(client, fakes):
    _, replica, _ = fakes
    replica.delay_s = 0.3
    body = {"model": BASE, "input": "Hi", "background": True, "stream": True}
    with client.stream("POST", "/v1/responses", headers=AUTH, json=body) as s:
        lines = s.iter_lines()
        assert next(lines) == "event: response.created"
        created = json.loads(next(lines)[len("data: ") :])
    # The client is gone before the engine's first token; the run is not.
    done = _wait(client, created["response"]["id"])
    assert done["status"] == "completed" and done["output"][-1]["content"][0]["text"] == "Hello there!"


def test_cancel_stops_the_run_from_any_request_and_only_once_it_runs(client, fakes):
    _, replica, _ = fakes
    replica.delay_s = 3.0  # the engine has not answered yet
    r = client.post("/v1/responses", headers=AUTH, json={"model": BASE, "input": "Hi", "background": True})
    id = r.json()["id"]
    assert client.post(f"/v1/responses/{id}/cancel", headers=OTHER).status_code == 404
    cancelled = client.post(f"/v1/responses/{id}/cancel", headers=AUTH)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    assert replica.streams[-1].cancelled or _aborted(replica)
    # Cancelling again answers the same; the events end with it.
    assert client.post(f"/v1/responses/{id}/cancel", headers=AUTH).json()["status"] == "cancelled"
    events = _events(client.get(f"/v1/responses/{id}?stream=true", headers=AUTH).text)
    assert events[-1]["type"] == "response.failed" and events[-1]["response"]["status"] == "cancelled"
    # A finished one, a foreground one, an unknown one: clear 4xx.
    replica.delay_s = 0.0
    r = client.post("/v1/responses", headers=AUTH, json={"model": BASE, "input": "Hi", "background": True})
    _wait(client, r.json()["id"])
    refused = client.post(f"/v1/responses/{r.json()['id']}/cancel", headers=AUTH)
    assert refused.status_code == 400 and "already ended (completed)" in refused.json()["error"]["message"]
    plain = client.post("/v1/responses", headers=AUTH, json={"model": BASE, "input": "Hi"}).json()
    assert client.post(f"/v1/responses/{plain['id']}/cancel", headers=AUTH).status_code == 400
    assert client.post("/v1/responses/resp_nope/cancel", headers=AUTH).status_code == 404
    assert client.get(f"/v1/responses/{plain['id']}?stream=true", headers=AUTH).status_code == 400


def test_an_engine_that_dies_mid_run_ends_it_failed(client, fakes):
    _, replica, _ = fakes
    replica.die_after = 1
    r = client.post("/v1/responses", headers=AUTH, json={"model": BASE, "input": "Hi", "background": True})
    done = _wait(client, r.json()["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "server_error" and done["error"]["message"], done


def test_background_needs_the_store(client):
    body = {"model": BASE, "input": "Hi", "background": True, "store": False}
    r = client.post("/v1/responses", headers=AUTH, json=body)
    assert r.status_code == 400 and "store" in r.json()["error"]["message"]


def test_a_run_that_stops_beating_ends_failed_for_whoever_looks_next(tmp_path):
    from serve_app.endpoints.responses.store import ResponseDB

    now = [1000.0]
    db = ResponseDB(tmp_path / "r.sqlite3", retention_s=3600, max_stored=10)
    rdb = runs.RunDB(db.connection, db.get, db.replace, clock=lambda: now[0])
    response = {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}
    db.put("a", response, [])
    rdb.start("a", "resp_1")
    created = {"type": "response.created", "sequence_number": 0, "response": response}
    assert rdb.append("a", "resp_1", [created], response) == {"cancel": False, "lost": False}
    now[0] += runs.LEASE_S - 1
    assert rdb.events("a", "resp_1", -1)["done"] is False
    now[0] += 2
    got = rdb.events("a", "resp_1", 0)
    assert got["done"] is True and [e["type"] for e in got["events"]] == ["response.failed"]
    assert got["events"][0]["sequence_number"] == 1 and got["last"] == 1
    stored = db.get("a", "resp_1")["response"]
    assert stored["status"] == "failed" and stored["error"]["message"] == runs.LOST_MESSAGE
    # The process comes back to life: it is told to stop.
    assert rdb.append("a", "resp_1", [], response) == {"cancel": True, "lost": True}
    # Another tenant's id is not a run of theirs; a deleted response takes its events along.
    assert rdb.events("b", "resp_1", -1) is None
    assert db.delete("a", "resp_1")
    assert sqlite3.connect(tmp_path / "r.sqlite3").execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


def _aborted(replica) -> bool:
    time.sleep(0.5)
    return replica.streams[-1].cancelled
