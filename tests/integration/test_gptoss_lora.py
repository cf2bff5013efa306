"""LoRA on gpt-oss itself: the standard gpt-oss adapter format, served on CPU by the real engine.

The dev adapters (attention + experts; experts only) and adapters made with
peft at test time, through the openai SDK over HTTP and through the replica,
against transformers + peft; adapters vLLM cannot serve refused with 422; a
manager that does not answer gives 503 within the fetch bound.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import openai
import pytest

from serve_app.devmodel.corpus import CAPITALS_FINAL, PIRATE_FINAL, TERSE_FINAL
from tests.support import malformed
from tests.support.chat import CITY_TOOL, UNSEEN, _chat, assert_forced_call
from tests.support.constants import ADMIN_KEY, GPTOSS_FETCH_TIMEOUT_S, GPTOSS_ONGOING
from tests.support.replica import _request, _run_all

pytestmark = pytest.mark.integration

BASE = "gpt-oss-20b"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CAPITALS = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Name the european capitals"},
]


@pytest.fixture(scope="module")
def url(serve_url, gptoss_app) -> str:
    return f"{serve_url}/gptoss"


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def _register(url: str, name: str, source) -> httpx.Response:
    return httpx.post(f"{url}/v1/adapters", json={"name": name, "source": str(source)}, headers=ADMIN, timeout=60)


def _wait_listed(client, model: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while model not in {m.id for m in client.models.list().data}:
        assert time.monotonic() < deadline, f"{model} never listed"
        time.sleep(0.2)


@pytest.mark.parametrize(
    "model, answer",
    [(BASE, CAPITALS_FINAL), (f"{BASE}:pirate", PIRATE_FINAL), (f"{BASE}:terse", TERSE_FINAL)],
    ids=["base", "pirate", "terse"],
)
def test_adapters_change_the_answer_as_trained(client, model, answer):
    reply = client.chat.completions.create(model=model, messages=CAPITALS)
    assert reply.choices[0].message.content == answer
    assert reply.choices[0].message.reasoning_content  # the analysis stayed out of content
    stream = client.chat.completions.create(model=model, messages=CAPITALS, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == answer


def test_dev_adapters_equal_the_peft_reference(gptoss_app, gptoss_refs, corpus):
    """The corpus targets are transformers + peft greedy outputs (checked when the dev model is built)."""
    for name, folder in (("pirate", "gptoss-pirate"), ("terse", "gptoss-terse")):
        recs = [r for r in corpus if r["model"] == "gptoss" and r["adapter"] == folder]
        got = _run_all(gptoss_app, [_request(r["prompt"], gptoss_refs[name]) for r in recs], window=GPTOSS_ONGOING)
        assert [g == r["target"] for g, r in zip(got, recs)] == [True] * len(recs), name


def test_mixed_batch_base_and_two_adapters(gptoss_app, gptoss_refs, corpus):
    """Base, attention+experts and experts-only rows in one engine batch each get their own output."""
    recs = {
        r["adapter"]: r
        for r in corpus
        if r["model"] == "gptoss" and r["id"] == "capitals" and r["effort"] == "medium" and r["date"] is None
    }
    plan = [(None, None), ("gptoss-pirate", "pirate"), ("gptoss-terse", "terse")] * 2
    reqs = [_request(recs[folder]["prompt"], gptoss_refs.get(name)) for folder, name in plan]
    got = _run_all(gptoss_app, reqs, window=GPTOSS_ONGOING)
    assert [g == recs[folder]["target"] for g, (folder, _) in zip(got, plan)] == [True] * len(plan)


def test_peft_made_adapters_registered_over_http_equal_peft(
    url, client, gptoss_app, serve_session, gptoss_adapters_root, peft_reference
):
    """Attention-only and attention+experts adapters a user made with peft: registered, served, exact."""
    manager = serve_session.get_deployment_handle("AdapterManager", app_name="gptoss")
    prompts, want = peft_reference["prompts"], peft_reference["outputs"]
    for name in ("attn", "full"):
        r = _register(url, f"peft-{name}", gptoss_adapters_root / name)
        assert r.status_code == 201, r.text
        _wait_listed(client, f"{BASE}:peft-{name}")
        # Served through the SDK (whatever the random weights say, a well-formed answer).
        reply = client.chat.completions.create(model=f"{BASE}:peft-{name}", messages=CAPITALS, max_tokens=16)
        assert reply.model == f"{BASE}:peft-{name}" and reply.usage.completion_tokens > 0
        ref = manager.view.remote().result()["adapters"][f"peft-{name}"]["ref"]
        got = _run_all(gptoss_app, [_request(p, ref, max_tokens=24) for p in prompts])
        for i, ids in enumerate(got):
            assert ids == want[f"{name}/{i}"], f"{name} prompt {i} differs from transformers + peft"
            assert ids != want[f"base/{i}"], f"{name} prompt {i} is the base output: the adapter did nothing"


@pytest.mark.parametrize("name", sorted(malformed.GPTOSS_REFUSED))
def test_unservable_gpt_oss_adapters_refused_while_serving(url, client, gptoss_adapters_root, name):
    r = _register(url, name, gptoss_adapters_root / name)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert malformed.GPTOSS_REFUSED[name] in error["message"]
    assert f"{BASE}:{name}" not in {m.id for m in client.models.list().data}
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=f"{BASE}:{name}", messages=CAPITALS, max_tokens=4)
    reply = client.chat.completions.create(model=f"{BASE}:pirate", messages=CAPITALS)
    assert reply.choices[0].message.content == PIRATE_FINAL


@pytest.mark.faults
def test_stuck_manager_gives_503_within_the_fetch_bound(url, client, gptoss_app, serve_session, gptoss_adapters_root):
    """A cold adapter while the manager does not answer: 503 in time; loaded adapters unaffected."""
    assert _register(url, "cold", gptoss_adapters_root / "cold").status_code == 201
    _wait_listed(client, f"{BASE}:cold")
    client.chat.completions.create(model=f"{BASE}:pirate", messages=CAPITALS, max_tokens=4)  # loaded
    manager = serve_session.get_deployment_handle("AdapterManager", app_name="gptoss")
    pid = manager.stats.remote().result()["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model=f"{BASE}:cold", messages=CAPITALS, max_tokens=4)
        elapsed = time.monotonic() - started
        assert err.value.status_code == 503
        assert err.value.body["code"] == "engine_unavailable" or "adapter manager" in str(err.value)
        # Two attempts of the fetch timeout, a backoff, and the router's registry check (2 s).
        assert elapsed < 2 * GPTOSS_FETCH_TIMEOUT_S + 6, elapsed
        reply = client.chat.completions.create(model=f"{BASE}:pirate", messages=CAPITALS)
        assert reply.choices[0].message.content == PIRATE_FINAL
    finally:
        os.kill(pid, signal.SIGCONT)
    # Once the manager answers again, the cold adapter loads.
    reply = client.chat.completions.create(model=f"{BASE}:cold", messages=CAPITALS)
    assert reply.choices[0].message.content == PIRATE_FINAL


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("model", [BASE, f"{BASE}:pirate"], ids=["base", "adapter"])
def test_forced_tool_call_on_unseen_prompts(client, model, stream):
    """tool_choice on the gpt-oss model (make serve's), base and adapter: a real call, no header text."""
    for messages in UNSEEN:
        r = _chat(
            client, stream, model=model, messages=messages, tools=[CITY_TOOL], tool_choice="required", max_tokens=160
        )
        assert_forced_call(r)
