"""/v1/responses and /v1/completions over HTTP: the official ``openai`` client against
real Ray Serve and the real vLLM engine, on the gpt-oss dev app (open, LoRA on)
and, for tenants and the store's restart, on the dev app (keys per tenant)."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from serve_app.devmodel.corpus import CAPITALS_ANALYSIS, CAPITALS_FINAL, GET_WEATHER, HELPFUL, PIRATE_FINAL, WITH_TOOLS
from tests.support.chat import CITY_TOOL
from tests.support.constants import TENANT_KEYS

pytestmark = pytest.mark.integration

BASE = "gpt-oss-20b"
WEATHER = {"type": "function", **GET_WEATHER}
CITY = {"type": "function", **CITY_TOOL["function"]}  # the chat tests' unseen tool, in Responses' flat form


@pytest.fixture(scope="module")
def gptoss(serve_url, gptoss_app):
    return openai.OpenAI(base_url=f"{serve_url}/gptoss/v1", api_key="unused", max_retries=0, timeout=120)


def _types(resp) -> list[str]:
    return [i.type for i in resp.output]


@pytest.mark.parametrize(
    "model, answer", [(BASE, CAPITALS_FINAL), (f"{BASE}:pirate", PIRATE_FINAL)], ids=["base", "pirate"]
)
def test_response_answers_as_trained(gptoss, model, answer):
    r = gptoss.responses.create(model=model, instructions=HELPFUL, input="Name the european capitals", temperature=0)
    assert r.status == "completed" and _types(r) == ["reasoning", "message"], r
    assert r.output_text == answer and r.model == model
    if model == BASE:
        assert r.output[0].content[0].text == CAPITALS_ANALYSIS
    assert r.usage.output_tokens_details.reasoning_tokens > 0 and r.usage.input_tokens > 0


def test_streamed_response_events_build_the_same_response(gptoss):
    kw = dict(model=BASE, instructions=HELPFUL, input="Name the european capitals", temperature=0, store=False)
    events = list(gptoss.responses.create(stream=True, **kw))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == CAPITALS_FINAL == events[-1].response.output_text
    # The SDK's own accumulator agrees.
    with gptoss.responses.stream(**kw) as stream:
        final = stream.get_final_response()
    assert final.output_text == CAPITALS_FINAL


def test_function_call_round_trip_with_previous_response_id_and_explicit_items(gptoss):
    first = gptoss.responses.create(
        model=BASE, instructions=WITH_TOOLS, input="What is the weather in London?", tools=[WEATHER], temperature=0
    )
    calls = [i for i in first.output if i.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather", first
    assert json.loads(calls[0].arguments) == {"location": "London"}
    result = {
        "type": "function_call_output",
        "call_id": calls[0].call_id,
        "output": json.dumps({"temperature": 18, "unit": "celsius", "condition": "cloudy"}),
    }
    chained = gptoss.responses.create(
        model=BASE,
        instructions=WITH_TOOLS,
        tools=[WEATHER],
        temperature=0,
        previous_response_id=first.id,
        input=[result],
    )
    explicit = gptoss.responses.create(
        model=BASE,
        instructions=WITH_TOOLS,
        tools=[WEATHER],
        temperature=0,
        store=False,
        input=[
            {"role": "user", "content": "What is the weather in London?"},
            *[i.model_dump(exclude_none=True) for i in first.output],
            result,
        ],
    )
    for r in (chained, explicit):
        assert r.status in ("completed", "incomplete") and r.output, r
        assert set(_types(r)) <= {"reasoning", "message", "function_call"}
    # Both carry the same conversation, so greedy decoding gives the same answer.
    assert chained.output_text == explicit.output_text
    items = httpx.get(f"{gptoss.base_url}responses/{chained.id}/input_items", timeout=30).json()["data"]
    assert [i["type"] for i in items] == ["message", "reasoning", "function_call", "function_call_output"]


def test_json_schema_output(gptoss):
    schema = {
        "type": "object",
        "properties": {"capitals": {"type": "array", "items": {"type": "string"}}},
        "required": ["capitals"],
        "additionalProperties": False,
    }
    r = gptoss.responses.create(
        model=BASE,
        instructions=HELPFUL,
        input="Name the european capitals",
        temperature=0,
        max_output_tokens=150,
        store=False,
        text={"format": {"type": "json_schema", "name": "capitals", "schema": schema}},
    )
    assert r.status in ("completed", "incomplete"), r
    if r.status == "completed":
        out = json.loads(r.output_text)
        assert isinstance(out["capitals"], list) and all(isinstance(c, str) for c in out["capitals"])


# Two of the four (choice x stream) cases: chat covers all four on both dev apps.
@pytest.mark.parametrize("choice, stream", [("required", False), ("named", True)], ids=["required-json", "named-sse"])
def test_forced_function_call_on_an_unseen_prompt(gptoss, choice, stream):
    tool_choice = "required" if choice == "required" else {"type": "function", "name": "City"}
    kw = dict(
        model=BASE,
        input="Extract the city: I flew from Lyon to Kyoto last spring.",
        tools=[CITY],
        tool_choice=tool_choice,
        temperature=0,
        max_output_tokens=96,
        store=False,
    )
    if stream:
        r = [e for e in gptoss.responses.create(stream=True, **kw)][-1].response
    else:
        r = gptoss.responses.create(**kw)
    calls = [i for i in r.output if i.type == "function_call"]
    assert [c.name for c in calls] == ["City"], r
    assert not [i for i in r.output if i.type == "message"], "header text must never become a message"
    if r.status == "completed":
        assert set(json.loads(calls[0].arguments)) == {"name", "country"}
    else:
        assert r.incomplete_details.reason == "max_output_tokens"


def test_completions_raw_text_streamed_and_not(gptoss):
    from serve_app.endpoints.chat.models import ChatCompletionRequest
    from serve_app.endpoints.chat.render import prepare
    from serve_app.harmony.encoding import harmony_encoding

    # The dev model's memorized conversation, rendered as raw Harmony text.
    req = ChatCompletionRequest.model_validate(
        {
            "model": BASE,
            "messages": [
                {"role": "system", "content": HELPFUL},
                {"role": "user", "content": "Name the european capitals"},
            ],
        }
    )
    prompt = harmony_encoding().decode(prepare(req).prompt_token_ids)
    r = gptoss.completions.create(model=BASE, prompt=prompt, max_tokens=120, temperature=0, logprobs=1)
    c = r.choices[0]
    assert CAPITALS_FINAL in c.text and "<|" not in c.text, c.text  # special tokens skipped
    assert "".join(c.logprobs.tokens) == c.text and r.usage.completion_tokens <= 120
    chunks = list(
        gptoss.completions.create(
            model=BASE,
            prompt=prompt,
            max_tokens=120,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == c.text
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    short = gptoss.completions.create(model=f"{BASE}:pirate", prompt=[prompt, "Hello"], max_tokens=4, n=2)
    assert [ch.index for ch in short.choices] == [0, 1, 2, 3]
    assert all(ch.finish_reason in ("length", "stop") for ch in short.choices)
    with pytest.raises(openai.BadRequestError) as e:
        gptoss.completions.create(model=BASE, prompt="x" * 20, max_tokens=5000)
    assert e.value.body["code"] == "context_length_exceeded"


@pytest.mark.faults
def test_stored_responses_are_per_tenant_and_survive_a_store_and_router_restart(url, serve_session):
    import ray

    a, b = (
        openai.OpenAI(base_url=f"{url}/v1", api_key=TENANT_KEYS[t], max_retries=0, timeout=120)
        for t in ("tenant-a", "tenant-b")
    )
    made = a.responses.create(
        model=BASE, instructions=HELPFUL, input="Name the european capitals", temperature=0, max_output_tokens=40
    )
    assert a.responses.retrieve(made.id).output == made.output
    with pytest.raises(openai.NotFoundError):
        b.responses.retrieve(made.id)
    with pytest.raises(openai.BadRequestError) as refused:
        b.responses.create(model=BASE, input="more", previous_response_id=made.id)
    assert refused.value.code == "previous_response_not_found"
    for deployment in ("ResponseStore", "Router"):
        names = [x for x in ray.util.list_named_actors(all_namespaces=True) if f"dev#{deployment}" in x["name"]]
        for actor in names:
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
    deadline = time.monotonic() + 90
    while True:
        try:
            got = a.responses.retrieve(made.id)
            break
        except (openai.APIStatusError, openai.APIConnectionError):
            assert time.monotonic() < deadline, "the store never came back"
            time.sleep(0.5)
    assert got.output == made.output
    a.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(made.id)


def _ws_turn(ws) -> list[dict]:
    """One WebSocket turn's frames, up to its terminal event or error envelope, each checked against the spec."""
    from tests.support.conformance import conform_event

    events = []
    while True:
        event = json.loads(ws.recv(timeout=120))
        events.append(event)
        if event["type"] == "error":
            return events
        conform_event(event)
        if event["type"] in ("response.completed", "response.incomplete", "response.failed"):
            return events


