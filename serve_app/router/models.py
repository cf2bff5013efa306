"""What ``model`` may name: the served base model, or ``<base>:<adapter>``.

The router answers unknown models and adapters itself, without touching a
replica. The adapters it knows come from a cached listing of the configured
adapters folder (refreshed every few seconds, off the event loop); the adapter
manager's registry takes this place later.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

from serve_app.protocol.errors import ModelNotFound
from serve_app.replica.adapters import CONFIG_FILE, NAME_RE

SEPARATOR = ":"


@dataclass(frozen=True)
class ModelRef:
    """A resolved ``model`` field: the name the client used and the adapter, if any."""

    requested: str
    adapter: str | None


class AdapterCatalog:
    """Adapter names found in ``root``: sub-folders with a valid name and a config."""

    def __init__(self, root: str | None, ttl_s: float = 5.0):
        self._root = Path(root) if root else None
        self._ttl_s = ttl_s
        self._names: frozenset[str] = frozenset()
        self._listed_at = float("-inf")
        self._lock = asyncio.Lock()

    def _list(self) -> frozenset[str]:
        if self._root is None or not self._root.is_dir():
            return frozenset()
        return frozenset(
            entry.name
            for entry in os.scandir(self._root)
            if NAME_RE.match(entry.name) and (Path(entry.path) / CONFIG_FILE).is_file()
        )

    async def names(self) -> frozenset[str]:
        if time.monotonic() - self._listed_at > self._ttl_s:
            async with self._lock:
                if time.monotonic() - self._listed_at > self._ttl_s:
                    self._names = await asyncio.to_thread(self._list)
                    self._listed_at = time.monotonic()
        return self._names


class ModelResolver:
    def __init__(self, served_name: str, catalog: AdapterCatalog | None):
        self.served_name = served_name
        self._catalog = catalog

    async def adapters(self) -> list[str]:
        return sorted(await self._catalog.names()) if self._catalog else []

    async def resolve(self, model: str) -> ModelRef:
        if model == self.served_name:
            return ModelRef(model, None)
        base, sep, adapter = model.partition(SEPARATOR)
        if sep and base == self.served_name and adapter and self._catalog is not None:
            if adapter in await self._catalog.names():
                return ModelRef(model, adapter)
            raise ModelNotFound(f"The model `{model}` does not exist: no adapter named {adapter!r}.", param="model")
        raise ModelNotFound(f"The model `{model}` does not exist.", param="model")
