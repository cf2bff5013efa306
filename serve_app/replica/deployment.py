"""LLMReplica: the Ray Serve deployment around one vLLM engine.

A plain class; ``serve_app.app`` turns it into a deployment. It takes a
serializable GenerateRequest and streams TokenChunks; adapters load on demand
through Serve multiplexing, bounded by the engine's LoRA slots (LRU eviction,
one load at a time), each checked before the engine sees it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import time
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

from ray import serve

from serve_app.adapters.validation import CONFIG_FILE, WEIGHTS_FILE, AdapterSpec, BaseShapes, validate_adapter
from serve_app.config import AppConfig
from serve_app.heap import HeapTrace, freeze_startup_heap
from serve_app.metrics import AdapterMetrics
from serve_app.protocol.engine import GenerateRequest, TokenChunk
from serve_app.protocol.errors import EngineDead, EngineUnavailable, InvalidAdapter, ModelNotFound, ServeAppError
from serve_app.replica import gang
from serve_app.replica.adapter_cache import AdapterCache, Hold, check_ref
from serve_app.replica.health import EngineHealth
from serve_app.replica.logs import keep_log_targets
from serve_app.replica.streaming import paced

logger = logging.getLogger("ray.serve")

FETCH_BACKOFF_S = 0.5


class LoadedAdapter:
    """One adapter of this replica: its checked copy, and its LoRA while the engine holds it.

    The one owner of its engine slot. ``acquire`` (under a per-adapter lock)
    adds it to the engine if it is not there, so a cached entry whose LoRA was
    released (deleted, then re-registered with the same weights) is loaded
    again, never handed out unloaded. ``release`` is the one way out of the
    engine, idempotent: the registry watcher and Serve's multiplexer (LRU
    eviction calls ``__del__``, in a worker thread) both go through it. While
    loaded or in use it holds the replica cache entry, so no replica on the
    host prunes the files under it.
    """

    def __init__(self, replica: LLMReplica, spec: AdapterSpec, hold: Hold, loop: asyncio.AbstractEventLoop):
        self.name = spec.name
        self.spec = spec
        self.lora_request: Any = None
        self._replica = replica
        self._hold: Hold | None = hold
        self._loop = loop
        self._lock = asyncio.Lock()
        self._idle = asyncio.Event()
        self._idle.set()
        self.in_flight = 0
        self.evicted = False  # Serve's multiplexer let it go: gone for good
        self.stale = False  # deleted or replaced in the registry

    @property
    def loaded(self) -> bool:
        return self.lora_request is not None

    async def acquire(self) -> Any:
        """The LoRA request for a new engine request (loading it again if it was released)."""
        self.in_flight += 1
        self._idle.clear()
        try:
            async with self._lock:
                if self.lora_request is None:
                    # Released by the watcher, or evicted between the multiplexer
                    # handing it out and now: load it again for this request.
                    self.lora_request = await self._replica._engine_load(self.spec)
                return self.lora_request
        except BaseException:
            self.done()
            raise

    def done(self) -> None:
        """A request that acquired this adapter ended."""
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()
            if self.evicted and self.loaded:  # reloaded after its eviction: let it go again
                self._loop.create_task(self.release(evicted=True))
            elif self.evicted:
                self._close_hold()

    async def release(self, evicted: bool = False) -> None:
        """Take it out of the engine; a no-op if it is out already.

        The registry watcher's release (``evicted=False``) waits for the
        adapter's running requests and leaves it to them if new ones came. An
        eviction (Serve's multiplexer needs the slot) takes the LoRA out at once,
        as vLLM tolerates: running requests carry their LoRARequest, and vLLM
        loads it again from its path for them. The cache entry stays held until
        the last of them ends, so that path is still there.
        """
        self.evicted |= evicted
        if not evicted:
            await self._idle.wait()
        async with self._lock:
            if not evicted and self.in_flight:  # a request arrived while we waited: it keeps the adapter
                return
            lora, self.lora_request = self.lora_request, None
            if self.evicted:
                self._replica._forget(self)
                if not self.in_flight:
                    self._close_hold()
            if lora is not None:
                await self._replica._engine_unload(self, lora)

    def _close_hold(self) -> None:
        if self._hold is not None:
            self._hold.close()
            self._hold = None

    def __del__(self) -> None:
        if self._loop.is_closed() or (self.evicted and not self.loaded):
            return
        future = asyncio.run_coroutine_threadsafe(self.release(evicted=True), self._loop)
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if not on_loop:
            # Free the engine slot before the multiplexer loads the next adapter.
            try:
                future.result(timeout=self._replica._cfg.lora.load_timeout_s)
            except TimeoutError:
                logger.warning(
                    "adapter %s: the engine did not release it within %ss",
                    self.name,
                    self._replica._cfg.lora.load_timeout_s,
                )


class LLMReplica:
    def __init__(self, config: dict | AppConfig, manager: Any = None):
        # Imported here so that importing this module (the router does, to
        # type handles) never loads vLLM or torch.
        from serve_app.replica.engine import Engine

        self._cfg = AppConfig.model_validate(config)
        self._new_engine = Engine
        self._role = gang.current_role()  # None: an engine of this replica's own
        with keep_log_targets():  # vLLM's logging setup closes Serve's log handler
            self._engine = Engine(self._cfg, self._role)
        self._health = EngineHealth(lambda: self._engine.errored, self._on_engine_death)
        self._restart: asyncio.Task | None = None
        self._interval_s = self._cfg.replica.stream_interval_ms / 1000
        self._shapes = BaseShapes.from_model_dir(self._cfg.model.resolved_path())
        self._loaded: dict[str, LoadedAdapter] = {}
        self._manager = manager
        a = self._cfg.adapters
        self._cache = AdapterCache(a.replica_cache_dir, a.replica_cache_entries) if self._cfg.lora.enabled else None
        self.loads: dict[str, int] = {}  # engine loads per adapter ref (tests, operators)
        self.requests = 0  # engine requests this process started (tests, operators)
        self._watcher: asyncio.Task | None = None
        self._metrics = AdapterMetrics()

        async def load(adapter: str) -> LoadedAdapter:
            started = time.monotonic()
            ok = False
            try:
                loaded = await self._load(adapter)
                ok = True
                return loaded
            finally:
                self._metrics.loaded(adapter.partition("@")[0], time.monotonic() - started, ok)

        # Wired at runtime because the bound comes from config.
        self._get_adapter = serve.multiplexed(max_num_models_per_replica=self._cfg.lora.adapters_per_replica)(load)
        self._heap = HeapTrace()
        freeze_startup_heap()

    async def generate(self, request: GenerateRequest) -> AsyncIterator[list]:
        """Stream token chunks (``TokenChunk.to_wire`` lists) for one request; cancelling aborts it in the engine."""
        stream = self.chunks(request)
        try:
            async for chunk in stream:
                yield chunk.to_wire()
        finally:
            await stream.aclose()

    async def chunks(self, request: GenerateRequest) -> AsyncGenerator[TokenChunk, None]:
        """The token chunks of one request, in this process; closing the iterator aborts it in the engine."""
        self._health.watch()
        if self._health.dead:
            raise EngineDead("The engine of this replica died; retry the request.")
        self.requests += 1
        adapter = lora = None
        try:
            if request.adapter:
                if not self._cfg.lora.enabled:
                    raise ModelNotFound("this deployment serves no adapters", param="model")
                adapter = await self._get_adapter(request.adapter)
                lora = await adapter.acquire()
            stream = paced(self._engine.generate(request, lora), self._interval_s)
            try:
                async for chunk in stream:
                    yield chunk
            finally:
                await stream.aclose()
        except EngineDead:
            self._health.mark_dead("a request met it")
            raise
        finally:
            if adapter is not None:
                adapter.done()

    @property
    def engine_dead(self) -> bool:
        """Whether this replica's engine has died (its requests belong on another replica)."""
        return self._health.dead

    def holds(self, ref: str) -> bool:
        """Whether this replica has adapter ``ref`` (checked, cached, not evicted): its requests belong here."""
        adapter = self._loaded.get(ref)
        return adapter is not None and not adapter.evicted and not adapter.stale

    async def _watch_registry(self) -> None:
        """Free the engine slots of adapters deleted or replaced in the registry.

        Requests for them stop at the routers at once; here their LoRA leaves
        the engine as soon as no request of this replica still uses it (one
        release path: ``LoadedAdapter.release``).
        """
        version = None
        while True:
            await asyncio.sleep(self._cfg.adapters.refresh_s)
            try:
                now = await self._manager.version.remote()
                if now != version or any(a.stale and a.loaded for a in self._loaded.values()):
                    version = now
                    live = {a["ref"] for a in (await self._manager.view.remote())["adapters"].values()}
                    for ref, adapter in list(self._loaded.items()):
                        adapter.stale = ref not in live
                        if adapter.stale and adapter.loaded and not adapter.in_flight:
                            await adapter.release()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the manager restarting, say: try again next tick
                logger.warning("adapter registry check failed: %r", e)

    async def _manager_call(self, what: str, method: str, *args: Any) -> Any:
        """One manager call with the fetch timeout, retried with backoff; past them, 503."""
        a = self._cfg.adapters
        for attempt in range(a.fetch_attempts):
            try:
                return await asyncio.wait_for(getattr(self._manager, method).remote(*args), a.fetch_timeout_s)
            except ServeAppError:
                raise
            except Exception as e:
                cause = getattr(e, "cause", None)
                if isinstance(cause, ServeAppError):
                    raise cause from None
                logger.warning(
                    "adapter manager %s for %s failed (attempt %d of %d): %r",
                    method,
                    what,
                    attempt + 1,
                    a.fetch_attempts,
                    e,
                )
                if attempt + 1 < a.fetch_attempts:
                    await asyncio.sleep(min(FETCH_BACKOFF_S * 2**attempt, 5.0))
        raise EngineUnavailable(
            f"The adapter manager did not answer in time while loading adapter {what}; retry shortly."
        )

    async def _copy_to_cache(self, ref: str) -> Path:
        """Copy a ready adapter into this host's cache: from the shared store, or in chunks from the manager."""
        cache = self._cache
        if cache is None:
            raise InvalidAdapter("LoRA is not enabled on this deployment")
        manifest = await self._manager_call(ref, "manifest", ref)
        staging = await asyncio.to_thread(cache.staging)
        try:
            shared = Path(manifest["path"]) if self._cfg.adapters.shared_store else None
            for fname, size in manifest["files"].items():
                if fname not in (CONFIG_FILE, WEIGHTS_FILE):
                    raise InvalidAdapter(f"adapter {ref!r}: unexpected file {fname!r}")
                if shared is not None:
                    await asyncio.to_thread(shutil.copyfile, shared / fname, staging / fname)
                    continue
                with (staging / fname).open("wb") as out:
                    while out.tell() < size:
                        chunk = await self._manager_call(ref, "read_chunk", ref, fname, out.tell())
                        if not chunk:
                            raise EngineUnavailable(f"adapter {ref!r}: its stored copy ended early; retry")
                        await asyncio.to_thread(out.write, chunk)
        except BaseException:
            await asyncio.to_thread(cache.discard, staging)
            raise
        return await asyncio.to_thread(cache.publish, ref, manifest["sha256"], staging)

    async def _load(self, ref: str) -> LoadedAdapter:
        """Fetch (once per host), check, and load into the engine; Serve's multiplexer calls it once per ref."""
        name, _ = check_ref(ref)
        if self._manager is None or self._cache is None:
            raise ModelNotFound(f"adapter {name!r} does not exist", param="model")
        hold = await asyncio.to_thread(self._cache.hold, ref)
        try:
            path = await asyncio.to_thread(self._cache.lookup, ref) or await self._copy_to_cache(ref)

            def check() -> AdapterSpec:  # file I/O: off the event loop
                return validate_adapter(path, name, shapes=self._shapes, **self._cfg.adapter_limits())

            spec = dataclasses.replace(await asyncio.to_thread(check), name=ref)
            adapter = LoadedAdapter(self, spec, hold, asyncio.get_running_loop())
            adapter.lora_request = await self._engine_load(spec)
        except BaseException:
            hold.close()
            raise
        self._loaded[ref] = adapter
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch_registry())
        return adapter

    async def _engine_load(self, spec: AdapterSpec) -> Any:
        lora = await asyncio.wait_for(self._engine.add_lora(spec), self._cfg.lora.load_timeout_s)
        self.loads[spec.name] = self.loads.get(spec.name, 0) + 1
        logger.info("loaded adapter %s (rank %d) as LoRA id %d", spec.name, spec.rank, lora.lora_int_id)
        return lora

    def _forget(self, adapter: LoadedAdapter) -> None:
        if self._loaded.get(adapter.name) is adapter:
            del self._loaded[adapter.name]

    async def _engine_unload(self, adapter: LoadedAdapter, lora: Any) -> None:
        await self._engine.remove_lora(lora.lora_int_id)
        self._metrics.evicted(adapter.name.partition("@")[0])
        logger.info("released adapter %s from the engine", adapter.name)

    async def stats(self) -> dict:
        """Engine-side state, for tests and operators."""
        return {
            "pid": os.getpid(),
            "gang": self._engine.role,
            "requests": self.requests,
            "engine": self._health.state,
            "engine_deaths": self._health.deaths,
            "unfinished_requests": 0 if self._health.dead else self._engine.num_unfinished_requests(),
            "adapters": sorted(ref for ref, a in self._loaded.items() if a.loaded),
            "loads": dict(self.loads),
            "engine_lora_ids": sorted(await self._engine.list_loras())
            if self._cfg.lora.enabled and not self._health.dead
            else [],
        }

    def _on_engine_death(self) -> None:
        """The engine died: start a new one here, or leave the replica to Serve to replace."""
        restarts = self._cfg.replica.engine_restarts
        if self._engine.shared:
            # Its running requests end now, in-band: in a gang the engine may be
            # another process's child, and nothing else would end them.
            self._engine.fail_pending()
        if self._health.deaths > restarts:
            self._health.give_up(f"it died {self._health.deaths} times; replica.engine_restarts is {restarts}")
            return
        self._restart = asyncio.get_running_loop().create_task(self._restart_engine())

    async def _restart_engine(self) -> None:
        """A new engine in this process; the adapters it held load again on their next request."""
        old = self._engine
        try:
            await asyncio.to_thread(old.shutdown)
        except Exception as e:  # what is left of it goes with its processes
            logger.warning("shutting down the dead engine: %r", e)
        for adapter in self._loaded.values():
            # Its LoRA id belonged to the dead engine; acquire() loads it into the new one.
            adapter.lora_request = None
        timeout = self._cfg.replica.engine_restart_timeout_s
        if self._role is not None:
            # Every rank of the gang saw the same death: all meet again for the next engine.
            self._role = self._role.next()
        try:
            # Off the event loop: the API of this process keeps answering (503s, forwards) meanwhile.
            with keep_log_targets():
                self._engine = await asyncio.wait_for(
                    asyncio.to_thread(self._new_engine, self._cfg, self._role), timeout
                )
        except Exception as e:
            self._health.give_up(f"a new engine did not start within {timeout:.0f} s: {e!r}")
            return
        self._health.revive()

    def heap_diff(self, top: int = 25) -> list[str]:
        """Allocation sites of this process that grew most since the last call (``SERVE_APP_TRACEMALLOC``)."""
        return self._heap.diff(top)

    async def check_health(self) -> None:
        """Serve's health check; raising marks the replica unhealthy (three times in a row: replaced).

        It fails only when the engine is dead for good (``serve_app.replica.health``):
        while a new engine starts here, the replica stays in Serve's rotation
        (routers steer around it) and answers at once. It waits up to one
        health-check period for a change before it answers, so that one is
        nearly always in flight and fails the moment the engine fails.
        """
        r = self._cfg.replica
        await self._health.wait(min(r.health_check_period_s, r.health_check_timeout_s / 2))
        if self._health.failed:
            raise RuntimeError("the vLLM engine of this replica died and was not restarted")
        if not self._health.dead:
            await self.ready()

    async def ready(self) -> None:
        """Whether the engine answers now (the API's /ready; no wait)."""
        self._health.watch()
        if self._health.dead:
            raise EngineDead("The engine of this replica died.")
        try:
            await self._engine.check_health()
        except Exception as e:
            self._health.mark_dead(f"its health check failed: {e!r}")
            raise EngineDead("The engine of this replica died; it is being restarted.") from e

    async def record_routing_stats(self) -> dict[str, Any]:
        """What Serve's routers know of this replica (``serve_app.replica.routing`` reads it)."""
        return {"engine_alive": not self._health.dead}

    def __del__(self) -> None:
        health = getattr(self, "_health", None)
        if health is not None:
            health.close()
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.shutdown()
