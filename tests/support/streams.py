"""Checks several apps share: a disconnect aborts the engine request; past its bounds an app refuses with our 429."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from benchmarks.diagnostics.overload import burst

BASE = "gpt-oss-20b"


def assert_disconnect_aborts(url: str, engine: Any, messages: list[dict], headers: dict | None = None) -> None:
    """A client that leaves mid-stream: the engine request of ``engine`` (a replica handle) ends within 20 s."""

    def unfinished() -> int:
        return engine.stats.remote().result()["unfinished_requests"]

    body = {"model": BASE, "messages": messages, "stream": True, "max_tokens": 1800, "ignore_eos": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=60) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        for _ in range(6):
            next(lines)
        assert unfinished() == 1
    deadline = time.monotonic() + 20
    while unfinished() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert unfinished() == 0


def assert_overload_refused(url: str, ongoing: int, queued: int, messages: list[dict], extra: int = 8) -> None:
    """Fill every running and queued slot, then ``extra`` more: those get our 429 at once, the rest complete."""
    result = asyncio.run(burst(url, BASE, ongoing, queued, extra, tokens=256, timeout_s=240))
    print(result.table())
    fitting = [o for o in result.outcomes if o.kind == "fitting"]
    extras = [o for o in result.outcomes if o.kind == "extra"]
    assert not any(o.hung for o in result.outcomes)
    # Every stream that fitted the bounds ran to its end.
    assert all(o.status == 200 and o.done and o.error is None for o in fitting), fitting
    # Beyond the bounds: refused at once, in the error shape, with Retry-After.
    assert all(o.status == 429 for o in extras), extras
    for o in extras:
        assert o.retry_after == "1" and o.error["code"] == "overloaded" and o.error["type"] == "rate_limit_error"
        assert o.seconds < 10
    # And it keeps serving afterwards.
    body = {"model": BASE, "messages": messages, "max_tokens": 4}
    assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120).status_code == 200
