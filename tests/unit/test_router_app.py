"""The router's Starlette application in-process, with fake replica and store handles.

Routes, the error shape, auth, and each endpoint's output shapes (checked
against the official SDK's types), without Ray or an engine: the integration
tier tests only what needs the engine.
"""

from __future__ import annotations

import json

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.support.fake_router import (
    AUTH,
    BASE,
    OTHER,
    REASONING_THEN_FINAL,
    RUNNING,
    TOOL_CALL,
    WEATHER,
    fresh,
)

EVENTS = TypeAdapter(ResponseStreamEvent)


@pytest.fixture
def client(fakes):
    client, replica, _ = fakes
    fresh(replica)
    return client


def _error(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err


def test_routes_404_405_413_400_401_in_the_error_shape(client):
    _error(client.get("/v1/nothing", headers=AUTH), 404, "not_found")
    err = _error(client.get("/v1/chat/completions", headers=AUTH), 405, "method_not_allowed")
    assert "POST" in err["message"]
    _error(client.put("/v1/responses/resp_x", headers=AUTH), 405, "method_not_allowed")
    _error(client.post("/v1/completions", content=b"x" * 30000, headers=AUTH), 413, "request_too_large")
    _error(client.post("/v1/responses", content=b"{nope", headers=AUTH), 400)
    _error(client.post("/v1/responses", json={"model": BASE, "input": "hi"}), 401, "invalid_api_key")
    # Without an admin key the adapter API does not exist.
    _error(client.get("/v1/adapters", headers=AUTH), 404)
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}
    assert [m["id"] for m in client.get("/v1/models", headers=AUTH).json()["data"]] == [BASE]


def test_chat_completion_keeps_its_shape(client):
    r = client.post(
        "/v1/chat/completions", headers=AUTH, json={"model": BASE, "messages": [{"role": "user", "content": "Hi"}]}
    )
    body = ChatCompletion.model_validate(r.json())
    msg = body.choices[0].message
    assert msg.content == "Hello there!" and msg.model_extra["reasoning_content"] == "The user greets me."


def test_completions_json_stream_echo_and_logprobs(client, fakes):
    _, replica, _ = fakes
    replica.reply = "Paris is the capital.<|return|>"
    r = client.post(
        "/v1/completions", headers=AUTH, json={"model": BASE, "prompt": "The capital:", "max_tokens": 50, "logprobs": 1}
    )
    body = Completion.model_validate(r.json())
    c = body.choices[0]
    assert c.text == "Paris is the capital." and c.finish_reason == "stop"  # the special token is skipped
    assert "".join(c.logprobs.tokens) == c.text and c.logprobs.text_offset[0] == 0
    assert replica.requests[-1].sampling.stop_token_ids == [] and replica.requests[-1].sampling.max_tokens == 50
    r = client.post(
        "/v1/completions",
        headers=AUTH,
        json={"model": BASE, "prompt": ["A:", "B:"], "echo": True, "n": 2, "max_tokens": 3},
    )
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3] and choices[2]["text"].startswith("B:")
    assert all(c["finish_reason"] == "length" for c in choices)
    with client.stream(
        "POST",
        "/v1/completions",
        headers=AUTH,
        json={"model": BASE, "prompt": [1, 2, 3], "stream": True, "stream_options": {"include_usage": True}},
    ) as s:
        lines = [line for line in s.iter_lines() if line]
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert lines[-1] == "data: [DONE]" and chunks[-1]["usage"]["prompt_tokens"] == 3
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "Paris is the capital."
    for bad, param in [
        ({"prompt": ""}, "prompt"),
        ({"prompt": [[1], [300000]]}, "prompt.1"),
        ({"prompt": "x", "max_tokens": 600}, "max_tokens"),
        ({"prompt": "x", "suffix": "y"}, "suffix"),
    ]:
        err = _error(client.post("/v1/completions", headers=AUTH, json={"model": BASE, **bad}), 400)
        assert err["param"] == param, err


def test_responses_output_items_and_usage(client, fakes):
    r = client.post(
        "/v1/responses",
        headers=AUTH,
        json={"model": BASE, "input": "Hi", "instructions": "Be brief.", "metadata": {"k": "v"}},
    )
    resp = Response.model_validate(r.json())
    assert resp.status == "completed" and [i.type for i in resp.output] == ["reasoning", "message"]
    assert resp.output[0].content[0].text == "The user greets me." and resp.output_text == "Hello there!"
    assert resp.usage.output_tokens_details.reasoning_tokens > 0 and resp.metadata == {"k": "v"}
    _, replica, _ = fakes
    prompt = _decode(replica.requests[-1].prompt_token_ids)
    assert "Be brief." in prompt and prompt.endswith("<|start|>assistant")