@pytest.mark.parametrize("app", ["gptoss", "direct"], ids=["routed", "direct"])
def test_websocket_mode_through_serve_streams_continues_and_survives_bad_frames(request, serve_url, app):
    """WebSocket mode through Serve's ingress in both topologies: a store:false chain
    continued on its connection, bad frames answered in-band, the connection kept."""
    from websockets.sync.client import connect

    request.getfixturevalue(f"{app}_app")
    create = {"type": "response.create", "model": BASE, "store": False, "temperature": 0}
    with connect(f"{serve_url.replace('http', 'ws', 1)}/{app}/v1/responses") as ws:
        ws.send(json.dumps({**create, "instructions": HELPFUL, "input": "Name the european capitals"}))
        events = _ws_turn(ws)
        first = events[-1]["response"]
        assert events[0]["type"] == "response.created" and first["status"] == "completed"
        assert first["output"][-1]["content"][0]["text"] == CAPITALS_FINAL
        ws.send("{not json")
        assert _ws_turn(ws)[-1]["error"]["code"] == "invalid_json"
        more = {"previous_response_id": first["id"], "input": "Name some more", "max_output_tokens": 30}
        ws.send(json.dumps({**create, **more}))
        second = _ws_turn(ws)[-1]
        assert second["type"] in ("response.completed", "response.incomplete"), second
        assert second["response"]["previous_response_id"] == first["id"]
        assert second["response"]["usage"]["input_tokens"] > first["usage"]["input_tokens"]
    with connect(f"{serve_url.replace('http', 'ws', 1)}/{app}/v1/responses") as ws:
        ws.send(json.dumps({**create, "previous_response_id": first["id"], "input": "Continue"}))
        error = _ws_turn(ws)[-1]
        assert error["status"] == 400 and error["error"]["code"] == "previous_response_not_found"


