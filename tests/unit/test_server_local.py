"""The direct topology's in-process replica handle (``serve_app.server.local``), without Ray.

The router's application over ``LocalReplica`` and a fake engine replica: the
same endpoints as over a Serve handle, admission as a 429 in the error shape
before any token, a stream the client stops early closed in the engine, and
adapter placement (held here: run here; held elsewhere: through the handle).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.testclient import TestClient

from serve_app.harmony.encoding import harmony_encoding
from serve_app.protocol.engine import GenerateRequest, TokenChunk
from serve_app.protocol.errors import Overloaded
from serve_app.server.local import LocalReplica

BASE = "gpt-oss-20b"
REPLY = (
    "<|channel|>analysis<|message|>The user greets me.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>Hello there, friend!<|return|>"
)


class FakeEngineReplica:
    """``LLMReplica``'s in-process side: ``chunks`` streams REPLY; records what it ran and what was closed."""

    def __init__(self):
        self.held: set[str] = set()
        self.requests: list[GenerateRequest] = []
        self.closed = 0
        self.gate: asyncio.Event | None = None  # set: streams wait on it before their first chunk
        self.healthy = True
        self.dead = False

    def holds(self, ref: str) -> bool:
        return ref in self.held

    @property
    def engine_dead(self) -> bool:
        return self.dead

    async def ready(self) -> None:
        if not self.healthy:
            raise RuntimeError("engine dead")

    async def chunks(self, request: GenerateRequest):
        self.requests.append(request)
        ids = harmony_encoding().encode(REPLY, allowed_special="all")
        try:
            if self.gate is not None:
                await self.gate.wait()
            for i in range(0, len(ids), 2):
                last = i + 2 >= len(ids)
                yield TokenChunk(ids[i : i + 2], "stop" if last else None, None, 3, min(i + 2, len(ids)))
                await asyncio.sleep(0)
        finally:
            self.closed += 1


class FakeHandle:
    """The deployment's own Serve handle: records where a request was sent."""

    def __init__(self):
        self.sent: list[tuple[str, dict, GenerateRequest]] = []
        self._options: dict = {}
        self.generate = self

    def options(self, **options):
        bound = FakeHandle()
        bound.sent, bound._options = self.sent, options
        return bound

    def remote(self, request):
        opts = dict(self._options)
        self.sent.append((opts.pop("multiplexed_model_id"), opts, request))
        return "forwarded"


def _request(adapter: str | None = None) -> GenerateRequest:
    return GenerateRequest(request_id="r-1", prompt_token_ids=[1, 2, 3], adapter=adapter)


def test_base_and_held_adapters_run_here_others_go_through_the_handle():
    engine, handle = FakeEngineReplica(), FakeHandle()
    local = LocalReplica(engine, limit=4, remote=lambda: handle)
    engine.held.add("held@v1")
    opts = {"stream": True, "_by_reference": False}

    base = local.options(multiplexed_model_id="", **opts).generate.remote(_request())
    held = local.options(multiplexed_model_id="held@v1", **opts).generate.remote(_request("held@v1"))
    cold = local.options(multiplexed_model_id="cold@v1", **opts).generate.remote(_request("cold@v1"))

    assert hasattr(base, "cancel") and hasattr(held, "cancel")
    assert cold == "forwarded"
    # Serve's multiplexed routing gets the adapter and the caller's transport options.
    assert [(ref, o) for ref, o, _ in handle.sent] == [("cold@v1", opts)]


def test_once_the_engine_died_every_request_goes_through_the_handle():
    engine, handle = FakeEngineReplica(), FakeHandle()
    local = LocalReplica(engine, limit=4, remote=lambda: handle)
    engine.held.add("held@v1")
    engine.dead = True
    local.options(multiplexed_model_id="", stream=True).generate.remote(_request())
    local.options(multiplexed_model_id="held@v1", stream=True).generate.remote(_request("held@v1"))
    # Serve's router places them on a replica whose engine is alive (serve_app.replica.routing).
    assert [ref for ref, _, _ in handle.sent] == ["", "held@v1"] and not engine.requests


def test_without_a_handle_every_adapter_runs_here():
    engine = FakeEngineReplica()
    local = LocalReplica(engine, limit=4, remote=None)
    call = local.options(multiplexed_model_id="cold@v1", stream=True).generate.remote(_request("cold@v1"))

    async def run():
        return [c async for c in call]

    chunks = asyncio.run(run())
    assert chunks[-1].finished and engine.requests[0].adapter == "cold@v1" and engine.closed == 1


def test_admission_refuses_past_the_limit_and_frees_its_slot():
    engine = FakeEngineReplica()
    local = LocalReplica(engine, limit=1)

    async def run():
        engine.gate = asyncio.Event()
        first = local.options(stream=True).generate.remote(_request()).__aiter__()
        pending = asyncio.ensure_future(first.__anext__())
        await asyncio.sleep(0)
        assert local.running == 1
        with pytest.raises(Overloaded):
            await local.options(stream=True).generate.remote(_request()).__aiter__().__anext__()
        engine.gate.set()
        await pending
        async for _ in first:
            pass
        assert local.running == 0
        # The slot is free again.
        again = [c async for c in local.options(stream=True).generate.remote(_request())]
        assert again[-1].finished

    asyncio.run(run())


def test_cancel_closes_the_engine_stream():
    engine = FakeEngineReplica()
    local = LocalReplica(engine, limit=2)

    async def run():
        call = local.options(stream=True).generate.remote(_request())
        it = call.__aiter__()
        await it.__anext__()
        call.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        assert engine.closed == 1 and local.running == 0

    asyncio.run(run())