def test_responses_function_call_and_incomplete(client, fakes):
    _, replica, _ = fakes
    replica.reply = TOOL_CALL
    r = client.post(
        "/v1/responses",
        headers=AUTH,
        json={"model": BASE, "input": "Weather in Paris?", "tools": [WEATHER], "tool_choice": "required"},
    )
    resp = Response.model_validate(r.json())
    call = resp.output[-1]
    assert (
        call.type == "function_call"
        and call.name == "get_weather"
        and json.loads(call.arguments) == {"location": "Paris"}
    )
    assert replica.requests[-1].sampling.structural_tag  # required: the grammar holds it
    replica.reply = REASONING_THEN_FINAL
    r = client.post("/v1/responses", headers=AUTH, json={"model": BASE, "input": "Hi", "max_output_tokens": 12})
    resp = Response.model_validate(r.json())
    assert resp.status == "incomplete" and resp.incomplete_details.reason == "max_output_tokens"


def test_responses_stream_events_parse_with_the_sdk_types(client, fakes):
    _, replica, _ = fakes
    replica.reply = TOOL_CALL
    with client.stream(
        "POST",
        "/v1/responses",
        headers=AUTH,
        json={"model": BASE, "input": "Weather?", "tools": [WEATHER], "stream": True},
    ) as s:
        blocks = [b for b in s.read().decode().split("\n\n") if b]
    # The last is data: [DONE], as Open Responses requires and the openai SDK stops at.
    assert blocks[-1] == "data: [DONE]"
    events = []
    for block in blocks[:-1]:
        name, data = block.split("\n")
        event = EVENTS.validate_python(json.loads(data[6:]))
        assert name == f"event: {event.type}"
        events.append(event)
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "response.reasoning_text.delta" in types and "response.function_call_arguments.done" in types
    done = [e for e in events if e.type == "response.output_item.done"]
    assert [e.item.type for e in done] == ["reasoning", "function_call"]
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"location": "Paris"} == json.loads(events[-1].response.output[1].arguments)


def test_stored_responses_are_per_tenant_and_continue(client, fakes):
    _, replica, store = fakes
    replica.reply = TOOL_CALL
    first = client.post(
        "/v1/responses", headers=AUTH, json={"model": BASE, "input": "Weather in Paris?", "tools": [WEATHER]}
    ).json()
    assert client.get(f"/v1/responses/{first['id']}", headers=AUTH).json()["output"] == first["output"]
    _error(client.get(f"/v1/responses/{first['id']}", headers=OTHER), 404, "response_not_found")
    call = first["output"][-1]
    replica.reply = REASONING_THEN_FINAL
    follow = {
        "model": BASE,
        "tools": [WEATHER],
        "previous_response_id": first["id"],
        "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": '{"temp": 21}'}],
    }
    _error(client.post("/v1/responses", headers=OTHER, json=follow), 400, "previous_response_not_found")
    second = client.post("/v1/responses", headers=AUTH, json=follow).json()
    assert second["status"] == "completed" and second["previous_response_id"] == first["id"]
    prompt = _decode(replica.requests[-1].prompt_token_ids)
    # The open turn keeps its reasoning; the call and its result are both there.
    assert "I need the weather." in prompt and "to=functions.get_weather" in prompt and '{"temp": 21}' in prompt
    items = client.get(f"/v1/responses/{second['id']}/input_items", headers=AUTH).json()["data"]
    assert [i["type"] for i in items] == ["message", "reasoning", "function_call", "function_call_output"]
    # A new question after the final answer: the finished turn's analysis is dropped.
    third = client.post(
        "/v1/responses", headers=AUTH, json={"model": BASE, "previous_response_id": second["id"], "input": "Thanks"}
    )
    assert third.status_code == 200
    prompt = _decode(replica.requests[-1].prompt_token_ids)
    assert "I need the weather." not in prompt and "Hello there!" in prompt
    assert client.delete(f"/v1/responses/{first['id']}", headers=AUTH).json()["deleted"] is True
    _error(client.delete(f"/v1/responses/{first['id']}", headers=AUTH), 404)
    before = store.count()
    client.post("/v1/responses", headers=AUTH, json={"model": BASE, "input": "Hi", "store": False})
    assert store.count() == before


