"""Whether this replica's engine is alive, known at once and acted on at once.

vLLM's engine runs in processes of its own (``EngineCore``, its workers). When
one of them dies (a CUDA error, the OOM killer, ``kill -9``) the replica actor
lives on. Before this module it stayed in rotation answering 503 until Serve's
third failed health check, 20-30 s later, and then, with one replica, Serve's
proxy held every request until the replacement had started (issue 35).

Here the death is seen within ``poll_s`` by a watcher that reads the engine
client's own flag (``AsyncLLM.errored``, set when the engine core's output
socket dies), or at once by a request that meets it. Then:

* every new request on this replica fails with ``EngineDead`` before it
  starts, which the generation core sends to another replica (or answers with
  a 503 and ``Retry-After`` at once, when no other runs);
* Serve's routers stop choosing this replica within one routing-stats period
  (``record_routing_stats`` says ``engine_alive: false``; ``serve_app.replica.routing``);
* the replica starts a new engine in its own process (``on_death``), as many
  times as ``replica.engine_restarts`` allows. The replica never leaves Serve's
  rotation, so no request waits in Serve's queue for a replacement;
* when it may not restart, or the restart fails, the state is ``failed``:
  Serve's health check, which waits here for a change rather than returning at
  once, fails from that moment, and Serve replaces the replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

logger = logging.getLogger("ray.serve")

ALIVE, RESTARTING, FAILED = "alive", "restarting", "failed"


class EngineHealth:
    """The engine's state (alive, restarting, failed), an event on each change, and the death watcher."""

    def __init__(self, errored: Callable[[], bool], on_death: Callable[[], None] | None = None, poll_s: float = 0.2):
        self._errored = errored
        self._on_death = on_death
        self._poll_s = poll_s
        self.state = ALIVE
        self.died_at: float | None = None  # time.monotonic() of the last death
        self.deaths = 0
        self._changed: asyncio.Event | None = None
        self._watcher: asyncio.Task | None = None

    @property
    def dead(self) -> bool:
        """No engine to run requests on now (restarting or failed)."""
        return self.state != ALIVE

    @property
    def failed(self) -> bool:
        """Dead for good: Serve should replace this replica."""
        return self.state == FAILED

    def watch(self) -> None:
        """Start the watcher on the running loop (idempotent; the replica's constructor has no loop)."""
        if self._watcher is None and self.state == ALIVE:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while self.state == ALIVE:
            if self._errored():
                self.mark_dead("the engine client reports its engine dead")
                return
            await asyncio.sleep(self._poll_s)

    def _set(self, state: str) -> None:
        self.state = state
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def mark_dead(self, why: str) -> None:
        """Record a death (idempotent while dead) and hand it to ``on_death``."""
        if self.dead:
            return
        self.died_at = time.monotonic()
        self.deaths += 1
        self._watcher = None
        logger.error("vLLM engine of this replica died (%s): out of rotation", why)
        self._set(RESTARTING)
        if self._on_death is not None:
            self._on_death()

    def revive(self) -> None:
        """A new engine serves: back in rotation."""
        logger.warning(
            "vLLM engine of this replica restarted %.1f s after it died: back in rotation",
            time.monotonic() - (self.died_at or time.monotonic()),
        )
        self._set(ALIVE)
        self.watch()

    def give_up(self, why: str) -> None:
        """No new engine: the health check fails from now on, and Serve replaces the replica."""
        logger.error("vLLM engine of this replica will not be restarted (%s): Serve will replace the replica", why)
        self._set(FAILED)

    async def wait(self, timeout_s: float) -> str:
        """Wait up to ``timeout_s`` for the state to change (at once if failed); the state then."""
        if self.state == FAILED:
            return self.state
        self.watch()
        if self._changed is None:
            self._changed = asyncio.Event()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        except TimeoutError:
            pass
        return self.state

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
