"""The direct topology (``topology: direct``) on real Ray Serve and the real engine, over HTTP.

One LLMServer deployment: the router's application in the engine replica's
own process. It must answer as the routed gptoss app does (the same config
otherwise), token for token, streamed or not, base and adapters; keep an
adapter on the replica that loaded it; give typed errors before the first
token; abort the engine request when the client goes; and refuse past its
bounds with our 429, never Serve's plain-text one.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from serve_app.devmodel.corpus import CAPITALS_FINAL, PIRATE_FINAL, TERSE_FINAL
from tests.support.chat import CITY_TOOL, UNSEEN, _chat, assert_forced_call
from tests.support.constants import GPTOSS_ONGOING, GPTOSS_QUEUED
from tests.support.streams import assert_disconnect_aborts, assert_overload_refused

pytestmark = pytest.mark.integration

BASE = "gpt-oss-20b"
CAPITALS = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Name the european capitals"},
]
MODELS = [BASE, f"{BASE}:pirate", f"{BASE}:terse"]


@pytest.fixture(scope="module")
def url(serve_url, direct_app) -> str:
    return f"{serve_url}/direct"


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def routed(serve_url, gptoss_app):
    """The same config in the routed topology."""
    return openai.OpenAI(base_url=f"{serve_url}/gptoss/v1", api_key="unused", max_retries=0, timeout=120)


def test_adapters_answer_as_trained(client, direct_app):
    for model, answer in zip(MODELS, (CAPITALS_FINAL, PIRATE_FINAL, TERSE_FINAL), strict=True):
        reply = client.chat.completions.create(model=model, messages=CAPITALS)
        assert reply.choices[0].message.content == answer, model
        assert reply.choices[0].message.reasoning_content
        stream = client.chat.completions.create(model=model, messages=CAPITALS, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == answer
    # Each adapter loaded once, on the one replica, and kept there: its first
    # request went through Serve's multiplexed routing, the next ones ran here.
    stats = direct_app.stats.remote().result()
    assert sorted(name.partition("@")[0] for name in stats["adapters"]) == ["pirate", "terse"]
    assert sorted(stats["loads"].values()) == [1, 1]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_same_tokens_as_the_routed_topology_on_unseen_prompts(client, routed, stream):
    """Greedy: the direct and routed apps (one engine config) give the same answer, tool calls included."""
    for model in MODELS:
        for messages in UNSEEN:
            kw = dict(model=model, messages=messages, max_tokens=48)
            assert _chat(client, stream, **kw) | {"usage": None} == _chat(routed, stream, **kw) | {"usage": None}
            kw |= dict(tools=[CITY_TOOL], tool_choice="required", max_tokens=160)
            forced = _chat(client, stream, **kw)
            # Call ids are random; everything else is the engine's.
            same = _chat(routed, stream, **kw)
            assert [c[1:] for c in forced["calls"]] == [c[1:] for c in same["calls"]]
            assert forced | {"usage": None, "calls": None} == same | {"usage": None, "calls": None}
            if model != f"{BASE}:terse":  # the experts-only adapter reasons past 160 tokens here
                assert_forced_call(forced)


def test_typed_errors_before_the_first_token(url):
    cases = [
        ({"model": f"{BASE}:nope", "messages": CAPITALS}, 404, "model_not_found"),
        ({"model": BASE, "messages": CAPITALS, "temperature": "hot"}, 400, None),
        ({"model": BASE, "messages": []}, 400, None),
    ]
    for body, status, code in cases:
        for stream in (False, True):
            r = httpx.post(f"{url}/v1/chat/completions", json=body | {"stream": stream}, timeout=60)
            assert r.status_code == status, r.text
            assert r.headers["content-type"].startswith("application/json")
            err = r.json()["error"]
            assert set(err) == {"message", "type", "param", "code"} and err["message"]
            if code is not None:
                assert err["code"] == code
    r = httpx.get(f"{url}/v1/models", timeout=30)
    assert [m["id"] for m in r.json()["data"]] == [BASE, f"{BASE}:pirate", f"{BASE}:terse"]


def test_client_disconnect_aborts_the_engine_request(url, direct_app):
    assert_disconnect_aborts(url, direct_app, CAPITALS)


def test_past_its_bounds_a_429_in_our_shape_while_streams_complete(url):
    assert_overload_refused(url, GPTOSS_ONGOING, GPTOSS_QUEUED, CAPITALS)
