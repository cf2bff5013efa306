"""WebSocket mode of ``/v1/responses`` (no Ray: the fake replica).

Turns on one connection, continuation from the connection's own state
(``store: false``) and from the store, the eviction of a failed continuation's
id, and every malformed frame answered with an error envelope on a connection
that stays usable.
"""

from __future__ import annotations

import json

import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter
from starlette.websockets import WebSocketDisconnect

from tests.support.fake_router import AUTH, BASE, OTHER, REASONING_THEN_FINAL

EVENTS = TypeAdapter(ResponseStreamEvent)
TERMINAL = ("response.completed", "response.incomplete", "response.failed")


@pytest.fixture
def client(fakes):
    client, replica, _ = fakes
    replica.reply = REASONING_THEN_FINAL
    return client


def _create(**fields) -> dict:
    return {"type": "response.create", "model": BASE, **fields}


def _turn(ws) -> tuple[list[dict], dict]:
    """One turn's frames up to its terminal event or error envelope; (events, the last)."""
    events = []
    while True:
        event = json.loads(ws.receive_text())
        events.append(event)
        if event["type"] in TERMINAL or event["type"] == "error":
            return events, event


def _error(ws, status: int, code: str, param: str | None = None) -> dict:
    events, last = _turn(ws)
    assert len(events) == 1 and last["type"] == "error", events
    assert last["status"] == status and last["error"]["code"] == code, last
    if param is not None:
        assert last["error"]["param"] == param, last
    return last


def test_sequential_turns_stream_the_sse_events(client):
    with client.websocket_connect("/v1/responses", headers=AUTH) as ws:
        for text in ("first", "second"):
            ws.send_text(json.dumps(_create(store=False, input=f"Reply with exactly: {text}")))
            events, last = _turn(ws)
            assert last["type"] == "response.completed", last
            assert [e["sequence_number"] for e in events] == list(range(len(events)))
            for e in events:
                EVENTS.validate_python(e)
            assert last["response"]["store"] is False and last["response"]["output"][-1]["type"] == "message"


def test_store_false_continues_on_its_connection_only(client, fakes):
    _, replica, _ = fakes
    with client.websocket_connect("/v1/responses", headers=AUTH) as ws:
        ws.send_text(json.dumps(_create(store=False, input="Remember the code word: cobalt.")))
        _, first = _turn(ws)
        rid = first["response"]["id"]
        ws.send_text(json.dumps(_create(store=False, previous_response_id=rid, input="What is the code word?")))
        _, second = _turn(ws)
        assert second["type"] == "response.completed" and second["response"]["previous_response_id"] == rid
        prompt = _decode(replica.requests[-1].prompt_token_ids)
        assert "cobalt" in prompt and "Hello there!" in prompt and "What is the code word?" in prompt
    # Not stored, so not on another connection; that connection recovers with a new chain.
    with client.websocket_connect("/v1/responses", headers=AUTH) as ws:
        ws.send_text(json.dumps(_create(store=False, previous_response_id=rid, input="Continue.")))
        _error(ws, 400, "previous_response_not_found", "previous_response_id")
        ws.send_text(json.dumps(_create(store=False, input="Start again.")))
        assert _turn(ws)[1]["type"] == "response.completed"


def test_a_failed_continuation_evicts_the_id_it_continued(client):
    with client.websocket_connect("/v1/responses", headers=AUTH) as ws:
        ws.send_text(json.dumps(_create(store=False, input="Remember: ember.")))
        rid = _turn(ws)[1]["response"]["id"]
        stray = {"type": "function_call_output", "call_id": "call_missing", "output": "x"}
        ws.send_text(json.dumps(_create(store=False, previous_response_id=rid, input=[stray])))
        _error(ws, 400, "invalid_request_error", "input.0.call_id")
        ws.send_text(json.dumps(_create(store=False, previous_response_id=rid, input="Continue.")))
        _error(ws, 400, "previous_response_not_found")


def test_stored_responses_continue_from_any_connection_of_their_tenant(client):
    made = client.post("/v1/responses", headers=AUTH, json={"model": BASE, "input": "Hi"}).json()
    with client.websocket_connect("/v1/responses", headers=AUTH) as ws:
        ws.send_text(json.dumps(_create(previous_response_id=made["id"], input="More.")))
        assert _turn(ws)[1]["type"] == "response.completed"
    with client.websocket_connect("/v1/responses", headers=OTHER) as ws:
        ws.send_text(json.dumps(_create(previous_response_id=made["id"], input="More.")))
        _error(ws, 400, "previous_response_not_found")


@pytest.mark.parametrize(
    "frame, status, code, param",
    [
        ("{nope", 400, "invalid_json", None),
        ("[1, 2]", 400, "invalid_json", None),
        (json.dumps({"type": "response.cancel"}), 400, "unknown_message_type", "type"),
        (json.dumps({"model": BASE, "input": "x"}), 400, "unknown_message_type", "type"),
        (json.dumps(_create(input="x", stream=True)), 400, "invalid_request_error", "stream"),
        (json.dumps(_create(input="x", background=True)), 400, "invalid_request_error", "background"),
        (json.dumps(_create(input="x", temperature=9)), 400, "invalid_request_error", "temperature"),
        (json.dumps(_create(model="nope", input="x")), 404, "model_not_found", "model"),
        ("x" * 40000, 413, "request_too_large", None),
    ],
    ids=["not-json", "not-object", "unknown-type", "no-type", "stream", "background", "bad-field", "model", "large"],
)
def test_bad_frames_get_an_error_envelope_and_the_connection_stays_usable(client, frame, status, code, param):
    with client.websocket_connect("/v1/responses", headers=AUTH) as ws:
        ws.send_text(frame)
        _error(ws, status, code, param)
        ws.send_text(json.dumps(_create(input="Hi")))
        assert _turn(ws)[1]["type"] == "response.completed"


def test_without_a_key_the_connection_is_refused_with_a_401_envelope(client):
    with client.websocket_connect("/v1/responses") as ws:
        _error(ws, 401, "invalid_api_key")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 1008


def _decode(ids) -> str:
    from serve_app.harmony.encoding import harmony_encoding

    return harmony_encoding().decode(ids)
