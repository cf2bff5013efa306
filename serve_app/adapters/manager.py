"""AdapterManager: the control plane for LoRA adapters (a plain class; ``app`` deploys it).

Register (copy from a source into the store, validate the copy with peft and
against the served base model, record it), list, get, delete. Routers read a
cached view (``view``) keyed by the registry version; replicas ask for an
adapter's files (``fetch``) only when they must load one they do not hold.
Everything lives in ``adapters.store_dir``, so a restart of the actor, the
application or the machine loses nothing that was registered.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from serve_app.adapters.registry import AdapterRecord, Registry
from serve_app.adapters.store import AdapterStore
from serve_app.adapters.validation import BaseShapes, check_name, validate_adapter
from serve_app.config import AppConfig
from serve_app.locations import resolve as resolve_path
from serve_app.protocol.errors import InvalidAdapter, InvalidRequest, ModelNotFound

logger = logging.getLogger("ray.serve")

REPO = Path(__file__).resolve().parents[2]
SHA256_LEN = 64
# One message of an adapter copy from the manager to a replica.
FETCH_CHUNK_BYTES = 8 << 20


def bootstrap_entries(path: str) -> list[dict[str, str]]:
    """``adapters: [{name, source, sha256?}]`` from a bootstrap YAML file."""
    file = Path(resolve_path(path))
    if not file.is_absolute():
        file = REPO / file
    doc = yaml.safe_load(file.read_text()) or {}
    entries = doc.get("adapters") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "name" in e and "source" in e for e in entries):
        raise ValueError(f"{file}: expected 'adapters: [{{name, source}}, ...]'")
    return entries


class AdapterManager:
    def __init__(self, config: dict | AppConfig):
        self._cfg = AppConfig.model_validate(config)
        a = self._cfg.adapters
        root = Path(a.resolved_store_dir())
        self._registry = Registry(root / "registry.sqlite3")
        self._store = AdapterStore(
            root / "blobs",
            a.source_roots,
            max_bytes=self._cfg.lora.max_adapter_bytes,
            storage_options=a.storage_options,
            allow_hub=a.allow_hub,
        )
        self._shapes = BaseShapes.from_model_dir(self._cfg.model.resolved_path())
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # What a manager killed midway through a registration left (never listed: see sweep).
        for path in self._store.sweep({(r.name, r.sha256) for r in self._registry.list()}):
            logger.info("removed %s, left by an interrupted registration", path)
        # Registered before the manager is ready (Serve waits for __init__), so
        # no router ever sees a registry with only part of the bootstrap in it.
        for entry in bootstrap_entries(a.bootstrap) if a.bootstrap else []:
            self._bootstrap_one(entry)

    def _bootstrap_one(self, entry: dict[str, str]) -> None:
        """Register a bootstrap adapter the registry does not hold yet.

        Names already registered are left alone: what a user changed at run
        time wins over the file.
        """
        name = entry["name"]
        if self._registry.get(name) is not None:
            return
        try:
            check_name(name)
            record = self._register(name, entry["source"], entry.get("sha256"))
            logger.info("bootstrap: registered adapter %s (sha256 %s)", name, record.sha256[:16])
        except Exception as e:
            logger.error("bootstrap adapter %s refused: %s", name, e)

    # -- the admin operations ----------------------------------------------

    async def register(self, name: str, source: str, sha256: str | None = None) -> dict[str, Any]:
        """Copy, validate and record; a refusal raises a 4xx error saying why."""
        check_name(name)
        if not isinstance(source, str) or not source:
            raise InvalidRequest("source must be a non-empty string", param="source")
        if sha256 is not None and (not isinstance(sha256, str) or len(sha256) != SHA256_LEN):
            raise InvalidRequest("sha256 must be 64 hex digits", param="sha256")
        async with self._locks[name]:
            record = await asyncio.to_thread(self._register, name, source, sha256)
        logger.info("registered adapter %s (%s, sha256 %s)", name, source, record.sha256[:16])
        return record.to_dict()

    def _register(self, name: str, source: str, pinned: str | None) -> AdapterRecord:
        staging, digest, size = self._store.stage(source)
        try:
            if pinned is not None and pinned.lower() != digest:
                raise InvalidAdapter(
                    f"adapter {name!r}: weights sha256 is {digest}, not the pinned {pinned.lower()}", param="sha256"
                )
            spec = validate_adapter(staging, name, shapes=self._shapes, **self._cfg.adapter_limits())
        except InvalidAdapter as e:
            shutil.rmtree(staging, ignore_errors=True)
            if self._registry.get(name) is None:
                self._registry.put(self._failed(name, source, digest, size, e.message))
            raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._store.commit(staging, name, digest)
        record = self._registry.put(
            AdapterRecord(
                name=name,
                base_model=spec.base_model,
                source=source,
                sha256=digest,
                rank=spec.rank,
                alpha=spec.alpha,
                target_modules=list(spec.target_modules),
                size_bytes=size,
            )
        )
        self._store.remove(name, keep=digest)  # older weights of this name
        return record

    @staticmethod
    def _failed(name: str, source: str, digest: str, size: int, reason: str) -> AdapterRecord:
        return AdapterRecord(
            name=name,
            base_model="",
            source=source,
            sha256=digest,
            rank=0,
            alpha=0.0,
            size_bytes=size,
            status="failed",
            reason=reason,
        )

    async def list(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in await asyncio.to_thread(self._registry.list)]

    async def get(self, name: str) -> dict[str, Any]:
        record = await asyncio.to_thread(self._registry.get, name)
        if record is None:
            raise ModelNotFound(f"no adapter named {name!r}", param="name")
        return record.to_dict()

    async def delete(self, name: str) -> dict[str, Any]:
        async with self._locks[name]:
            if not await asyncio.to_thread(self._registry.delete, name):
                raise ModelNotFound(f"no adapter named {name!r}", param="name")
            await asyncio.to_thread(self._store.remove, name)
        logger.info("deleted adapter %s", name)
        return {"id": name, "object": "adapter", "deleted": True}

    # -- what routers and replicas ask -------------------------------------

    async def version(self) -> int:
        return await asyncio.to_thread(self._registry.version)

    async def view(self) -> dict[str, Any]:
        """The registry version and its ready adapters: ``{name: {ref, created}}``."""

        def read() -> dict[str, Any]:
            version = self._registry.version()
            ready = {
                r.name: {"ref": r.ref, "created": int(r.created_at)}
                for r in self._registry.list()
                if r.status == "ready"
            }
            return {"version": version, "adapters": ready}

        return await asyncio.to_thread(read)

    async def _ready_record(self, ref: str) -> AdapterRecord:
        name, _, prefix = ref.partition("@")
        record = await asyncio.to_thread(self._registry.get, name)
        if record is None or record.status != "ready" or not record.sha256.startswith(prefix) or not prefix:
            raise ModelNotFound(f"adapter {ref!r} is not registered", param="model")
        return record

    async def manifest(self, ref: str) -> dict[str, Any]:
        """What a replica needs to copy a ready adapter (``name@sha256-prefix``): its files and sizes.

        ``path`` is the stored copy, for replicas that read the store directly
        (``adapters.shared_store``); the others read it through ``read_chunk``.
        """
        record = await self._ready_record(ref)
        sizes = await asyncio.to_thread(self._store.sizes, record.name, record.sha256)
        return {
            "name": record.name,
            "sha256": record.sha256,
            "files": sizes,
            "path": str(self._store.path(record.name, record.sha256)),
        }

    async def read_chunk(self, ref: str, fname: str, offset: int) -> bytes:
        """Up to FETCH_CHUNK_BYTES of one file of a ready adapter, so large adapters never travel as one message."""
        record = await self._ready_record(ref)
        if not isinstance(offset, int) or offset < 0:
            raise InvalidRequest("offset must be a non-negative integer", param="offset")
        return await asyncio.to_thread(
            self._store.read_chunk, record.name, record.sha256, fname, offset, FETCH_CHUNK_BYTES
        )

    async def stats(self) -> dict[str, Any]:
        """For tests and operators."""
        return {"pid": os.getpid(), "version": await asyncio.to_thread(self._registry.version)}

    async def check_health(self) -> None:
        await asyncio.to_thread(self._registry.version)