@pytest.mark.parametrize(
    "body, param",
    [
        ({"input": [{"type": "web_search_call"}]}, "input.0"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input.0.content.0.type",
        ),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"input": "x", "tool_choice": {"type": "function", "name": "nope"}}, None),
        ({"input": "x", "max_output_tokens": 600}, "max_output_tokens"),
        ({"input": "x", "previous_response_id": "resp_missing"}, "previous_response_id"),
    ],
    ids=["item-type", "image", "tool-type", "named-unknown", "too-long", "unknown-previous"],
)
def test_responses_refusals_are_4xx_naming_the_field(client, body, param):
    r = client.post("/v1/responses", headers=AUTH, json={"model": BASE, **body})
    assert r.status_code in (400, 404), r.text
    if param is not None:
        assert r.json()["error"]["param"] == param, r.json()


def test_response_items_render_as_openai_harmony_does():
    """The Responses input path against a conversation built with openai_harmony by hand."""
    from openai_harmony import Author, Conversation, DeveloperContent, Message, ReasoningEffort, Role, SystemContent

    from serve_app.endpoints.responses import render
    from serve_app.endpoints.responses.models import ResponsesRequest
    from serve_app.harmony.chat import prepare_conversation
    from serve_app.harmony.encoding import harmony_encoding

    req = ResponsesRequest.model_validate(
        {
            "model": BASE,
            "instructions": "Be brief.",
            "tools": [WEATHER],
            "reasoning": {"effort": "low"},
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [],
                    "content": [{"type": "reasoning_text", "text": "Call it."}],
                },
                {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"location":"Paris"}'},
                {"type": "function_call_output", "call_id": "c1", "output": "21C"},
            ],
        }
    )
    import datetime

    day = datetime.date(2026, 12, 1)
    ours = prepare_conversation(
        render.messages(req.instructions, req.items),
        render.tools(req),
        render.rules(req),
        render.effort(req, "medium"),
        day,
    ).prompt_token_ids
    from openai_harmony import ToolDescription

    dev = (
        DeveloperContent.new()
        .with_instructions("Be brief.")
        .with_function_tools(
            [ToolDescription.new("get_weather", "Weather of a city", parameters=WEATHER["parameters"])]
        )
    )
    convo = Conversation.from_messages(
        [
            Message.from_role_and_content(
                Role.SYSTEM,
                SystemContent.new()
                .with_reasoning_effort(ReasoningEffort.LOW)
                .with_conversation_start_date("2026-12-01"),
            ),
            Message.from_role_and_content(Role.DEVELOPER, dev),
            Message.from_role_and_content(Role.USER, "Weather in Paris?"),
            Message.from_role_and_content(Role.ASSISTANT, "Call it.").with_channel("analysis"),
            Message.from_role_and_content(Role.ASSISTANT, '{"location":"Paris"}')
            .with_channel("commentary")
            .with_recipient("functions.get_weather")
            .with_content_type("<|constrain|>json"),
            Message.from_author_and_content(Author.new(Role.TOOL, "functions.get_weather"), "21C")
            .with_channel("commentary")
            .with_recipient("assistant"),
        ]
    )
    assert ours == list(harmony_encoding().render_conversation_for_completion(convo, Role.ASSISTANT))


def _decode(ids) -> str:
    from serve_app.harmony.encoding import harmony_encoding

    return harmony_encoding().decode(ids)


@pytest.mark.parametrize("stream", [False, True])
def test_no_running_replica_is_a_503_with_retry_after_not_a_hang(client, fakes, stream):
    import time

    _, replica, _ = fakes
    RUNNING["replicas"] = 0
    replica.delay_s = 30.0  # the request waits in Serve's queue for a replica that is not there
    body = {"model": BASE, "messages": [{"role": "user", "content": "Hi"}], "stream": stream}
    t0 = time.monotonic()
    r = client.post("/v1/chat/completions", json=body, headers=AUTH)
    elapsed = time.monotonic() - t0
    assert r.status_code == 503 and r.headers["retry-after"] == "7"
    assert r.json()["error"]["code"] == "no_replica_available" and r.json()["error"]["type"] == "service_unavailable"
    assert elapsed < 5 and replica.streams[-1].cancelled


def test_a_busy_replica_keeps_the_request_past_the_bound(client, fakes):
    _, replica, _ = fakes
    replica.delay_s = 1.0  # three times the bound: a slow prefill, a cold adapter, a full replica
    body = {"model": BASE, "messages": [{"role": "user", "content": "Hi"}]}
    r = client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "Hello there!"


def test_a_death_noticed_late_still_ends_the_wait_soon_after(client, fakes):
    """The controller still says RUNNING when the bound passes; the 503 follows within a second of it learning."""
    import threading
    import time

    _, replica, _ = fakes
    replica.delay_s = 30.0
    timer = threading.Timer(1.0, lambda: RUNNING.update(replicas=0))
    timer.start()
    t0 = time.monotonic()
    body = {"model": BASE, "messages": [{"role": "user", "content": "Hi"}]}
    r = client.post("/v1/chat/completions", json=body, headers=AUTH)
    elapsed = time.monotonic() - t0
    timer.join()
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_replica_available"
    assert 1.0 <= elapsed < 3.5, elapsed