@pytest.fixture(scope="module")
def served(vocab_dir, tmp_path_factory):
    import os

    from serve_app.router.ingress import Router

    os.environ["SERVE_APP_ADMIN_KEY"] = ""
    keys = tmp_path_factory.mktemp("keys") / "keys.yaml"
    keys.write_text(json.dumps([{"key": "sk-local-0123456789", "name": "a"}]))
    config = {
        "topology": "direct",
        "model": {"path": "devmodel:gptoss", "served_name": BASE, "max_model_len": 512, "vocab_dir": str(vocab_dir)},
        "engine": {"device": "cpu", "kv_cache_memory_bytes": 1 << 28},
        "auth": {"api_keys_file": str(keys)},
        "responses": {"enabled": False},
    }
    engine = FakeEngineReplica()
    local = LocalReplica(engine, limit=1)
    router = Router(config, local, None, None, in_process=True)
    return TestClient(router.http, raise_server_exceptions=False), engine, local


AUTH = {"Authorization": "Bearer sk-local-0123456789"}


def test_the_router_app_streams_from_the_local_replica(served):
    client, engine, local = served
    engine.gate = None
    body = {"model": BASE, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body, headers=AUTH) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content == "Hello there, friend!"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" or chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert local.running == 0
    assert client.get("/ready").status_code == 200


def test_a_stop_string_ends_the_engine_stream(served):
    client, engine, local = served
    engine.gate = None
    closed = engine.closed
    body = {"model": BASE, "messages": [{"role": "user", "content": "Hi"}], "stop": ["there"]}
    r = client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "Hello "
    assert engine.closed == closed + 1 and local.running == 0


def test_past_the_limit_is_a_429_in_the_error_shape(served):
    client, _, local = served
    local.running = 1  # the one slot is taken
    try:
        body = {"model": BASE, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
        r = client.post("/v1/chat/completions", json=body, headers=AUTH)
    finally:
        local.running = 0
    assert r.status_code == 429 and "retry-after" in r.headers
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]


def test_an_unhealthy_engine_is_not_ready(served):
    client, engine, _ = served
    engine.healthy = False
    try:
        r = client.get("/ready")
    finally:
        engine.healthy = True
    assert r.status_code == 503 and r.json()["error"]["code"]


def test_direct_topology_refuses_router_scaling():
    from serve_app.config import AppConfig

    base = {"model": {"path": "x", "served_name": BASE}, "engine": {"device": "gpu"}, "topology": "direct"}
    with pytest.raises(ValueError, match=r"replica\.autoscaling"):
        AppConfig.model_validate({**base, "router": {"num_replicas": 2}})
    assert AppConfig.model_validate(base).direct_admission_limit() == 64 + 128


def test_a_direct_config_survives_its_dump():
    """Serve passes the config to replicas as its JSON dump, every field set."""
    from serve_app.config import AppConfig

    cfg = AppConfig.model_validate(
        {"model": {"path": "x", "served_name": BASE}, "engine": {"device": "gpu"}, "topology": "direct"}
    )
    assert AppConfig.model_validate(cfg.model_dump(mode="json")).topology == "direct"


GANG = {"model": {"path": "x", "served_name": BASE}, "engine": {"device": "gpu"}, "topology": "direct"}


def test_api_processes_make_a_gang_per_engine_with_counts_per_engine():
    from serve_app.app import server_options
    from serve_app.config import AppConfig

    replica = {
        "api_processes": 4,
        "autoscaling": {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 32, "initial_replicas": 2},
    }
    cfg = AppConfig.model_validate({**GANG, "replica": replica})
    opts = server_options(cfg)
    assert opts["gang_scheduling_config"] == {
        "gang_size": 4,
        "gang_placement_strategy": "PACK",
        "runtime_failure_policy": "RESTART_GANG",
    }
    # Serve counts replicas (API processes); the config counts engines.
    scaling = opts["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"], scaling["initial_replicas"]) == (4, 12, 8)
    assert scaling["target_ongoing_requests"] == 8
    # Serve refuses a replica placement strategy beside the gang's own.
    assert "placement_group_strategy" not in opts
    # Each process admits its share of the engine's bound, and the four reserve one GPU.
    assert cfg.direct_admission_limit() == (64 + 128) // 4
    assert opts["placement_group_bundles"] == [{"CPU": 1, "GPU": 0.25}]
    fixed = AppConfig.model_validate(
        {**GANG, "replica": {"api_processes": 2, "autoscaling": {"min_replicas": 3, "max_replicas": 3}}}
    )
    assert server_options(fixed)["num_replicas"] == 6


def test_one_api_process_is_no_gang():
    from serve_app.app import server_options
    from serve_app.config import AppConfig

    opts = server_options(AppConfig.model_validate(GANG))
    assert "gang_scheduling_config" not in opts and opts["placement_group_strategy"] == "STRICT_PACK"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"topology": "routed"}, "needs topology: direct"),
        ({"engine": {"device": "gpu", "tensor_parallel_size": 2}}, "tensor_parallel_size > 1 is not supported"),
    ],
    ids=["routed", "tp2-gpu"],
)
def test_api_processes_refused_where_they_cannot_work(change, message):
    from serve_app.config import AppConfig

    with pytest.raises(ValueError, match=message):
        AppConfig.model_validate({**GANG, **change, "replica": {"api_processes": 2}})
