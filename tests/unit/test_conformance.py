"""Every body and stream event the router writes, against OpenAI's published schemas (tests/conformance).

Chat (plain, tools, logprobs, n, streamed with usage), completions (plain,
logprobs, streamed), responses (text, function call, streamed, stored, its
input items), models and errors, through the router app on a fake replica.
The integration tier validates what the real engine's answers become the same
way (``tests/integration/conftest.py``, ``conformance`` fixture).
"""

from __future__ import annotations

import pytest

from tests.support.conformance import conform, conform_event, sse_payloads
from tests.support.fake_router import AUTH, BASE, REASONING_THEN_FINAL, TOOL_CALL, WEATHER

USER = [{"role": "user", "content": "Hi"}]
CHAT_TOOL = {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}


@pytest.fixture
def app(fakes):
    client, replica, _ = fakes
    replica.reply = REASONING_THEN_FINAL
    return client, replica


CHAT = [
    {},
    {"logprobs": True, "top_logprobs": 2},
    {"n": 2, "temperature": 0.5},
    {"tools": [CHAT_TOOL], "reply": TOOL_CALL},
    {"tools": [CHAT_TOOL], "tool_choice": "required", "reply": TOOL_CALL},
    {"response_format": {"type": "json_object"}},
    {"max_tokens": 3},
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("extra", CHAT, ids=["plain", "logprobs", "n2", "tools", "required", "json", "length"])
def test_chat_bodies_and_chunks_conform(app, extra, stream):
    client, replica = app
    extra = dict(extra)
    replica.reply = extra.pop("reply", REASONING_THEN_FINAL)
    body = {"model": BASE, "messages": USER, **extra}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    r = client.post("/v1/chat/completions", headers=AUTH, json=body)
    assert r.status_code == 200, r.text
    if not stream:
        conform("CreateChatCompletionResponse", r.json())
        return
    events = sse_payloads(r.text)
    assert events and r.text.rstrip().endswith("data: [DONE]")
    for event in events:
        conform("CreateChatCompletionStreamResponse", event)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize(
    "extra", [{}, {"logprobs": 2}, {"echo": True}, {"n": 2}], ids=["plain", "logprobs", "echo", "n2"]
)
def test_completions_conform(app, extra, stream):
    client, _ = app
    r = client.post("/v1/completions", headers=AUTH, json={"model": BASE, "prompt": "Hi", "stream": stream, **extra})
    assert r.status_code == 200, r.text
    if not stream:
        conform("CreateCompletionResponse", r.json())
        return
    for event in sse_payloads(r.text):
        # OpenAI's spec describes a streamed completions event with the same schema, bar the
        # usage-only last chunk (stream_options.include_usage), not asked for here.
        conform("CreateCompletionResponse", {**event, "choices": [
            {**c, "finish_reason": c["finish_reason"] or "stop"} for c in event["choices"]
        ]})  # fmt: skip


RESPONSES = [
    {},
    {"instructions": "Be brief.", "temperature": 0.3, "top_p": 0.9, "metadata": {"k": "v"}},
    {"tools": [WEATHER], "reply": TOOL_CALL},
    {"tools": [{**WEATHER, "strict": True}], "tool_choice": "required", "reply": TOOL_CALL},
    {"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}},
    {"max_output_tokens": 3},
    {"store": False, "user": "u-1", "safety_identifier": "s", "prompt_cache_key": "k"},
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize(
    "extra", RESPONSES, ids=["plain", "sampling", "tools", "required", "schema", "incomplete", "echo"]
)
def test_responses_and_their_events_conform(app, extra, stream):
    client, replica = app
    extra = dict(extra)
    replica.reply = extra.pop("reply", REASONING_THEN_FINAL)
    r = client.post("/v1/responses", headers=AUTH, json={"model": BASE, "input": "Hi", "stream": stream, **extra})
    assert r.status_code == 200, r.text
    if not stream:
        body = r.json()
        conform("Response", body)
        assert body["temperature"] is not None and body["top_p"] is not None  # the settings in effect
        return
    events = sse_payloads(r.text)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        conform_event(event)
    final = events[-1]["response"]
    if final["store"]:
        stored = client.get(f"/v1/responses/{final['id']}", headers=AUTH)
        conform("Response", stored.json())
        conform("ResponseItemList", client.get(f"/v1/responses/{final['id']}/input_items", headers=AUTH).json())


def test_models_and_errors_conform(app):
    client, _ = app
    conform("ListModelsResponse", client.get("/v1/models", headers=AUTH).json())
    conform("Model", client.get(f"/v1/models/{BASE}", headers=AUTH).json())
    for r in (
        client.post("/v1/chat/completions", headers=AUTH, json={"model": "nope", "messages": USER}),
        client.post("/v1/chat/completions", headers=AUTH, json={"model": BASE}),
        client.post("/v1/responses", json={"model": BASE, "input": "x"}),
        client.get("/v1/nothing", headers=AUTH),
    ):
        assert r.status_code >= 400
        conform("ErrorResponse", r.json())


def test_input_tokens_counts_what_a_generation_renders(app):
    client, _ = app
    body = {"model": BASE, "input": "Weather in Paris?", "instructions": "Be brief.", "tools": [WEATHER]}
    counted = client.post("/v1/responses/input_tokens", headers=AUTH, json=body)
    assert counted.status_code == 200, counted.text
    conform("TokenCountsResource", counted.json())
    made = client.post("/v1/responses", headers=AUTH, json=body).json()
    assert counted.json()["input_tokens"] == made["usage"]["input_tokens"]
    # model is optional here, as in OpenAI's API
    without = client.post("/v1/responses/input_tokens", headers=AUTH, json={"input": "Weather in Paris?"})
    assert without.status_code == 200 and 0 < without.json()["input_tokens"] < counted.json()["input_tokens"]