CHAT = {"model": BASE, "messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_request_that_met_a_dead_engine_runs_on_another_replica(client, fakes, stream):
    _, replica, _ = fakes
    RUNNING["replicas"] = 2
    replica.dead_calls = 1
    sent = len(replica.requests)
    r = client.post("/v1/chat/completions", json={**CHAT, "stream": stream}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert "Hello there!" in (r.text if stream else r.json()["choices"][0]["message"]["content"])
    assert len(replica.requests) - sent == 2 and replica.streams[-2].cancelled


def test_a_dead_engine_with_no_other_replica_is_a_fast_503_with_retry_after(client, fakes):
    import time

    _, replica, _ = fakes
    replica.dead_calls = 1
    sent = len(replica.requests)
    t0 = time.monotonic()
    r = client.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert _error(r, 503, "engine_unavailable")["type"] == "service_unavailable"
    assert r.headers["retry-after"] == "7" and time.monotonic() - t0 < 1.0
    assert len(replica.requests) - sent == 1


def test_retries_of_a_dead_engine_are_bounded(client, fakes):
    _, replica, _ = fakes
    RUNNING["replicas"] = 2
    replica.dead_calls = 100
    sent = len(replica.requests)
    r = client.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    _error(r, 503, "engine_unavailable")
    assert r.headers["retry-after"] == "7"
    assert len(replica.requests) - sent == 1 + 3  # router.engine_retries


def test_a_stream_whose_engine_dies_after_its_first_token_ends_in_band_not_again(client, fakes):
    _, replica, _ = fakes
    RUNNING["replicas"] = 2
    replica.die_after = 2
    sent = len(replica.requests)
    r = client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH)
    assert r.status_code == 200
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] == "engine_unavailable"
    assert len(replica.requests) - sent == 1


def _deep(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


USER = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/chat/completions", {"messages": USER, "logit_bias": {"x": 1}}, "logit_bias.x"),
        ("/v1/chat/completions", {"messages": USER, "logit_bias": {"5": 101}}, "logit_bias.5"),
        ("/v1/chat/completions", {"messages": USER, "logit_bias": {"-1": 1}}, "logit_bias"),
        ("/v1/chat/completions", {"messages": USER, "n": 129}, "n"),
        ("/v1/chat/completions", {"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        (
            "/v1/chat/completions",
            {
                "messages": USER,
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": _deep(40)}},
            },
            "response_format.json_schema.schema",
        ),
        (
            "/v1/chat/completions",
            {"messages": USER, "tools": [{"type": "function", "function": {"name": "f", "parameters": _deep(40)}}]},
            "tools.0.function.parameters",
        ),
        (
            "/v1/responses",
            {"input": "x", "text": {"format": {"type": "json_schema", "name": "x", "schema": _deep(40)}}},
            "text.format.schema",
        ),
        ("/v1/responses", {"input": [{"role": "user", "content": "x"}] * 65}, "input"),
        ("/v1/completions", {"prompt": ["x"] * 2049}, "prompt"),
        ("/v1/completions", {"prompt": "x", "stop": ["y" * 1025]}, "stop"),
    ],
    ids=[
        "bias-key",
        "bias-value",
        "bias-negative-id",
        "n",
        "stop-count",
        "chat-schema-depth",
        "tool-schema-depth",
        "responses-schema-depth",
        "responses-items",
        "prompts",
        "stop-chars",
    ],
)
def test_costly_fields_past_their_bound_are_a_400_naming_them(client, fakes, path, body, param):
    _, replica, _ = fakes
    before = len(replica.requests)
    r = client.post(path, headers=AUTH, json={"model": BASE, **body})
    err = _error(r, 400)
    assert err["param"] == param and err["type"] == "invalid_request_error", err
    assert len(replica.requests) == before  # refused before any replica was asked


def test_logit_bias_reaches_the_engine_as_token_ids(client, fakes):
    _, replica, _ = fakes
    r = client.post(
        "/v1/chat/completions", headers=AUTH, json={"model": BASE, "messages": USER, "logit_bias": {"17": -100}}
    )
    assert r.status_code == 200, r.text
    assert replica.requests[-1].sampling.logit_bias == {17: -100.0}
    r = client.post("/v1/completions", headers=AUTH, json={"model": BASE, "prompt": "Hi", "logit_bias": {"9": 5}})
    assert r.status_code == 200 and replica.requests[-1].sampling.logit_bias == {9: 5.0}


