"""Per-tenant quotas over HTTP, counted over two API processes (the gang app: one engine, two Serve replicas).

The QuotaKeeper is the one counter both processes ask: a tenant with
``max_concurrent_requests: 2`` runs two requests whichever processes took
them, the third gets 429 in OpenAI's shape with ``Retry-After`` and
``x-ratelimit-*``; ``tokens_per_minute`` refuses once the minute's tokens are
spent; a tenant without a quota is never refused and keeps its latency while
another floods.
"""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.constants import API_KEY, QUOTA_KEYS, QUOTAS

pytestmark = pytest.mark.integration

BASE = "gpt-oss-20b"
COUNT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Count from one to twenty"},
]
CAPITALS = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Name the european capitals"},
]


@pytest.fixture(scope="module")
def url(serve_url, gang_app) -> str:
    return f"{serve_url}/gang"


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _body(messages=COUNT, stream=True, max_tokens=400, **extra) -> dict:
    return {"model": BASE, "messages": messages, "stream": stream, "max_tokens": max_tokens, **extra}


def test_concurrency_is_counted_over_both_api_processes(url, serve_session):
    limit = QUOTAS["flood"]["max_concurrent_requests"]
    flood = _auth(QUOTA_KEYS["flood"])
    with httpx.Client(timeout=120) as client:
        running = []
        for _ in range(limit):
            # ignore_eos and a long max_tokens keep them running (seconds) while the others are tried.
            body = _body(ignore_eos=True, max_tokens=1900)
            r = client.send(
                client.build_request("POST", f"{url}/v1/chat/completions", json=body, headers=flood),
                stream=True,
            )
            assert r.status_code == 200, r.read()
            assert r.headers["x-ratelimit-limit-requests"] == str(limit)
            # Its first event: it runs. The line iterator is kept: dropping it closes the stream.
            lines = r.iter_lines()
            next(lines)
            running.append((r, lines))

        keeper = serve_session.get_deployment_handle("QuotaKeeper", app_name="gang")
        assert keeper.running.remote("flood").result() == limit

        # Six more, spread by Serve over both processes: every one refused, whichever it reached.
        def one(_):
            return httpx.post(f"{url}/v1/chat/completions", json=_body(stream=False), headers=flood, timeout=60)

        with ThreadPoolExecutor(6) as pool:
            refused = list(pool.map(one, range(6)))
        for r in refused:
            assert r.status_code == 429, r.text
            err = r.json()["error"]
            assert err["type"] == "requests" and err["code"] == "rate_limit_exceeded", err
            assert f"limit {limit}" in err["message"]
            assert int(r.headers["retry-after"]) >= 1 and int(r.headers["retry-after-ms"]) >= 1
            assert r.headers["x-ratelimit-remaining-requests"] == "0"
        # A tenant without a quota is not refused meanwhile.
        calm = httpx.post(f"{url}/v1/chat/completions", json=_body(CAPITALS, stream=False), headers=_auth(API_KEY))
        assert calm.status_code == 200 and "x-ratelimit-limit-requests" not in calm.headers
        for r, _ in running:
            r.close()  # the client goes away: its slot comes back
    # Both slots come back (each release travels on its own), then a request runs with one to spare.
    deadline = time.monotonic() + 20
    while keeper.running.remote("flood").result() > 0:
        assert time.monotonic() < deadline, "the closed streams' slots never came back"
        time.sleep(0.2)
    r = httpx.post(f"{url}/v1/chat/completions", json=_body(CAPITALS, stream=False), headers=flood, timeout=60)
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining-requests"] == str(limit - 1), r.text


def test_tokens_per_minute_refuse_once_spent(url):
    tpm = QUOTAS["meter"]["tokens_per_minute"]
    meter = _auth(QUOTA_KEYS["meter"])
    spent, r = 0, None
    for _ in range(20):
        r = httpx.post(f"{url}/v1/chat/completions", json=_body(CAPITALS, stream=False), headers=meter, timeout=60)
        if r.status_code != 200:
            break
        assert r.headers["x-ratelimit-limit-tokens"] == str(tpm)
        assert int(r.headers["x-ratelimit-remaining-tokens"]) <= tpm
        spent += r.json()["usage"]["total_tokens"]
    assert r is not None and r.status_code == 429, "never refused"
    assert spent <= tpm + r.json().get("usage", {}).get("total_tokens", 1000)
    err = r.json()["error"]
    assert err["type"] == "tokens" and err["code"] == "rate_limit_exceeded" and "tokens per min" in err["message"]
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-ratelimit-remaining-tokens"] == "0" or int(r.headers["x-ratelimit-remaining-tokens"]) < 200
    assert r.headers["x-ratelimit-reset-tokens"].endswith("s")


def _ttft(url: str, key: str) -> float | None:
    start = time.monotonic()
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=_body(CAPITALS, max_tokens=64), headers=_auth(key), timeout=60
    ) as r:
        if r.status_code != 200:
            return None
        first = None
        for line in r.iter_lines():
            if first is None and line.startswith("data: {") and '"choices":[{' in line:  # the first output
                first = time.monotonic() - start
        return first


def test_a_flooding_tenant_is_held_and_the_other_keeps_its_latency(url):
    """The flood: 8 clients of one tenant sending back to back (after a 429, waiting as told);
    the other tenant's TTFT before and during."""
    before = [_ttft(url, API_KEY) for _ in range(8)]
    stop = threading.Event()
    statuses: list[int] = []

    def flood():
        with httpx.Client(timeout=120) as client:
            while not stop.is_set():
                r = client.post(
                    f"{url}/v1/chat/completions",
                    json=_body(COUNT, stream=False, max_tokens=200),
                    headers=_auth(QUOTA_KEYS["flood"]),
                )
                statuses.append(r.status_code)
                if r.status_code == 429:  # as the openai SDKs do: wait what retry-after-ms says
                    time.sleep(int(r.headers["retry-after-ms"]) / 1000)

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(2)
    during = [_ttft(url, API_KEY) for _ in range(8)]
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert None not in before and None not in during, (before, during)
    assert set(statuses) <= {200, 429} and statuses.count(429) > 0 and statuses.count(200) > 0
    p50_before, p50_during = statistics.median(before), statistics.median(during)
    print(
        f"\nquota flood: flood tenant {statuses.count(200)} x 200, {statuses.count(429)} x 429; "
        f"calm tenant TTFT p50 {p50_before * 1000:.0f} ms before, {p50_during * 1000:.0f} ms during"
    )
