"""The shared counters behind per-tenant quotas: pure, one instance in the QuotaKeeper actor.

Concurrency is counted in *leases*: a request holds one from admission to its
end. Leases belong to a *holder* (one HTTP process), which names the leases it
still holds every few seconds (``heartbeat``). A holder that stops (its replica
died, its process was killed) loses its leases after ``holder_ttl_s``; a lease
whose release was lost drops out at the holder's next heartbeat; and after a
restart of the keeper the heartbeats bring the running requests back.

Tokens per minute are a bucket of ``tokens_per_minute`` refilled continuously
(the full amount over a minute). A request is admitted while the bucket holds
its prompt tokens, which it takes at once; its completion tokens are taken at
its end and may leave the bucket below zero, which the next requests wait out.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from serve_app.quotas.limits import Quota

HOLDER_TTL_S = 20.0


def duration(seconds: float) -> str:
    """A reset time as OpenAI's ``x-ratelimit-reset-*`` headers write it: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(round(seconds, 3), 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{rest_text}s" if minutes else f"{rest_text}s"


@dataclass
class _Tenant:
    quota: Quota
    # lease id -> holder
    leases: dict[str, str] = field(default_factory=dict)
    tokens: float = 0.0
    stamp: float = 0.0


class QuotaLedger:
    def __init__(self, clock: Callable[[], float] = time.monotonic, holder_ttl_s: float = HOLDER_TTL_S):
        self._clock = clock
        self._ttl = holder_ttl_s
        self._tenants: dict[str, _Tenant] = {}
        self._holders: dict[str, float] = {}
        self._ids = itertools.count(1)

    def acquire(self, tenant: str, quota: dict[str, int], holder: str, prompt_tokens: int) -> dict[str, Any]:
        """Admit one request, or say why not.

        ``{"granted": True, "lease", "headers"}`` or
        ``{"granted": False, "kind", "message", "retry_after_s", "headers"}``.
        """
        now = self._clock()
        self._holders[holder] = now
        self._expire(now)
        t = self._tenant(tenant, quota, now)
        q = t.quota
        refusal = None
        if q.max_concurrent_requests is not None and len(t.leases) >= q.max_concurrent_requests:
            refusal = (
                "requests",
                f"Rate limit reached for {tenant} on concurrent requests: limit {q.max_concurrent_requests}, "
                f"running {len(t.leases)}. Retry when one of them has finished.",
                1.0,
            )
        elif q.tokens_per_minute is not None:
            rate = q.tokens_per_minute / 60.0
            if prompt_tokens > q.tokens_per_minute:
                refusal = (
                    "tokens",
                    f"Request too large for {tenant} on tokens per min (TPM): limit {q.tokens_per_minute}, "
                    f"requested {prompt_tokens} prompt tokens. Send a shorter prompt.",
                    60.0,
                )
            elif t.tokens < prompt_tokens:
                wait = (prompt_tokens - t.tokens) / rate
                refusal = (
                    "tokens",
                    f"Rate limit reached for {tenant} on tokens per min (TPM): limit {q.tokens_per_minute}, "
                    f"available {max(0, int(t.tokens))}, requested {prompt_tokens}. "
                    f"Please try again in {duration(wait)}.",
                    wait,
                )
        if refusal is not None:
            kind, message, wait = refusal
            return {
                "granted": False,
                "kind": kind,
                "message": message,
                "retry_after_s": wait,
                "headers": self._headers(t),
            }
        lease = f"{next(self._ids)}"
        t.leases[lease] = holder
        if q.tokens_per_minute is not None:
            t.tokens -= prompt_tokens
        return {"granted": True, "lease": lease, "headers": self._headers(t)}

    def release(self, tenant: str, quota: dict[str, int], lease: str, completion_tokens: int) -> None:
        t = self._tenant(tenant, quota, self._clock())
        t.leases.pop(lease, None)
        if t.quota.tokens_per_minute is not None:
            t.tokens -= completion_tokens

    def heartbeat(self, holder: str, leases: Iterable[tuple[str, dict[str, int], str]]) -> None:
        """``holder`` still runs exactly ``leases`` (tenant, quota, lease): forget its others, adopt unknown ones."""
        now = self._clock()
        self._holders[holder] = now
        held: dict[str, set[str]] = {}
        for tenant, quota, lease in leases:
            held.setdefault(tenant, set()).add(lease)
            self._tenant(tenant, quota, now).leases.setdefault(lease, holder)
        for name, t in self._tenants.items():
            mine = held.get(name, set())
            for lease in [k for k, h in t.leases.items() if h == holder and k not in mine]:
                del t.leases[lease]
        self._expire(now)

    def running(self, tenant: str) -> int:
        t = self._tenants.get(tenant)
        return len(t.leases) if t else 0

    def _tenant(self, name: str, quota: dict[str, int], now: float) -> _Tenant:
        q = Quota(**quota)
        t = self._tenants.get(name)
        if t is None:
            t = self._tenants[name] = _Tenant(q, tokens=float(q.tokens_per_minute or 0), stamp=now)
        elif t.quota != q:  # the keys file changed: new limits, the count goes on (capped below)
            if t.quota.tokens_per_minute is None:  # a bucket new to this tenant starts full
                t.tokens = float(q.tokens_per_minute or 0)
            t.quota = q
        if q.tokens_per_minute is not None:
            t.tokens = min(float(q.tokens_per_minute), t.tokens + (now - t.stamp) * q.tokens_per_minute / 60.0)
        t.stamp = now
        return t

    def _expire(self, now: float) -> None:
        gone = {h for h, seen in self._holders.items() if now - seen > self._ttl}
        if not gone:
            return
        for h in gone:
            del self._holders[h]
        for t in self._tenants.values():
            for lease in [k for k, h in t.leases.items() if h in gone]:
                del t.leases[lease]

    @staticmethod
    def _headers(t: _Tenant) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers; ``requests`` counts concurrent requests here."""
        q, out = t.quota, {}
        if q.max_concurrent_requests is not None:
            out["x-ratelimit-limit-requests"] = str(q.max_concurrent_requests)
            out["x-ratelimit-remaining-requests"] = str(max(0, q.max_concurrent_requests - len(t.leases)))
        if q.tokens_per_minute is not None:
            tpm = q.tokens_per_minute
            out["x-ratelimit-limit-tokens"] = str(tpm)
            out["x-ratelimit-remaining-tokens"] = str(max(0, math.floor(t.tokens)))
            out["x-ratelimit-reset-tokens"] = duration(max(0.0, (tpm - t.tokens) / (tpm / 60.0)))
        return out
