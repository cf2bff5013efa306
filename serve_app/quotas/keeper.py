"""QuotaKeeper: the one actor whose counters every HTTP process of the app asks (``serve_app.app`` deploys it).

One replica, so that a tenant's concurrent requests and tokens are counted
once over every router or server replica. It holds no durable state: after a
restart the holders' heartbeats bring the running requests back, and token
buckets start full.
"""

from __future__ import annotations

from typing import Any

from serve_app.quotas.ledger import QuotaLedger


class QuotaKeeper:
    def __init__(self, config: dict | None = None):
        self._ledger = QuotaLedger()

    async def acquire(self, tenant: str, quota: dict[str, int], holder: str, prompt_tokens: int) -> dict[str, Any]:
        return self._ledger.acquire(tenant, quota, holder, prompt_tokens)

    async def release(self, tenant: str, quota: dict[str, int], lease: str, completion_tokens: int) -> None:
        self._ledger.release(tenant, quota, lease, completion_tokens)

    async def heartbeat(self, holder: str, leases: list[tuple[str, dict[str, int], str]]) -> None:
        self._ledger.heartbeat(holder, leases)

    async def running(self, tenant: str) -> int:
        return self._ledger.running(tenant)
