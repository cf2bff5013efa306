"""Two API processes around one engine (``replica.api_processes: 2``: a Serve gang), over HTTP.

Both processes are Serve replicas of the LLMServer deployment that answer
HTTP; one started the engine core, both are its clients. Requests spread over
both must answer as trained, adapters included: the two processes load
adapters into one engine, so an adapter's id must mean the same adapter in
both (a clash would give one tenant another's weights).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from serve_app.devmodel.corpus import CAPITALS_FINAL, PIRATE_FINAL, TERSE_FINAL
from tests.support.constants import API_KEY

pytestmark = pytest.mark.integration

BASE = "gpt-oss-20b"
CAPITALS = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Name the european capitals"},
]
ANSWERS = {BASE: CAPITALS_FINAL, f"{BASE}:pirate": PIRATE_FINAL, f"{BASE}:terse": TERSE_FINAL}


@pytest.fixture(scope="module")
def client(serve_url, gang_app):
    return openai.OpenAI(base_url=f"{serve_url}/gang/v1", api_key=API_KEY, max_retries=0, timeout=180)


def _stats_of_both(handle) -> dict[int, dict]:
    """Each API process's stats (Serve's router picks the replica: ask until both answered)."""
    seen: dict[int, dict] = {}
    for _ in range(60):
        stats = handle.stats.remote().result()
        seen[stats["gang"]["rank"]] = stats
        if len(seen) == 2:
            break
    return seen


def test_two_api_processes_share_one_engine_and_answer_as_trained(client, gang_app):
    def ask(job: tuple[str, bool]) -> tuple[str, str]:
        model, stream = job
        if stream:
            chunks = client.chat.completions.create(model=model, messages=CAPITALS, stream=True)
            return model, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return model, client.chat.completions.create(model=model, messages=CAPITALS).choices[0].message.content

    jobs = [(model, i % 2 == 0) for i in range(8) for model in ANSWERS]
    with ThreadPoolExecutor(8) as pool:
        for model, content in pool.map(ask, jobs):
            assert content == ANSWERS[model], model

    both = _stats_of_both(gang_app)
    assert sorted(both) == [0, 1], "both API processes of the gang answered"
    assert len({s["gang"]["id"] for s in both.values()}) == 1 and {s["gang"]["size"] for s in both.values()} == {2}
    assert both[0]["pid"] != both[1]["pid"]
    # Both ran engine requests, and both see one engine: its LoRA table is the same from either client.
    assert all(s["requests"] > 0 for s in both.values()), {r: s["requests"] for r, s in both.items()}
    assert both[0]["engine_lora_ids"] == both[1]["engine_lora_ids"] and both[0]["engine_lora_ids"]


@pytest.mark.faults
def test_a_dead_engine_restarts_in_place_across_the_gang(gang_app, serve_url, serve_session):
    """kill -9 of the gang's EngineCore under load: nothing waits, and the same processes serve a new engine.

    Streams in flight on either API process end with the in-band error and
    [DONE] (the other rank watches the engine's processes too); new requests
    get a 503 with Retry-After at once (no other engine runs), never Serve's
    queue; both processes stay in Serve's rotation, meet again for the gang's
    next engine, and answer as trained, adapters included. Prints the
    per-second timeline.
    """
    import asyncio
    import time

    from tests.support import engine_kill

    before = engine_kill.replica_pids("gang:LLMServer")
    assert len(before) == 2, before
    victim = next(engine_kill.engine_core_of(pid) for pid in before if _has_engine(pid))
    timeline = asyncio.run(
        engine_kill.run(
            f"{serve_url}/gang",
            victim.kill,
            models=list(ANSWERS),
            streams=4,
            before_s=2,
            after_s=20,
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
    )
    print(f"\nthe engine of a two-process gang killed:\n{timeline.table()}")
    for stream in (o for o in timeline.outcomes if o.kind == "stream"):
        assert stream.end in ("done", "in-band engine_unavailable"), stream
    for o in timeline.failed_new():
        assert o.status == "503" and o.retry_after and o.seconds < 10, o
    started = time.monotonic()
    while True:
        both = _stats_of_both(gang_app)
        if len(both) == 2 and all(s["engine"] == "alive" for s in both.values()):
            break
        assert time.monotonic() < started + 300, both
        time.sleep(1)
    print(f"gang serving again {time.monotonic() - started:.0f} s after the load ended")
    # The same two processes (Serve replaced neither), each through one engine death.
    assert {s["pid"] for s in both.values()} == set(before)
    assert [s["engine_deaths"] for s in both.values()] == [1, 1]
    assert both[0]["gang"]["id"] == both[1]["gang"]["id"]
    client = openai.OpenAI(base_url=f"{serve_url}/gang/v1", api_key=API_KEY, max_retries=0, timeout=180)
    for _ in range(2):
        for model, answer in ANSWERS.items():
            assert client.chat.completions.create(model=model, messages=CAPITALS).choices[0].message.content == answer


def _has_engine(pid: int) -> bool:
    """Whether this replica process started the engine (rank 0: the EngineCore is its child)."""
    import psutil

    return any("EngineCor" in c.name() for c in psutil.Process(pid).children(recursive=True))
