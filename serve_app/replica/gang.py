"""Several API processes around one vLLM engine: a Serve gang per engine.

vLLM's own server scales its front end with ``--api-server-count``: one
engine core process, N API processes, each an engine client (``AsyncLLM``
with ``client_index``/``client_count``) that binds its own ZMQ input and
output sockets; the engine core connects to all of them and sends each
request's outputs back to the client that sent it.

Here the API processes are Serve replicas, so that HTTP reaches each of them
directly (Serve's proxy or HAProxy picks one, as for any replica): a gang of
``replica.api_processes`` LLMServer replicas (Serve's gang scheduling, Ray
2.60) that start, fail and scale together (``RESTART_GANG``). Rank 0 also
starts the engine core. They meet through Ray's GCS key-value store, as Ray
Serve LLM's data-parallel ranks do: every rank binds its sockets and
publishes their addresses under the gang's id; rank 0 waits for all of
them, then starts the engine core with the whole list.

When the engine dies, every rank sees it (rank 0 its child process exit, the
others the same pids, read from the GCS, or a failed round trip) and starts
over in its own process for the gang's next engine: the keys carry a
generation number, the same on every rank (one per death), so the ranks meet
again without talking. No replica leaves Serve's rotation meanwhile (each
answers 503 with Retry-After at once), as a single-process replica's restart.

This module knows Ray and the rendezvous, not vLLM (``serve_app.replica.engine``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace

KEY_PREFIX = "serve_app:gang:"
POLL_S = 0.2


@dataclass(frozen=True)
class GangRole:
    """This replica's place in its engine's gang, and which of the gang's engines (one after each death)."""

    gang_id: str
    rank: int
    size: int
    generation: int = 0

    @property
    def starts_engine(self) -> bool:
        return self.rank == 0

    def next(self) -> GangRole:
        """The same place, for the gang's next engine (every rank moves on when it sees the engine die)."""
        return replace(self, generation=self.generation + 1)


def current_role() -> GangRole | None:
    """The gang this Serve replica belongs to, or None (a replica with an engine of its own)."""
    from ray import serve

    try:
        ctx = serve.get_replica_context()
    except RuntimeError:  # not in a replica (unit tests, the direct engine harness)
        return None
    gang = getattr(ctx, "gang_context", None)
    if gang is None or gang.world_size <= 1:
        return None
    return GangRole(gang_id=gang.gang_id, rank=gang.rank, size=gang.world_size)


def _key(role: GangRole, rank: int) -> bytes:
    return f"{KEY_PREFIX}{role.gang_id}:{role.generation}:{rank}".encode()


def publish(role: GangRole, addresses: dict[str, str]) -> None:
    """This rank's engine-client socket addresses (input, output), for rank 0 to hand to the engine."""
    from ray.experimental.internal_kv import _internal_kv_put

    _internal_kv_put(_key(role, role.rank), json.dumps(addresses).encode(), overwrite=True)


def gather(role: GangRole, timeout_s: float) -> list[dict[str, str]]:
    """Every rank's addresses, in rank order (rank 0's own included), waiting for those not yet published."""
    from ray.experimental.internal_kv import _internal_kv_get

    deadline = time.monotonic() + timeout_s
    found: dict[int, dict[str, str]] = {}
    while len(found) < role.size:
        for rank in range(role.size):
            if rank not in found:
                raw = _internal_kv_get(_key(role, rank))
                if raw is not None:
                    found[rank] = json.loads(raw)
        if len(found) < role.size:
            if time.monotonic() > deadline:
                missing = sorted(set(range(role.size)) - set(found))
                raise TimeoutError(f"gang {role.gang_id}: ranks {missing} did not publish within {timeout_s:.0f} s")
            time.sleep(POLL_S)
    return [found[r] for r in range(role.size)]


def _engine_key(role: GangRole) -> bytes:
    return f"{KEY_PREFIX}{role.gang_id}:{role.generation}:engine".encode()


def node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def publish_engine(role: GangRole, pids: list[int]) -> None:
    """Rank 0: where the engine core's processes run, so that the other ranks can watch them."""
    from ray.experimental.internal_kv import _internal_kv_put

    _internal_kv_put(_engine_key(role), json.dumps({"node": node_id(), "pids": pids}).encode(), overwrite=True)


def engine_of(role: GangRole, timeout_s: float) -> dict | None:
    """The engine's node and pids as rank 0 published them (None if it did not within ``timeout_s``)."""
    from ray.experimental.internal_kv import _internal_kv_get

    deadline = time.monotonic() + timeout_s
    while (raw := _internal_kv_get(_engine_key(role))) is None:
        if time.monotonic() > deadline:
            return None
        time.sleep(POLL_S)
    return json.loads(raw)


def forget(role: GangRole) -> None:
    """Remove this rank's keys (a restarted gang has a new id; this only keeps the store tidy)."""
    from ray.experimental.internal_kv import _internal_kv_del

    try:
        _internal_kv_del(_key(role, role.rank))
        if role.starts_engine:
            _internal_kv_del(_engine_key(role))
    except Exception:  # the GCS may be gone at shutdown; the keys are unique to this gang
        return
