"""Serve's request router for the engine deployments: power of two choices among live engines.

Serve's default router (power of two choices, with its multiplexed-model and
locality preferences) knows whether a replica *actor* is alive, not whether
the vLLM engine inside it is. A replica whose engine died keeps its actor, so
until Serve replaces it (three failed health checks) the default router keeps
choosing it, and it is the least loaded replica of all: it finishes nothing.

This router is Serve's own procedure with one filter: a replica whose last
routing stats (``LLMReplica.record_routing_stats``, every
``replica.routing_stats_period_s``) say ``engine_alive: false`` is chosen only
when no live replica is left, so that its fast 503 still answers rather than a
wait. It runs wherever a handle to the engine deployment lives: Serve's proxy
(the direct topology's ingress) and the Router replicas. Only Serve's public
request-router surface is used (``ray.serve.request_router``).
"""

from __future__ import annotations

import random
from typing import Any

from ray.serve.request_router import (
    FIFOMixin,
    LocalityMixin,
    MultiplexMixin,
    PendingRequest,
    ReplicaID,
    RequestRouter,
    RunningReplica,
)

ROUTER_CLASS = "serve_app.replica.routing:LiveEngineRouter"
STATS_KEY = "engine_alive"


def engine_alive(replica: Any) -> bool:
    """What the replica last said of its engine (alive until it says otherwise)."""
    stats = getattr(replica, "routing_stats", None) or {}
    return bool(stats.get(STATS_KEY, True))


def two_choices(pool: list[Any]) -> list[Any]:
    """Two distinct replicas drawn at random (one if that is all), for Serve to compare queues."""
    if len(pool) <= 2:
        return random.sample(pool, len(pool))
    return random.sample(pool, 2)


def prefer_live(preferred: list[Any], every: list[Any]) -> list[Any]:
    """The live replicas of ``preferred``; else any live replica; else ``preferred`` (nothing is alive)."""
    live = [r for r in preferred if engine_alive(r)]
    if live:
        return live
    live = [r for r in every if engine_alive(r)]
    return live or preferred


class LiveEngineRouter(FIFOMixin, LocalityMixin, MultiplexMixin, RequestRouter):
    """Power of two choices over the replicas whose engine is alive (see the module docstring)."""

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        if pending_request is not None and pending_request.metadata.multiplexed_model_id:
            # Replicas holding the adapter first; after Serve's matching timeout, the least loaded.
            ids: set[ReplicaID] = self.apply_multiplex_routing(pending_request=pending_request)
        else:
            ids = self.apply_locality_routing(pending_request=pending_request)
        if not ids:
            return []
        replicas = self.curr_replicas
        preferred = [replicas[i] for i in ids if i in replicas]
        pool = prefer_live(preferred, candidate_replicas)
        return [two_choices(pool)] if pool else []
