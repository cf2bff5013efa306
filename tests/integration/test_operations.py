"""Running it for real: the auth matrix over HTTP, Prometheus metrics by adapter,
and backpressure (429 + Retry-After while running streams complete)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.support.constants import (
    ADMIN_KEY,
    API_KEY,
    GPTOSS_ONGOING,
    GPTOSS_QUEUED,
    METRICS_PORT,
    TENANT_KEYS,
)
from tests.support.streams import assert_overload_refused

pytestmark = pytest.mark.integration

BASE = "gpt-oss-20b"
HI = [{"role": "user", "content": "Hello"}]


def _bearer(key: str | None) -> dict:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _chat(url: str, key: str | None, model: str) -> httpx.Response:
    body = {"model": model, "messages": HI, "max_tokens": 8}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=_bearer(key), timeout=120)


def _models(url: str, key: str | None) -> httpx.Response:
    return httpx.get(f"{url}/v1/models", headers=_bearer(key), timeout=30)


def _ids(r: httpx.Response) -> set[str]:
    return {m["id"] for m in r.json()["data"]}


def test_auth_matrix(url, refs):
    a, b = TENANT_KEYS["tenant-a"], TENANT_KEYS["tenant-b"]
    # (who, key, request, expected status): printed as the matrix with -s.
    cases = [
        ("no key", None, lambda: _chat(url, None, BASE), 401),
        ("no key", None, lambda: _models(url, None), 401),
        ("wrong key", "sk-wrong-0123456789", lambda: _chat(url, "sk-wrong-0123456789", BASE), 401),
        ("admin key", ADMIN_KEY, lambda: _chat(url, ADMIN_KEY, BASE), 401),  # not an inference key
        ("all-adapters key", API_KEY, lambda: _chat(url, API_KEY, f"{BASE}:terse"), 200),
        ("tenant A", a, lambda: _chat(url, a, BASE), 200),
        ("tenant A", a, lambda: _chat(url, a, f"{BASE}:pirate"), 200),
        ("tenant A", a, lambda: _chat(url, a, f"{BASE}:terse"), 404),  # tenant B's
        ("tenant A", a, lambda: httpx.get(f"{url}/v1/models/{BASE}:terse", headers=_bearer(a)), 404),
        ("tenant B", b, lambda: _chat(url, b, f"{BASE}:pirate-copy"), 200),
        ("tenant B", b, lambda: _chat(url, b, f"{BASE}:pirate"), 404),  # tenant A's
        ("tenant A", a, lambda: httpx.get(f"{url}/v1/adapters", headers=_bearer(a)), 403),
        ("tenant B", b, lambda: httpx.delete(f"{url}/v1/adapters/pirate", headers=_bearer(b)), 403),
        ("no key", None, lambda: httpx.get(f"{url}/health"), 200),
        ("no key", None, lambda: httpx.get(f"{url}/ready", timeout=30), 200),
    ]
    rows = []
    for who, _key, call, expected in cases:
        r = call()
        rows.append(
            (
                who,
                r.request.method,
                r.request.url.path.removeprefix("/dev"),
                (r.request.content or b"")[:60],
                r.status_code,
                expected,
            )
        )
        assert r.status_code == expected, (who, r.request.url, r.text)
        if r.status_code >= 400:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        if r.status_code == 401:
            assert r.headers["www-authenticate"] == "Bearer"
    print("\n| caller | request | status |\n|---|---|---:|")
    for who, method, path, body, status, _ in rows:
        model = re.search(rb'"model":\s*"([^"]+)"', body)
        print(f"| {who} | {method} {path}{' ' + model.group(1).decode() if model else ''} | {status} |")

    # Another tenant's adapter is indistinguishable from one that does not exist.
    theirs = _chat(url, a, f"{BASE}:terse").json()["error"]
    missing = _chat(url, a, f"{BASE}:no-such-adapter").json()["error"]
    assert theirs == {**missing, "message": missing["message"].replace("no-such-adapter", "terse")}

    assert _ids(_models(url, a)) == {BASE, f"{BASE}:pirate"}
    assert _ids(_models(url, b)) == {BASE, f"{BASE}:terse", f"{BASE}:pirate-copy"}
    assert {f"{BASE}:pirate", f"{BASE}:terse", f"{BASE}:pirate-copy"} <= _ids(_models(url, API_KEY))


def test_keys_never_reach_the_logs(url):
    import ray

    # A failing request with a key in its header, so that error paths log too.
    _chat(url, "sk-wrong-logged-0123456789", BASE)
    _chat(url, TENANT_KEYS["tenant-a"], f"{BASE}:terse")
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    secrets = [API_KEY, ADMIN_KEY, "sk-wrong-logged-0123456789", *TENANT_KEYS.values()]
    leaked = [(f.name, k) for f in logs.rglob("*") if f.is_file() for k in secrets if k.encode() in f.read_bytes()]
    assert not leaked


def test_no_keys_configured_means_open(serve_url, gptoss_app):
    r = httpx.post(
        f"{serve_url}/gptoss/v1/chat/completions", json={"model": BASE, "messages": HI, "max_tokens": 4}, timeout=120
    )
    assert r.status_code == 200, r.text
    # Without router.cors_allow_origins, browsers get no CORS headers at all.
    r = httpx.options(
        f"{serve_url}/gptoss/v1/models",
        headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in r.headers


def _metric_lines(name: str) -> list[str]:
    text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
    return [line for line in text.splitlines() if line.startswith(name)]


def test_metrics_by_adapter_after_traffic(url, refs):
    a = TENANT_KEYS["tenant-a"]
    assert _chat(url, a, f"{BASE}:pirate").status_code == 200
    assert _chat(url, a, BASE).status_code == 200
    assert _chat(url, a, f"{BASE}:terse").status_code == 404
    wanted = {
        "ray_serve_app_requests_total": ['adapter="pirate"', 'status="200"'],
        "ray_serve_app_requests_total{": ['adapter=""', 'status="200"', 'model="gpt-oss-20b"'],
        "ray_serve_app_prompt_tokens_total": ['adapter="pirate"'],
        "ray_serve_app_completion_tokens_total": ['adapter="pirate"'],
        "ray_serve_app_time_to_first_token_seconds_bucket": ['adapter="pirate"'],
        "ray_serve_app_inter_token_latency_seconds_bucket": ['adapter="pirate"'],
        "ray_serve_app_e2e_request_latency_seconds_bucket": ['adapter="pirate"'],
        "ray_serve_app_adapter_loads_total": ['adapter="pirate"', 'result="ok"'],
        "ray_serve_app_adapter_load_seconds_bucket": ['adapter="pirate"'],
    }
    deadline = time.monotonic() + 60
    while True:
        missing = [
            n for n, labels in wanted.items() if not any(all(lb in line for lb in labels) for line in _metric_lines(n))
        ]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not missing, missing
    # The 404 is counted too, but under no adapter: names a client made up never become labels.
    refused = [line for line in _metric_lines("ray_serve_app_requests_total") if 'status="404"' in line]
    assert refused and not any("terse" in line for line in refused)
    # The dev app serves 3 adapters on 2 engine slots: earlier tests made it evict.
    assert _metric_lines("ray_serve_app_adapter_evictions_total")
    # The Grafana dashboard's every metric is really exported (histograms as their buckets).
    from tests.support.dashboard import dashboard_metrics

    histograms = {n for n in wanted if n.endswith("_bucket")}
    for name in sorted(dashboard_metrics()):
        exported = f"{name}_bucket" if f"{name}_bucket" in histograms else name
        assert _metric_lines(exported), f"the dashboard asks for {name}, which is not exported"


def test_overload_is_429_with_retry_after_while_streams_complete(serve_url, gptoss_app):
    assert_overload_refused(f"{serve_url}/gptoss", GPTOSS_ONGOING, GPTOSS_QUEUED, HI)