def test_a_forced_constraint_names_its_field_for_the_engine(client, fakes):
    """If the engine's grammar backend refuses the tag, its 400 names the field the tag came from."""
    _, replica, _ = fakes
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    client.post("/v1/chat/completions", headers=AUTH, json={"model": BASE, "messages": USER, "response_format": fmt})
    assert replica.requests[-1].sampling.constraint_param == "response_format.json_schema.schema"
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    body = {"model": BASE, "messages": USER, "tools": [tool], "tool_choice": "required"}
    client.post("/v1/chat/completions", headers=AUTH, json=body)
    assert replica.requests[-1].sampling.constraint_param == "tools"
    body = {"model": BASE, "input": "x", "text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}
    client.post("/v1/responses", headers=AUTH, json=body)
    assert replica.requests[-1].sampling.constraint_param == "text.format.schema"


def test_openapi_document_is_valid_and_names_every_route_and_nothing_else(client, fakes):
    from openapi_spec_validator import validate

    from serve_app.router.openapi import route_table

    r = client.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    router = fakes[0].app
    assert documented == route_table(router.routes)
    for (path, _method), op in ((k, doc["paths"][k[0]][k[1]]) for k in documented):
        if path.startswith("/v1/"):
            scheme = "AdminKey" if path.startswith("/v1/adapters") else "ApiKey"
            assert op["security"] == [{scheme: []}], path
        for status, answer in op["responses"].items():
            if status[0] in "45":
                assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/Error"), (path, status)
    schemas = doc["components"]["schemas"]
    # Requests as the router parses them: its bounds and fields, not OpenAI's.
    chat = schemas["ChatCompletionRequest"]
    assert {"messages", "model", "logit_bias", "response_format"} <= set(chat["properties"])
    assert {"ChatCompletion", "ChatCompletionChunk", "Response", "ResponseStreamEvent", "Adapter"} <= set(schemas)


def test_item_references_replay_the_callers_stored_items(client, fakes):
    """A tool loop as a Responses agent SDK runs it by default: step 2 names step 1's items by id."""
    _, replica, _ = fakes
    replica.reply = TOOL_CALL
    first = client.post(
        "/v1/responses", headers=AUTH, json={"model": BASE, "input": "Weather in Paris?", "tools": [WEATHER]}
    ).json()
    reasoning, call = first["output"][0], first["output"][1]
    assert reasoning["type"] == "reasoning" and call["type"] == "function_call"
    replica.reply = REASONING_THEN_FINAL
    step2 = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "item_reference", "id": reasoning["id"]},
        {"id": call["id"]},  # type left out, as OpenAI's spec allows
        {"type": "function_call_output", "call_id": call["call_id"], "output": "21C"},
    ]
    r = client.post("/v1/responses", headers=AUTH, json={"model": BASE, "input": step2, "tools": [WEATHER]})
    assert r.status_code == 200, r.text
    prompt = _decode(replica.requests[-1].prompt_token_ids)
    assert "I need the weather." in prompt and "to=functions.get_weather" in prompt and "21C" in prompt
    # Another tenant's item, an unknown one, one of a deleted response: the same 404, naming it.
    for headers, ref in ((OTHER, reasoning["id"]), (AUTH, "rs_nope")):
        r = client.post("/v1/responses", headers=headers, json={"model": BASE, "input": [{"id": ref}]})
        err = _error(r, 404)
        assert err["param"] == "input.0.id" and ref in err["message"]
    assert client.delete(f"/v1/responses/{first['id']}", headers=AUTH).status_code == 200
    r = client.post("/v1/responses", headers=AUTH, json={"model": BASE, "input": [{"id": call["id"]}]})
    _error(r, 404)


@pytest.mark.parametrize(
    "path, body, param",
    [
        (
            "/v1/responses",
            {"input": "x", "text": {"format": {"type": "json_schema", "description": "d"}}},
            "text.format",
        ),
        ("/v1/responses", {"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format"),
        ("/v1/chat/completions", {"messages": USER, "response_format": {"type": "json_schema"}}, "response_format"),
    ],
    ids=["responses-no-name", "responses-no-schema", "chat-no-json-schema"],
)
def test_a_json_schema_format_without_its_schema_is_a_400(client, path, body, param):
    """Found by the fuzzer: accepted, then echoed as a format OpenAI's schema refuses."""
    err = _error(client.post(path, headers=AUTH, json={"model": BASE, **body}), 400)
    assert err["param"] == param, err
