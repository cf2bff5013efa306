"""What the generation core asks of the LLMReplica handle, answered in this process.

``GenerationCore`` calls ``handle.options(stream=True, multiplexed_model_id=ref,
...).generate.remote(request)`` and iterates what it gets, cancelling it if the
stream does not run to its end. ``LocalReplica`` gives it the same interface
over the engine replica of its own process, so that the router's code (auth,
validation, rendering, Harmony parsing, stops, metrics, SSE) runs unchanged in
the direct topology, with no Serve hop per token.

Placement keeps adapter affinity: base requests and requests for an adapter
this replica holds run here; a request for an adapter it does not hold goes
through a Serve handle to the deployment with the adapter as its multiplexed
model id, so Serve's multiplexed routing places it on a replica that holds the
adapter (or loads it on one), as in the routed topology.

Admission: at most ``limit`` streams run here at once (the routed topology's
``max_ongoing_requests`` plus ``max_queued_requests`` per replica); the next
gets a 429 in our error shape before its first token.

A replica whose engine died forwards every new request through the same
handle, where Serve's router (``serve_app.replica.routing``) places it on a
replica whose engine is alive; if none is, the request meets a dead engine and
fails with ``EngineDead`` before it starts, which the generation core answers
with a 503 and ``Retry-After`` (or retries, while another replica runs).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Protocol

from serve_app.protocol.engine import GenerateRequest, TokenChunk
from serve_app.protocol.errors import Overloaded

# Streams being closed after a cancel (their tasks, until they finish).
_closing: set[asyncio.Task] = set()


class EngineReplica(Protocol):
    """The part of ``LLMReplica`` a local handle uses."""

    def chunks(self, request: GenerateRequest) -> AsyncGenerator[TokenChunk, None]: ...

    def holds(self, ref: str) -> bool: ...

    @property
    def engine_dead(self) -> bool: ...

    async def ready(self) -> None: ...


class LocalCall:
    """One running request: iterated like Serve's response generator, and cancellable the same way."""

    __slots__ = ("_stream",)

    def __init__(self, stream: AsyncGenerator[TokenChunk, None]):
        self._stream = stream

    def __aiter__(self) -> AsyncIterator[TokenChunk]:
        return self._stream

    def cancel(self) -> None:
        """Abort the request (closing its stream aborts it in the engine)."""
        task = asyncio.get_running_loop().create_task(self._stream.aclose())
        # Held until done: the loop keeps only weak references to tasks.
        _closing.add(task)
        task.add_done_callback(_closing.discard)


class _Method:
    __slots__ = ("_call",)

    def __init__(self, call: Callable[..., Any]):
        self._call = call

    def remote(self, *args: Any) -> Any:
        return self._call(*args)


class LocalReplica:
    """The engine replica of this process behind the interface of its deployment handle."""

    def __init__(
        self,
        replica: EngineReplica,
        limit: int,
        remote: Callable[[], Any] | None = None,
        *,
        forward_when_dead: bool = True,
    ):
        """``limit``: streams at once; ``remote``: the deployment's own handle, for adapters held
        elsewhere and (``forward_when_dead``) for every request once this engine has died."""
        self._replica = replica
        self._limit = limit
        self._remote = remote
        self._forward_when_dead = forward_when_dead
        self._remote_handle: Any = None
        self.running = 0
        # The API's /ready asks it through the handle interface.
        self.ready = _Method(replica.ready)

    def options(self, *, multiplexed_model_id: str = "", **options: Any) -> _Bound:
        return _Bound(self, multiplexed_model_id, options)

    def _generate(self, ref: str, options: dict[str, Any], request: GenerateRequest) -> Any:
        if self._replica.engine_dead:
            elsewhere = self._forward_when_dead
        else:
            elsewhere = bool(ref) and not self._replica.holds(ref)
        if elsewhere and self._remote is not None:
            return self._handle().options(multiplexed_model_id=ref, **options).generate.remote(request)
        return LocalCall(self._admitted(request))

    def _handle(self) -> Any:
        if self._remote_handle is None:
            assert self._remote is not None
            self._remote_handle = self._remote()
        return self._remote_handle

    async def _admitted(self, request: GenerateRequest) -> AsyncGenerator[TokenChunk, None]:
        if self.running >= self._limit:
            raise Overloaded("The server is at capacity; retry shortly.")
        self.running += 1
        stream = self._replica.chunks(request)
        try:
            async for chunk in stream:
                yield chunk
        finally:
            self.running -= 1
            await stream.aclose()


class _Bound:
    """``handle.options(...)``: the multiplexed model id fixed; ``.generate.remote(request)`` runs one."""

    __slots__ = ("generate",)

    def __init__(self, local: LocalReplica, ref: str, options: dict[str, Any]):
        self.generate = _Method(lambda request: local._generate(ref, options, request))
