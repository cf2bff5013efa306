"""LLMReplica: the Ray Serve deployment around one vLLM engine.

A plain class; ``serve_app.app`` turns it into a deployment. It takes a
serializable GenerateRequest and streams TokenChunks; adapters load on demand
through Serve multiplexing, bounded by the engine's LoRA slots (LRU eviction,
one load at a time), each checked before the engine sees it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from serve_app.config import AppConfig
from serve_app.metrics import AdapterMetrics
from serve_app.protocol.engine import GenerateRequest, TokenChunk
from serve_app.protocol.errors import ModelNotFound
from serve_app.adapters.validation import AdapterSpec, BaseShapes, validate_adapter
from serve_app.replica.adapter_cache import AdapterCache, check_ref
from serve_app.replica.streaming import coalesce

logger = logging.getLogger("ray.serve")


class LoadedAdapter:
    """An adapter held by the engine; Serve calls ``__del__`` when it evicts it.

    Serve's multiplexer runs a sync ``__del__`` in a worker thread on LRU
    eviction; the engine call must run on the replica's event loop, so it is
    submitted there and awaited from that thread, freeing the engine slot
    before the next adapter loads. Garbage collection calls ``__del__`` again
    later; the flag makes that a no-op.
    """

    def __init__(self, replica: LLMReplica, lora_request: Any, loop: asyncio.AbstractEventLoop):
        self.name = lora_request.lora_name
        self.lora_request = lora_request
        self._replica = replica
        self._loop = loop
        self._released = False
        self.stale = False  # deleted or replaced in the registry

    def __del__(self) -> None:
        if self._released or self._loop.is_closed():
            return
        self._released = True
        future = asyncio.run_coroutine_threadsafe(self._replica._unload(self), self._loop)
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if not on_loop:
            future.result(timeout=60)


class LLMReplica:
    def __init__(self, config: dict | AppConfig, manager: Any = None):
        # Imported here so that importing this module (the router does, to
        # type handles) never loads vLLM or torch.
        from serve_app.replica.engine import Engine

        self._cfg = AppConfig.model_validate(config)
        self._engine = Engine(self._cfg)
        self._interval_s = self._cfg.replica.stream_interval_ms / 1000
        self._shapes = BaseShapes.from_model_dir(self._cfg.model.resolved_path())
        self._loaded: dict[str, LoadedAdapter] = {}
        self._manager = manager
        a = self._cfg.adapters
        self._cache = AdapterCache(a.replica_cache_dir, a.replica_cache_entries) if self._cfg.lora.enabled else None
        self.loads: dict[str, int] = {}  # engine loads per adapter ref (tests, operators)
        self._in_flight: dict[str, int] = {}
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

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenChunk]:
        """Stream token chunks for one request; cancelling aborts it in the engine."""
        lora = None
        ref = request.adapter
        if ref:
            if not self._cfg.lora.enabled:
                raise ModelNotFound("this deployment serves no adapters", param="model")
            lora = (await self._get_adapter(ref)).lora_request
            self._in_flight[ref] = self._in_flight.get(ref, 0) + 1
        stream = self._engine.generate(request, lora)
        try:
            async for chunk in coalesce(stream, self._interval_s):
                yield chunk
        finally:
            await stream.aclose()
            if ref:
                self._in_flight[ref] -= 1

    async def _watch_registry(self) -> None:
        """Free the engine slots of adapters deleted or replaced in the registry.

        Requests for them stop at the routers at once; here their LoRA leaves
        the engine as soon as no request of this replica still uses it.
        """
        version = None
        while True:
            await asyncio.sleep(self._cfg.adapters.refresh_s)
            try:
                now = await self._manager.version.remote()
                if now != version or any(a._released is False and a.stale for a in self._loaded.values()):
                    version = now
                    live = {a["ref"] for a in (await self._manager.view.remote())["adapters"].values()}
                    for ref, adapter in list(self._loaded.items()):
                        adapter.stale = ref not in live
                        if adapter.stale and not self._in_flight.get(ref) and not adapter._released:
                            adapter._released = True
                            await self._unload(adapter)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the manager restarting, say: try again next tick
                logger.warning("adapter registry check failed: %r", e)

    async def _load(self, ref: str) -> LoadedAdapter:
        """Fetch (once per host) from the manager, check, and load into the engine."""
        name, _ = check_ref(ref)
        if self._manager is None or self._cache is None:
            raise ModelNotFound(f"adapter {name!r} does not exist", param="model")
        path = await asyncio.to_thread(self._cache.lookup, ref)
        if path is None:
            data = await self._manager.fetch.remote(ref)
            path = await asyncio.to_thread(self._cache.put, ref, data["sha256"], data["files"], set(self._loaded))

        def check() -> AdapterSpec:  # file I/O: off the event loop
            return validate_adapter(path, name, shapes=self._shapes, **self._cfg.adapter_limits())

        spec = await asyncio.to_thread(check)
        spec = AdapterSpec(ref, spec.path, spec.rank, spec.alpha, spec.target_modules, spec.size_bytes, spec.base_model)
        lora = await asyncio.wait_for(self._engine.add_lora(spec), self._cfg.lora.load_timeout_s)
        adapter = LoadedAdapter(self, lora, asyncio.get_running_loop())
        self._loaded[ref] = adapter
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch_registry())
        self.loads[ref] = self.loads.get(ref, 0) + 1
        logger.info("loaded adapter %s (rank %d) as LoRA id %d", ref, spec.rank, lora.lora_int_id)
        return adapter

    async def _unload(self, adapter: LoadedAdapter) -> None:
        self._loaded.pop(adapter.name, None)
        await self._engine.remove_lora(adapter.lora_request.lora_int_id)
        self._metrics.evicted(adapter.name.partition("@")[0])
        logger.info("evicted adapter %s", adapter.name)

    async def stats(self) -> dict:
        """Engine-side state, for tests and operators."""
        return {
            "pid": os.getpid(),
            "unfinished_requests": self._engine.num_unfinished_requests(),
            "adapters": sorted(self._loaded),
            "loads": dict(self.loads),
            "engine_lora_ids": sorted(await self._engine.list_loras()) if self._cfg.lora.enabled else [],
        }

    async def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy."""
        try:
            await self._engine.check_health()
        except Exception as e:
            raise RuntimeError(f"vLLM engine is unhealthy: {e}") from e

    def __del__(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.shutdown()