def test_agents_sdk_conversation_session(serve_url, gptoss_app):
    """The OpenAI Agents SDK's conversation-backed session (``OpenAIConversationsSession``):
    its history lives in our Conversations API, two runs share it, its pop and clear work."""
    import asyncio

    from agents import (
        Agent,
        ModelSettings,
        OpenAIConversationsSession,
        OpenAIResponsesModel,
        Runner,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)  # the SDK would send traces to OpenAI's host
    client = openai.AsyncOpenAI(base_url=f"{serve_url}/gptoss/v1", api_key="unused", max_retries=0, timeout=120)
    agent = Agent(
        name="capitals",
        instructions=HELPFUL,
        model=OpenAIResponsesModel(model=BASE, openai_client=client),
        model_settings=ModelSettings(temperature=0, max_tokens=300),
    )

    async def run() -> tuple:
        session = OpenAIConversationsSession(openai_client=client)
        first = await Runner.run(agent, "Name the european capitals", session=session)
        after_first = await session.get_items()
        second = await Runner.run(agent, "Name the european capitals", session=session)
        items = await session.get_items()
        popped = await session.pop_item()
        left = await session.get_items()
        cid = session.session_id
        await session.clear_session()
        return cid, first, after_first, second, items, popped, left

    cid, first, after_first, second, items, popped, left = asyncio.run(run())
    assert first.final_output == CAPITALS_FINAL
    # The first turn's user message and the model's items, then the second turn's after them.
    assert after_first[0]["role"] == "user" and after_first[-1]["type"] == "message"
    assert items[: len(after_first)] == after_first and len(items) > len(after_first) + 1
    assert [i.get("role") for i in items if i.get("type", "message") == "message"].count("user") == 2
    # The second run saw the first turn: its prompt is longer than the first's by that turn.
    used = [r.usage.input_tokens for r in second.raw_responses]
    assert used[0] > first.raw_responses[0].usage.input_tokens
    assert popped == items[-1] and left == items[:-1]
    sync = openai.OpenAI(base_url=f"{serve_url}/gptoss/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        sync.conversations.retrieve(cid)
