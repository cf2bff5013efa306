"""QuotaGate: an HTTP process's side of the quotas, in front of every generating request.

``admit`` asks the QuotaKeeper before a request reaches an engine (429 with
``Retry-After`` and ``x-ratelimit-*`` when the tenant is over) and ``release``
gives the lease back with the completion tokens when the request ends,
whatever the ending. A tenant without a quota never costs a call. The gate
names its running leases to the keeper every few seconds, so that a lease
whose release was lost, or the leases of a process that died, do not hold a
tenant's slots for ever. If the keeper does not answer in time, the request
is admitted (quotas share the service fairly; they must not take it down)
and that is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from serve_app.api.auth import Principal
from serve_app.protocol.errors import RateLimited

logger = logging.getLogger("ray.serve")

HEARTBEAT_S = 5.0
ACQUIRE_TIMEOUT_S = 2.0
# A handle's first call also finds the keeper's replica (seconds on a loaded box):
# until one call has been answered, the bound is this one.
FIRST_ACQUIRE_TIMEOUT_S = 20.0
# A lease still named after this long is dropped: a stream cannot run for longer
# than this without its end being seen, and a lost end must not hold a slot for ever.
LEASE_MAX_S = 3600.0


@dataclass
class Admission:
    """A request let in: its lease (None when not counted) and the headers its response carries."""

    headers: dict[str, str] = field(default_factory=dict)
    lease: str | None = None
    tenant: str = ""
    quota: dict[str, int] = field(default_factory=dict)
    since: float = 0.0


UNCOUNTED = Admission()


class QuotaGate:
    def __init__(self, keeper: Any, heartbeat_s: float = HEARTBEAT_S, timeout_s: float = ACQUIRE_TIMEOUT_S):
        self._keeper = keeper
        self._holder = uuid.uuid4().hex
        self._heartbeat_s = heartbeat_s
        self._timeout_s = timeout_s
        self._live: dict[str, Admission] = {}
        self._tasks: set[asyncio.Task] = set()
        self._beat: asyncio.Task | None = None
        self._warned = 0.0
        self._answered = False

    async def admit(self, principal: Principal, prompt_tokens: int) -> Admission:
        quota = principal.quota
        if quota is None or not quota.counted:
            return UNCOUNTED
        limits = quota.to_dict()
        try:
            d = await asyncio.wait_for(
                self._keeper.acquire.remote(principal.name, limits, self._holder, prompt_tokens),
                self._timeout_s if self._answered else max(self._timeout_s, FIRST_ACQUIRE_TIMEOUT_S),
            )
            self._answered = True
        except Exception as e:  # the keeper being away must not fail requests
            if time.monotonic() - self._warned > 30:
                self._warned = time.monotonic()
                logger.warning(
                    "quota keeper did not answer (%s): admitting %s uncounted", type(e).__name__, principal.name
                )
            return UNCOUNTED
        if not d["granted"]:
            raise RateLimited(d["message"], kind=d["kind"], retry_after_s=d["retry_after_s"], limits=d["headers"])
        admission = Admission(d["headers"], d["lease"], principal.name, limits, time.monotonic())
        self._live[admission.lease] = admission  # type: ignore[index]
        if self._beat is None or self._beat.done():
            self._beat = asyncio.get_running_loop().create_task(self._heartbeats())
        return admission

    def release(self, admission: Admission, completion_tokens: int) -> None:
        """Give the lease back (at most once), charging the completion tokens."""
        if admission.lease is None or self._live.pop(admission.lease, None) is None:
            return
        self._send(self._keeper.release.remote(admission.tenant, admission.quota, admission.lease, completion_tokens))

    @property
    def running(self) -> int:
        return len(self._live)

    def _send(self, call: Any) -> None:
        async def wait() -> None:
            try:
                await call
            except Exception as e:  # the next heartbeat corrects the count
                logger.debug("quota release lost: %s", e)

        task = asyncio.get_running_loop().create_task(wait())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            now = time.monotonic()
            for lease in [k for k, a in self._live.items() if now - a.since > LEASE_MAX_S]:
                del self._live[lease]
            held = [(a.tenant, a.quota, lease) for lease, a in self._live.items()]
            try:
                await asyncio.wait_for(self._keeper.heartbeat.remote(self._holder, held), self._timeout_s)
            except Exception as e:  # retried at the next beat
                logger.debug("quota heartbeat lost: %s", e)
