"""An engine's death, seen by its replica and by Serve's routers (no Ray, no engine).

``EngineHealth`` notices the engine client's flag within its poll and wakes the
health check waiting on it; ``LiveEngineRouter``'s choice keeps dead engines
out of the draw while a live one remains; the replica config refuses a health
check period that its own long poll would turn into a timeout.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from serve_app.config import ReplicaConfig
from serve_app.replica.health import ALIVE, FAILED, RESTARTING, EngineHealth
from serve_app.replica.routing import engine_alive, prefer_live, two_choices


def test_the_watcher_sees_the_engine_die_within_its_poll():
    flag = {"errored": False}
    deaths = []
    health = EngineHealth(lambda: flag["errored"], lambda: deaths.append(1), poll_s=0.02)

    async def run() -> tuple[str, float]:
        waiting = asyncio.ensure_future(health.wait(5.0))
        await asyncio.sleep(0.1)
        assert not waiting.done() and not health.dead
        flag["errored"] = True
        t0 = time.monotonic()
        state = await waiting
        return state, time.monotonic() - t0

    state, seen_in = asyncio.run(run())
    assert state == RESTARTING and health.dead and not health.failed and seen_in < 0.5
    assert deaths == [1] and health.deaths == 1


def test_a_health_wait_on_a_live_engine_returns_after_its_timeout():
    health = EngineHealth(lambda: False, poll_s=0.02)

    async def run() -> tuple[str, float]:
        t0 = time.monotonic()
        state = await health.wait(0.2)
        health.close()
        return state, time.monotonic() - t0

    state, waited = asyncio.run(run())
    assert state == ALIVE and 0.15 < waited < 1.0


def test_a_death_is_counted_once_and_a_revived_engine_is_watched_again():
    flag = {"errored": False}
    health = EngineHealth(lambda: flag["errored"], poll_s=0.02)

    async def run() -> None:
        health.mark_dead("a request met it")
        first = health.died_at
        health.mark_dead("again")
        assert health.deaths == 1 and health.died_at == first
        health.revive()
        assert not health.dead
        flag["errored"] = True
        assert await health.wait(2.0) == RESTARTING
        assert health.deaths == 2
        health.give_up("no restarts left")
        assert health.failed and await health.wait(5.0) == FAILED  # at once

    asyncio.run(run())


def _replica(name: str, alive: bool | None) -> SimpleNamespace:
    stats = {} if alive is None else {"engine_alive": alive}
    return SimpleNamespace(name=name, routing_stats=stats)


def test_replicas_are_alive_until_they_say_otherwise():
    assert engine_alive(_replica("a", None)) and engine_alive(_replica("b", True))
    assert not engine_alive(_replica("c", False))
    assert engine_alive(SimpleNamespace())  # a replica that reported nothing yet


@pytest.mark.parametrize(
    "preferred, every, expected",
    [
        (["a+", "b-"], ["a+", "b-", "c+"], ["a+"]),
        (["b-"], ["a+", "b-", "c+"], ["a+", "c+"]),  # the adapter's holder died: any live replica
        (["b-", "d-"], ["b-", "d-"], ["b-", "d-"]),  # nothing alive: a dead one answers its 503 at once
    ],
    ids=["live-preferred", "holder-dead", "none-alive"],
)
def test_dead_engines_are_chosen_only_when_nothing_else_is_alive(preferred, every, expected):
    replicas = {n: _replica(n, n.endswith("+")) for n in {*preferred, *every}}
    pool = prefer_live([replicas[n] for n in preferred], [replicas[n] for n in every])
    assert sorted(r.name for r in pool) == expected


def test_two_choices_are_distinct():
    pool = list(range(5))
    for _ in range(50):
        a, b = two_choices(pool)
        assert a != b
    assert two_choices([7]) == [7] and sorted(two_choices([1, 2])) == [1, 2]


def test_a_health_check_period_past_its_timeout_is_refused():
    with pytest.raises(ValidationError, match="health_check_period_s"):
        ReplicaConfig(health_check_period_s=30, health_check_timeout_s=30)
    assert ReplicaConfig(health_check_period_s=10, health_check_timeout_s=30).routing_stats_period_s == 1.0


class FakeEngine:
    """The part of ``Engine`` the restart path uses; ``errored`` is set by the test."""

    built = 0
    shared = False  # one of a gang's engine clients

    def __init__(self, cfg=None, fail: bool = False, role=None):
        self.role = role
        if fail:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        FakeEngine.built += 1
        self.errored = False
        self.shut = False

    def shutdown(self) -> None:
        self.shut = True

    def fail_pending(self) -> None:
        self.failed_pending = True

    async def check_health(self) -> None:
        if self.errored:
            raise RuntimeError("EngineDeadError")


def _bare_replica(restarts: int, fail_restart: bool = False):
    """An LLMReplica over a fake engine, built without its constructor (no vLLM, no Ray)."""
    from serve_app.config import AppConfig
    from serve_app.replica.deployment import LLMReplica

    cfg = AppConfig.model_validate(
        {
            "model": {"path": "devmodel:gptoss", "served_name": "m", "max_model_len": 256},
            "engine": {"device": "cpu", "kv_cache_memory_bytes": 1 << 28},
            "replica": {"engine_restarts": restarts, "health_check_period_s": 0.2, "health_check_timeout_s": 1},
        }
    )
    replica = LLMReplica.__new__(LLMReplica)
    replica._cfg = cfg
    replica._new_engine = lambda cfg, role=None: FakeEngine(cfg, fail=fail_restart, role=role)
    replica._engine = FakeEngine()
    replica._health = EngineHealth(lambda: replica._engine.errored, replica._on_engine_death, poll_s=0.02)
    replica._restart = None
    replica._role = None
    replica._loaded = {"pirate@v1": SimpleNamespace(lora_request=object())}
    return replica


def test_a_dead_engine_is_restarted_in_place_and_its_adapters_reload():
    replica = _bare_replica(restarts=1)

    async def run() -> None:
        await replica.check_health()  # alive: passes after its wait
        first = replica._engine
        first.errored = True
        await replica.check_health()  # restarting: Serve keeps the replica
        assert replica.engine_dead and (await replica.record_routing_stats()) == {"engine_alive": False}
        await replica._restart
        assert replica._engine is not first and first.shut and not replica.engine_dead
        assert replica._loaded["pirate@v1"].lora_request is None  # its LoRA id was the dead engine's
        assert (await replica.record_routing_stats()) == {"engine_alive": True}
        await replica.check_health()
        # A second death is one more than replica.engine_restarts allows: Serve replaces it.
        replica._engine.errored = True
        with pytest.raises(RuntimeError, match="not restarted"):
            await replica.check_health()

    asyncio.run(run())


def test_a_restart_that_fails_fails_the_health_check():
    replica = _bare_replica(restarts=3, fail_restart=True)

    async def run() -> None:
        replica._engine.errored = True
        await replica._health.wait(1.0)
        await replica._restart
        assert replica._health.failed
        with pytest.raises(RuntimeError, match="not restarted"):
            await replica.check_health()

    asyncio.run(run())


def test_requests_on_a_dead_engine_fail_before_they_start():
    from serve_app.protocol.engine import GenerateRequest
    from serve_app.protocol.errors import EngineDead

    replica = _bare_replica(restarts=0)

    async def run() -> None:
        replica._health.mark_dead("a test")
        with pytest.raises(EngineDead) as info:
            await replica.chunks(GenerateRequest(request_id="r", prompt_token_ids=[1])).__anext__()
        assert info.value.retry_elsewhere and info.value.status == 503
        with pytest.raises(EngineDead):
            await replica.ready()

    asyncio.run(run())


def test_a_gangs_shared_engine_restarts_in_place_as_the_gangs_next_engine():
    """Every rank of a gang sees the death; each ends its running requests and meets the others again
    for the next engine (the next generation of the gang's rendezvous keys), without leaving Serve."""
    from serve_app.replica.gang import GangRole

    replica = _bare_replica(restarts=3)
    replica._engine.shared = True
    replica._role = GangRole("g1", rank=1, size=2)

    async def run() -> None:
        await replica.check_health()
        first = replica._engine
        first.errored = True
        await replica.check_health()  # restarting: Serve keeps the replica
        assert first.failed_pending  # its running requests were ended, not left waiting
        await replica._restart
        assert replica._engine is not first and not replica.engine_dead
        assert replica._engine.role == GangRole("g1", rank=1, size=2, generation=1)

    asyncio.run(run())
