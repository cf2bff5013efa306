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

pytestmark = pytest.mark.integration

BASE = "gpt-oss-20b"
CAPITALS = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Name the european capitals"},
]
ANSWERS = {BASE: CAPITALS_FINAL, f"{BASE}:pirate": PIRATE_FINAL, f"{BASE}:terse": TERSE_FINAL}


@pytest.fixture(scope="module")
def client(serve_url, gang_app):
    return openai.OpenAI(base_url=f"{serve_url}/gang/v1", api_key="unused", max_retries=0, timeout=180)


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
