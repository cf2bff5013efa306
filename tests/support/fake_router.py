"""The router's Starlette app in process on fake replica and store handles (unit tier, no Ray).

``router_app`` builds it as the unit tests use it: two inference keys, no
admin key, a small body bound; ``RUNNING`` is what Serve's controller would
report as running replicas of the fake deployment.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from serve_app.protocol.engine import TokenChunk
from serve_app.protocol.errors import EngineDead

KEY = "sk-unit-0123456789"
OTHER_KEY = "sk-unit-other-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
OTHER = {"Authorization": f"Bearer {OTHER_KEY}"}
BASE = "gpt-oss-20b"
REASONING_THEN_FINAL = (
    "<|channel|>analysis<|message|>The user greets me.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>Hello there!<|return|>"
)
TOOL_CALL = (
    "<|channel|>analysis<|message|>I need the weather.<|end|><|start|>assistant<|channel|>commentary "
    'to=functions.get_weather <|constrain|>json<|message|>{"location": "Paris"}<|call|>'
)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}


class _Call:
    def __init__(self, fn):
        self._fn = fn

    async def remote(self, *args):
        return self._fn(*args)


class FakeReplica:
    """Streams ``reply`` (Harmony text) back as token chunks, a few tokens each; records requests."""

    app_name, deployment_name = "unit", "LLMReplica"

    def __init__(self):
        self.reply = REASONING_THEN_FINAL
        self.requests = []
        self.generate = self
        self.ready = _Call(lambda: None)
        # Seconds before the first chunk (a replica not there yet, or busy).
        self.delay_s = 0.0
        self.streams = []
        # The next this-many calls land on a replica whose engine died: EngineDead before any chunk.
        self.dead_calls = 0
        # Chunks a call sends before its engine dies (None: it never dies).
        self.die_after: int | None = None

    def options(self, **_):
        return self

    def remote(self, request):
        from serve_app.harmony.encoding import harmony_encoding

        self.requests.append(request)
        ids = harmony_encoding().encode(self.reply, allowed_special="all")
        ids = ids[: request.sampling.max_tokens]
        length = len(ids) == request.sampling.max_tokens

        dead, die_after = self.dead_calls > 0, self.die_after
        self.dead_calls -= dead

        async def stream():
            await asyncio.sleep(self.delay_s)
            if dead:
                raise EngineDead("The engine of this replica died; retry the request.")
            for i in range(0, len(ids), 3):
                if die_after is not None and i // 3 >= die_after:
                    raise EngineDead("The engine of this replica died; retry the request.")
                last = i + 3 >= len(ids)
                finish = ("length" if length else "stop") if last else None
                lps = [[(t, -0.25)] for t in ids[i : i + 3]] if request.sampling.logprobs is not None else None
                yield TokenChunk(
                    ids[i : i + 3], finish, None, len(request.prompt_token_ids), i + len(ids[i : i + 3]), lps
                )

        self.streams.append(_Stream(stream()))
        return self.streams[-1]


class _Stream:
    """A replica call's stream: iterable, and cancellable as Serve's response generator is."""

    def __init__(self, gen):
        self._gen = gen
        self.cancelled = False

    def __aiter__(self):
        return self._gen.__aiter__()

    def cancel(self):
        self.cancelled = True


class FakeStore:
    """A handle on a real ``ResponseStore`` (its SQLite in a temporary folder), called in process."""

    def __init__(self, folder: Path):
        from serve_app.endpoints.responses.store import ResponseStore

        self.store = ResponseStore({"model": {"path": "m"}, "responses": {"store_dir": str(folder / "responses")}})

    def __getattr__(self, name: str):
        method = getattr(self.store, name)

        class _Remote:
            async def remote(self, *args, **kwargs):
                return await method(*args, **kwargs)

        return _Remote()

    def count(self) -> int:
        return self.store._db.connection.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


RUNNING = {"replicas": 1}


def fresh(replica: FakeReplica) -> FakeReplica:
    """The fake replica as a test starts with it: the usual reply, no delay, no dying engine, one replica."""
    replica.reply = REASONING_THEN_FINAL
    replica.delay_s = 0.0
    replica.dead_calls, replica.die_after = 0, None
    RUNNING["replicas"] = 1
    replica.liveness.invalidate()  # the count each test sets, not one cached by the test before
    return replica


def router_app(vocab_dir: Path, tmp: Path) -> Iterator[tuple[TestClient, FakeReplica, FakeStore]]:
    """The app, its fake replica and store (a generator: the fixture's setup and teardown)."""
    import os

    from serve_app.api import liveness
    from serve_app.router.ingress import Router

    # What Serve's controller would report for the fake deployment.
    patch = pytest.MonkeyPatch()
    patch.setattr(liveness, "running_replicas", lambda app, name: RUNNING["replicas"])

    keys = tmp / "keys.yaml"
    keys.write_text(json.dumps([{"key": KEY, "name": "a"}, {"key": OTHER_KEY, "name": "b"}]))
    os.environ["SERVE_APP_ADMIN_KEY"] = ""
    replica, store = FakeReplica(), FakeStore(tmp)
    config = {
        "model": {
            "path": "devmodel:gptoss",
            "served_name": BASE,
            "max_model_len": 512,
            "vocab_dir": str(vocab_dir),
        },
        "engine": {"device": "cpu", "kv_cache_memory_bytes": 1 << 28},
        "auth": {"api_keys_file": str(keys)},
        "router": {"max_request_bytes": 20000, "unavailable_wait_s": 0.3, "unavailable_retry_after_s": 7},
        # Within the body bound above.
        "limits": {"max_messages": 64},
    }
    router = Router(config, replica, None, store)
    replica.liveness = router._services.core._liveness
    yield TestClient(router.http, raise_server_exceptions=False), replica, store
    patch.undo()
