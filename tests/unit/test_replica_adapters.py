"""The replica's adapter data path without an engine: the host cache's locks, one release per adapter."""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import types

from serve_app.replica.adapter_cache import AdapterCache
from serve_app.replica.deployment import LoadedAdapter

FILES = {"adapter_config.json": b"{}", "adapter_model.safetensors": b"weights"}
SHA = hashlib.sha256(FILES["adapter_model.safetensors"]).hexdigest()


def _ref(i: int) -> str:
    return f"a{i}@{SHA[:16]}"


def _entries(cache: AdapterCache) -> set[str]:
    return {p.name for p in cache.root.iterdir() if not p.name.startswith(".")}


def test_held_entry_is_never_pruned(tmp_path):
    cache = AdapterCache(tmp_path, entries=1)
    cache.put(_ref(0), SHA, FILES)
    hold = cache.hold(_ref(0))  # a replica is loading or serving it
    cache.put(_ref(1), SHA, FILES)
    cache.put(_ref(2), SHA, FILES)
    assert _ref(0) in _entries(cache)  # the oldest, but held
    assert len(_entries(cache)) == 2
    hold.close()
    hold.close()  # idempotent
    cache.put(_ref(3), SHA, FILES)
    assert _entries(cache) == {_ref(3)}


def _hold_in_child(root, ref, ready, stop):
    cache = AdapterCache(root, entries=1)
    hold = cache.hold(ref)
    ready.set()
    stop.wait(30)
    hold.close()


def test_entry_held_by_another_process_is_kept(tmp_path):
    """Replicas on one host are separate processes: the lock is the kernel's, not the interpreter's."""
    cache = AdapterCache(tmp_path, entries=1)
    cache.put(_ref(0), SHA, FILES)
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_in_child, args=(str(tmp_path), _ref(0), ready, stop))
    child.start()
    try:
        assert ready.wait(60)
        cache.put(_ref(1), SHA, FILES)
        assert _ref(0) in _entries(cache)
    finally:
        stop.set()
        child.join(30)
    cache.put(_ref(2), SHA, FILES)
    assert _ref(0) not in _entries(cache)


class FakeReplica:
    """What LoadedAdapter asks of its replica, counting engine loads and unloads."""

    def __init__(self):
        self._cfg = types.SimpleNamespace(lora=types.SimpleNamespace(load_timeout_s=5))
        self.loads = 0
        self.unloads: list[int] = []
        self.forgotten = 0

    async def _engine_load(self, spec):
        self.loads += 1
        await asyncio.sleep(0)
        return types.SimpleNamespace(lora_int_id=self.loads)

    async def _engine_unload(self, adapter, lora):
        self.unloads.append(lora.lora_int_id)

    def _forget(self, adapter):
        self.forgotten += 1


class FakeHold:
    closed = 0

    def close(self):
        FakeHold.closed += 1


def _adapter(replica):
    spec = types.SimpleNamespace(name="a@00")
    adapter = LoadedAdapter(replica, spec, FakeHold(), asyncio.get_running_loop())
    return adapter


def test_release_is_single_and_reacquire_reloads():
    async def run():
        replica = FakeReplica()
        adapter = _adapter(replica)
        lora = await adapter.acquire()
        adapter.done()
        # The registry watcher and the multiplexer both let go: one engine unload.
        await asyncio.gather(adapter.release(), adapter.release())
        assert replica.unloads == [lora.lora_int_id] and not adapter.loaded
        # Deleted, then re-registered with the same weights: the cached entry loads again.
        again = await adapter.acquire()
        adapter.done()
        assert adapter.loaded and again.lora_int_id != lora.lora_int_id and replica.loads == 2
        await adapter.release(evicted=True)
        await adapter.release(evicted=True)
        assert replica.unloads == [1, 2] and replica.forgotten == 2
        # Handed out just before its eviction: loaded again for that request, then let go.
        await adapter.acquire()
        adapter.done()
        await asyncio.sleep(0.01)
        assert replica.loads == 3 and replica.unloads == [1, 2, 3] and not adapter.loaded

    asyncio.run(run())


def test_release_waits_for_running_requests():
    async def run():
        replica = FakeReplica()
        adapter = _adapter(replica)
        await adapter.acquire()  # a request is streaming
        release = asyncio.create_task(adapter.release())
        await asyncio.sleep(0.05)
        assert not release.done() and adapter.loaded and replica.unloads == []
        adapter.done()
        await asyncio.wait_for(release, 5)
        assert replica.unloads == [1]

    asyncio.run(run())


def test_eviction_frees_the_slot_at_once_and_keeps_the_files_until_requests_end():
    async def run():
        replica = FakeReplica()
        adapter = _adapter(replica)
        closed = FakeHold.closed
        await adapter.acquire()  # a request is streaming
        await asyncio.wait_for(adapter.release(evicted=True), 1)
        assert replica.unloads == [1] and not adapter.loaded
        assert FakeHold.closed == closed  # its files are still held for the running request
        adapter.done()
        assert FakeHold.closed == closed + 1

    asyncio.run(run())


def test_lora_ids_are_the_same_in_every_engine_client():
    """The API processes of a gang share one engine: an adapter's id must not depend on the process."""
    import subprocess
    import sys

    from serve_app.replica.adapter_cache import engine_lora_id

    path = "/cache/pirate@0123abcd"
    code = f"from serve_app.replica.adapter_cache import engine_lora_id as f; print(f({path!r}))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(other) == engine_lora_id(path)
    ids = {engine_lora_id(f"/cache/a{i}@0123abcd") for i in range(2000)}
    assert len(ids) == 2000 and all(0 < i < 2**31 for i in ids)
