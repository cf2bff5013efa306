"""What ``model`` may name: the served base model, or ``<base>:<adapter>``.

The router answers unknown models and adapters itself, without touching a
replica, from a cached view of the adapter registry: it asks the manager for
the registry version at most every ``adapters.refresh_s`` seconds and
re-reads the ready adapters only when the version changed. Its own admin
calls invalidate the view at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from serve_app.api.auth import ANONYMOUS, Principal
from serve_app.protocol.errors import EngineUnavailable, ModelNotFound

SEPARATOR = ":"
# A registry check slower than this serves the last view instead of holding requests.
MANAGER_TIMEOUT_S = 2.0

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class ModelRef:
    """A resolved ``model`` field: the name the client used, the adapter and its weights ref."""

    requested: str
    adapter: str | None = None
    # name@sha256-prefix: what replicas multiplex on, so new weights never hit a stale copy.
    ref: str | None = None


class AdapterView:
    def __init__(self, manager: Any, refresh_s: float):
        self._manager = manager
        self._refresh_s = refresh_s
        self._version: int | None = None
        self._adapters: dict[str, dict] = {}
        self._checked = float("-inf")
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._checked = float("-inf")

    async def adapters(self) -> dict[str, dict]:
        if time.monotonic() - self._checked > self._refresh_s:
            async with self._lock:
                if time.monotonic() - self._checked > self._refresh_s:
                    await self._refresh()
        return self._adapters

    async def _refresh(self) -> None:
        try:
            version = await asyncio.wait_for(self._manager.version.remote(), MANAGER_TIMEOUT_S)
            if version != self._version:
                view = await asyncio.wait_for(self._manager.view.remote(), MANAGER_TIMEOUT_S)
                self._version, self._adapters = view["version"], view["adapters"]
        except Exception as e:
            # The manager restarting (or gone): keep serving the adapters we
            # know are ready, and ask again next time.
            if self._version is None:
                logger.warning("adapter registry unavailable: %r", e)
                raise EngineUnavailable("The adapter registry is unavailable; retry shortly.") from None
            logger.warning("adapter registry unavailable, serving its last view: %r", e)
        self._checked = time.monotonic()


class ModelResolver:
    def __init__(self, served_name: str, view: AdapterView | None):
        self.served_name = served_name
        self.view = view

    async def adapters(self, principal: Principal = ANONYMOUS) -> dict[str, dict]:
        """The ready adapters this caller may use (the others do not exist for it)."""
        every = await self.view.adapters() if self.view else {}
        if principal.adapters is None:
            return every
        return {name: a for name, a in every.items() if principal.may_use(name)}

    async def resolve(self, model: str, principal: Principal = ANONYMOUS) -> ModelRef:
        if model == self.served_name:
            return ModelRef(model)
        base, sep, adapter = model.partition(SEPARATOR)
        if sep and base == self.served_name and adapter and self.view is not None:
            # Another tenant's adapter gets the very answer a missing one gets.
            entry = (await self.view.adapters()).get(adapter) if principal.may_use(adapter) else None
            if entry is not None:
                return ModelRef(model, adapter, entry["ref"])
            raise ModelNotFound(f"The model `{model}` does not exist: no adapter named {adapter!r}.", param="model")
        raise ModelNotFound(f"The model `{model}` does not exist.", param="model")
