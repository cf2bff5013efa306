"""``POST /v1/responses/compact`` and compaction items as input (no Ray: the fake replica)."""

from __future__ import annotations

import base64
import zlib

import pytest
from openai.types.responses import ResponseCompactionItem, ResponseUsage

from serve_app.endpoints.responses import compact
from serve_app.protocol.errors import InvalidRequest
from tests.support.fake_router import AUTH, BASE, OTHER, REASONING_THEN_FINAL

FOREIGN = "input.0.encrypted_content"
WINDOW = [
    {"type": "message", "role": "user", "content": "Remember the code word: slate."},
    {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "Old thoughts."}]},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "OK."}]},
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is the weather?"}]},
    {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "Call the tool."}]},
    {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "c1", "output": "21C"},
]


@pytest.fixture
def client(fakes):
    client, replica, _ = fakes
    replica.reply = REASONING_THEN_FINAL
    return client


def test_compacted_drops_only_the_reasoning_of_answered_turns():
    kept = compact.compacted(WINDOW)
    texts = [i.get("content") for i in kept if i["type"] == "reasoning"]
    assert texts == [[{"type": "reasoning_text", "text": "Call the tool."}]]
    assert [i for i in kept if i["type"] != "reasoning"] == [i for i in WINDOW if i["type"] != "reasoning"]


def test_a_sealed_window_opens_to_itself_and_refuses_anything_else():
    assert compact.unseal(compact.seal(WINDOW), "p") == WINDOW
    bomb = compact.PREFIX + base64.urlsafe_b64encode(zlib.compress(b" " * (compact.MAX_OPENED_BYTES + 10))).decode()
    for bad in ("gAAAA-openai-content", compact.PREFIX + "!!!", compact.PREFIX + "eJw=", bomb):
        with pytest.raises(InvalidRequest) as e:
            compact.unseal(bad, "input.3.encrypted_content")
        assert e.value.param == "input.3.encrypted_content"


def test_expand_restores_the_order_when_the_output_comes_back_as_it_was():
    window = compact.compacted(WINDOW)
    users = [compact.user_message(i, f"msg_{n}") for n, i in enumerate(window) if compact.is_user(i)]
    item = {"type": "compaction", "id": "cmp_1", "encrypted_content": compact.seal(window)}
    nxt = {"type": "message", "role": "user", "content": "Continue."}
    assert compact.expand([*users, item, nxt]) == [*window, nxt]
    # The client dropped the visible messages: the window's other items, the client's as sent.
    assert compact.expand([item, nxt]) == [*[i for i in window if not compact.is_user(i)], nxt]


def test_compact_endpoint_answers_openai_s_shape_and_its_output_continues(client, fakes):
    _, replica, _ = fakes
    r = client.post("/v1/responses/compact", headers=AUTH, json={"model": BASE, "input": WINDOW})
    assert r.status_code == 200, r.text
    # As OpenAI's API answers it: every user message (as given), then one compaction item.
    body = r.json()
    assert set(body) == {"id", "object", "created_at", "output", "usage"} and body["object"] == "response.compaction"
    assert ResponseUsage.model_validate(body["usage"]).input_tokens > 0
    output = body["output"]
    kinds = [(i["type"], i.get("role")) for i in output]
    assert kinds == [("message", "user"), ("message", "user"), ("compaction", None)]
    assert [i["content"] for i in output[:2]] == [
        [{"type": "input_text", "text": "Remember the code word: slate."}],
        [{"type": "input_text", "text": "What is the weather?"}],
    ]
    ResponseCompactionItem.model_validate(output[-1])
    # Passed back as it is, with the next message: the model sees the window again.
    nxt = {"type": "message", "role": "user", "content": "What was the code word?"}
    r = client.post("/v1/responses", headers=AUTH, json={"model": BASE, "input": [*output, nxt]})
    assert r.status_code == 200, r.text
    prompt = _decode(replica.requests[-1].prompt_token_ids)
    for text in ("slate", "OK.", "21C", "What was the code word?"):
        assert text in prompt
    assert prompt.count("Remember the code word") == 1 and "Old thoughts." not in prompt


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"input": "Compact this."}, 400, "model"),
        ({"model": BASE}, 400, None),
        ({"model": "nope", "input": "x"}, 404, "model"),
        ({"model": BASE, "input": [{"type": "compaction", "encrypted_content": "x"}]}, 400, FOREIGN),
        ({"model": BASE, "previous_response_id": "resp_missing"}, 400, "previous_response_id"),
        ({"model": BASE, "input": [{"type": "web_search_call"}]}, 400, "input.0"),
    ],
    ids=["no-model", "nothing", "unknown-model", "foreign-content", "unknown-previous", "item-type"],
)
def test_compact_refusals_are_4xx_naming_the_field(client, body, status, param):
    r = client.post("/v1/responses/compact", headers=AUTH, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


def test_compact_continues_a_stored_response_of_the_caller_only(client):
    made = client.post("/v1/responses", headers=AUTH, json={"model": BASE, "input": "Hi"}).json()
    r = client.post("/v1/responses/compact", headers=AUTH, json={"model": BASE, "previous_response_id": made["id"]})
    assert r.status_code == 200, r.text
    assert [i["type"] for i in r.json()["output"]] == ["message", "compaction"]
    body = {"model": BASE, "previous_response_id": made["id"]}
    other = client.post("/v1/responses/compact", headers=OTHER, json=body)
    assert other.status_code == 400 and other.json()["error"]["code"] == "previous_response_not_found"


def _decode(ids) -> str:
    from serve_app.harmony.encoding import harmony_encoding

    return harmony_encoding().decode(ids)
