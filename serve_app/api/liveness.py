"""Failover that answers: how long a request may wait for a replica that is not there.

While the engine deployment has no running replica (one died and its
replacement's engine is starting: 35-70 s on CPU), Serve's handle queues new
requests until one appears, past any client's timeout. The router bounds that
wait: a request that no replica has started streaming for within
``router.unavailable_wait_s`` is given up, with a 503 and ``Retry-After``, as
soon as Serve reports no running replica of the deployment. A replica that is
merely busy (a slow prefill, a cold adapter, every slot taken) keeps the
request: overload has its own answer, the 429 of ``max_queued_requests``.
Streams that have started are never touched.

The check asks Serve's controller (``serve.status()``, public API) off the
event loop, only for requests already past the bound, one call at a time for
all of them. A positive answer is kept for ``cache_s`` (a 503 comes at most
that much later); "none running" is asked afresh, so no request is refused
on an answer older than the replacement.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from serve_app.protocol.errors import ReplicasUnavailable

logger = logging.getLogger("serve_app.router")

T = TypeVar("T")


def running_replicas(app_name: str, deployment_name: str) -> int:
    """Replicas of a deployment that Serve's controller reports RUNNING (blocking: call off the loop)."""
    from ray import serve
    from ray.serve.schema import ReplicaState

    app = serve.status().applications.get(app_name)
    deployment = app.deployments.get(deployment_name) if app is not None else None
    if deployment is None:
        return 0
    return int(deployment.replica_states.get(ReplicaState.RUNNING, 0))


class ReplicaLiveness:
    """Bounds the wait for a replica to start a request (see the module docstring)."""

    def __init__(
        self,
        wait_s: float,
        retry_after_s: int,
        count: Callable[[], int],
        cache_s: float = 1.0,
    ):
        self._wait_s = wait_s
        self._retry_after_s = retry_after_s
        self._count = count
        self._cache_s = cache_s
        self._checked_at = float("-inf")
        self._running = 1
        self._pending: asyncio.Future[int] | None = None

    @classmethod
    def of_handle(cls, handle: Any, wait_s: float, retry_after_s: int) -> ReplicaLiveness:
        return cls.of_deployment(handle.app_name, handle.deployment_name, wait_s, retry_after_s)

    @classmethod
    def of_deployment(cls, app: str, deployment: str, wait_s: float, retry_after_s: int) -> ReplicaLiveness:
        return cls(wait_s, retry_after_s, lambda: running_replicas(app, deployment))

    async def started(self, first: Awaitable[T]) -> T:
        """The first item of a replica stream, or ``ReplicasUnavailable`` while no replica runs."""
        task = asyncio.ensure_future(first)
        timeout = self._wait_s
        try:
            while True:
                done, _ = await asyncio.wait((task,), timeout=timeout)
                if done:
                    return task.result()
                # Past the bound: ask again every cache_s, so that a death the
                # controller notices late still ends the wait soon after.
                timeout = self._cache_s
                if await self.running() == 0:
                    error = ReplicasUnavailable(
                        "No model replica is running (one is being replaced); retry the request shortly."
                    )
                    error.retry_after_s = self._retry_after_s
                    raise error
        finally:
            if not task.done():
                task.cancel()

    def invalidate(self) -> None:
        """Forget the last count: the next ``running`` asks the controller."""
        self._checked_at = float("-inf")

    async def running(self) -> int:
        """Running replicas (a positive count as of at most ``cache_s`` ago); one controller call at a time."""
        if self._running > 0 and time.monotonic() - self._checked_at < self._cache_s:
            return self._running
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._ask())
        pending = self._pending
        try:
            return await asyncio.shield(pending)
        finally:
            if pending.done() and self._pending is pending:
                self._pending = None

    async def _ask(self) -> int:
        try:
            self._running = await asyncio.to_thread(self._count)
        except Exception as e:
            # The controller restarting, say: nothing known, so keep waiting as Serve would.
            logger.warning("replica status unavailable: %r", e)
            self._running = 1
        self._checked_at = time.monotonic()
        return self._running
