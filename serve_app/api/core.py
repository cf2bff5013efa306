"""The generation core every endpoint shares: a ``Job`` in, per-choice events out.

An endpoint (chat, responses, completions) validates its request, renders its
prompt and picks an output parser; the core runs one engine request per choice
(``n``), feeds each choice's token chunks through its parser and stop matcher,
and yields ``ChoiceEvent``s interleaved as they arrive. Cancellation (the client
went away, a stop string matched, another choice failed), engine errors as typed
errors, and the per-choice metrics live here once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from serve_app.api.auth import ANONYMOUS, Principal
from serve_app.api.liveness import ReplicaLiveness
from serve_app.api.models import ModelRef
from serve_app.api.stops import StopMatcher
from serve_app.harmony.parse import Delta
from serve_app.metrics import RequestMetrics
from serve_app.protocol.engine import GenerateRequest, SamplingOptions, TokenChunk
from serve_app.protocol.errors import EngineDead, EngineUnavailable, Overloaded, ServeAppError

logger = logging.getLogger("ray.serve")

# Per token, (sampled id, logprob) then the top alternatives, as the engine sends them.
TokenLogprobs = list[tuple[int, float]]


class OutputParser(Protocol):
    """Turns a choice's completion tokens into deltas (Harmony, or plain text)."""

    # Positions, within the ids of the last ``feed``, of tokens that gave content.
    content_positions: list[int]

    def feed(self, token_ids: Iterable[int]) -> Delta: ...

    def finish(self, engine_finish_reason: str | None) -> tuple[Delta, str]: ...


@dataclass
class Job:
    """One accepted request, ready for the engine, whatever endpoint accepted it."""

    id: str
    prompt_token_ids: list[int]
    ref: ModelRef
    sampling: SamplingOptions
    new_parser: Callable[[], OutputParser]
    n: int = 1
    stop: list[str] = field(default_factory=list)
    logprobs: bool = False
    principal: Principal = ANONYMOUS
    # time.monotonic() when the request arrived (TTFT and latency count from it).
    arrived: float = 0.0

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)


@dataclass
class ChoiceEvent:
    """New output of one choice; the last event of a choice has ``finish_reason``."""

    index: int
    delta: Delta
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    completion_tokens: int = 0
    # Engine logprobs of the content tokens in this event, when asked for.
    logprobs: list[TokenLogprobs] | None = None
    # Ids of the content tokens in this event (completions' logprobs need them).
    content_token_ids: list[int] | None = None
    # On the last event: completion tokens that gave reasoning, if the parser counts them.
    reasoning_tokens: int = 0


class ChoiceRun:
    """The state of one choice while it streams: parser, stops, counters, timings."""

    __slots__ = ("_arrived", "_lp", "done", "first_s", "index", "last_s", "parser", "started", "stops", "tokens")

    def __init__(self, job: Job, index: int):
        self.index = index
        self.parser = job.new_parser()
        self.stops = StopMatcher(job.stop)
        self.started = self.done = False
        self.tokens = 0
        self.first_s: float | None = None
        self.last_s: float | None = None
        self._arrived = job.arrived
        self._lp = job.logprobs

    def step(self, chunk: TokenChunk) -> ChoiceEvent | None:
        """The event for one engine chunk (None: nothing to send yet)."""
        if chunk.completion_tokens > self.tokens:
            self.last_s = time.monotonic() - self._arrived
            self.first_s = self.last_s if self.first_s is None else self.first_s
            self.tokens = chunk.completion_tokens
        delta = self.parser.feed(chunk.token_ids)
        delta.content = self.stops.push(delta.content)
        logprobs, ids = self._content(chunk) if self._lp else (None, None)
        if self.stops.stopped:
            self.done = True
            return ChoiceEvent(
                self.index,
                delta,
                "stop",
                None,
                chunk.completion_tokens,
                logprobs,
                ids,
                getattr(self.parser, "reasoning_tokens", 0),
            )
        if chunk.finished:
            self.done = True
            return self._last(chunk, delta, logprobs, ids)
        first = not self.started
        self.started = True
        if delta or logprobs or first:
            # The first chunk goes out even when it holds only Harmony headers:
            # the client's stream opens when the engine's first token does, as
            # vLLM's own server does.
            return ChoiceEvent(self.index, delta, None, None, chunk.completion_tokens, logprobs, ids)
        return None

    def _content(self, chunk: TokenChunk) -> tuple[list[TokenLogprobs], list[int]]:
        positions = self.parser.content_positions
        lps = chunk.logprobs or []
        return [lps[i] for i in positions if i < len(lps)], [chunk.token_ids[i] for i in positions]

    def _last(self, chunk: TokenChunk, delta: Delta, logprobs: Any, ids: Any) -> ChoiceEvent:
        if chunk.finish_reason in ("abort", "error"):
            raise EngineUnavailable("The engine stopped this request; retry it.")
        tail, reason = self.parser.finish(chunk.finish_reason)
        delta.reasoning += tail.reasoning
        delta.tool_calls += tail.tool_calls
        delta.content += self.stops.push(tail.content)
        if self.stops.stopped:
            reason = "stop"
        else:
            delta.content += self.stops.flush()
        return ChoiceEvent(
            self.index,
            delta,
            reason,
            chunk.stop_reason,
            chunk.completion_tokens,
            logprobs,
            ids,
            getattr(self.parser, "reasoning_tokens", 0),
        )


class EngineRetry:
    """When a request whose replica had lost its engine is sent again, to another replica.

    Only a request that got nothing from the engine (``EngineDead``, or the
    replica actor gone before the first chunk) is sent again, and only while
    the deployment runs more than one replica: with one, the client gets the
    503 and its ``Retry-After`` at once. Serve's router steers the retry away
    from the dead replica (``serve_app.replica.routing``); the short backoff
    covers the moment before it has heard.
    """

    BACKOFF_S = 0.2

    def __init__(self, attempts: int, replicas: ReplicaLiveness | None):
        self.attempts = attempts
        self._replicas = replicas

    async def again(self, error: ServeAppError, attempt: int) -> bool:
        """Whether to send the request again after ``error`` on try ``attempt`` (0-based); waits the backoff."""
        if not getattr(error, "retry_elsewhere", False) or attempt >= self.attempts:
            return False
        if self._replicas is None or await self._replicas.running() < 2:
            return False
        await asyncio.sleep(self.BACKOFF_S * 2**attempt)
        return True


class GenerationCore:
    """Runs jobs on the replicas; one per router."""

    def __init__(
        self,
        replica_handle: Any,
        served_name: str,
        transport: str,
        metrics: RequestMetrics | None = None,
        liveness: ReplicaLiveness | None = None,
        retry: EngineRetry | None = None,
    ):
        self._replica = replica_handle
        self._served_name = served_name
        self._transport = _transport(transport)
        self._metrics = metrics or RequestMetrics()
        # Bounds the wait for a replica to start each request (None: Serve's unbounded queue).
        self._liveness = liveness
        self._retry = retry or EngineRetry(0, None)
        self._handles: dict[str, Any] = {}

    def events(self, job: Job, first_index: int = 0) -> AsyncIterator[ChoiceEvent]:
        """Events of every choice, interleaved as they arrive (indexes from ``first_index``)."""
        streams = [self._choice(job, i, first_index) for i in range(job.n)]
        return streams[0] if len(streams) == 1 else merge(streams)

    def events_of(self, jobs: list[Job]) -> AsyncIterator[ChoiceEvent]:
        """Events of several jobs (a batch of prompts): job ``p``'s choice ``i`` is index ``p * n + i``."""
        if len(jobs) == 1:
            return self.events(jobs[0])
        return merge([self.events(job, p * job.n) for p, job in enumerate(jobs)])

    def finished(
        self,
        endpoint: str,
        job: Job | None,
        status: int,
        completion_tokens: int = 0,
        arrived: float | None = None,
        prompt_tokens: int | None = None,
    ) -> None:
        """Per-request metrics and the access line (request id from Serve's log context; never a key)."""
        start = job.arrived if job is not None else arrived
        e2e = time.monotonic() - start if start else 0.0
        adapter = job.ref.adapter if job is not None else None
        if prompt_tokens is None:
            prompt_tokens = job.prompt_tokens if job is not None else 0
        self._metrics.finished(self._served_name, adapter, status, prompt_tokens, e2e)
        logger.info(
            "%s %s status=%d tenant=%s adapter=%s prompt_tokens=%d completion_tokens=%d e2e=%.3fs",
            endpoint,
            job.id if job is not None else "-",
            status,
            job.principal.name if job is not None else "-",
            adapter or "-",
            prompt_tokens,
            completion_tokens,
            e2e,
        )

    def _sampling(self, job: Job, index: int) -> SamplingOptions:
        seed = job.sampling.seed
        if seed is None or index == 0:
            return job.sampling
        # n choices with one seed would be n copies of one answer; wrapped so
        # that seed + index stays an int64.
        return job.sampling.model_copy(update={"seed": (seed + index + 2**63) % 2**64 - 2**63})

    def _handle(self, adapter: str | None) -> Any:
        key = adapter or ""
        if key not in self._handles:
            if len(self._handles) > 256:
                self._handles.clear()
            self._handles[key] = self._replica.options(stream=True, multiplexed_model_id=key, **self._transport)
        return self._handles[key]

    async def _choice(self, job: Job, index: int, first_index: int = 0) -> AsyncIterator[ChoiceEvent]:
        req = GenerateRequest(
            request_id=f"{job.id}-{index}",
            prompt_token_ids=job.prompt_token_ids,
            sampling=self._sampling(job, index),
            adapter=job.ref.ref,
        )
        run = ChoiceRun(job, first_index + index)
        gen = None
        try:
            attempt = 0
            while True:
                gen = self._handle(job.ref.ref).generate.remote(req)
                got = False
                try:
                    async for chunk in _guarded(gen, self._liveness):
                        got = True
                        event = run.step(chunk)
                        if event is not None:
                            yield event
                        if run.done:
                            return
                    raise EngineUnavailable("The model replica ended the stream early; retry the request.")
                except ServeAppError as e:
                    # Nothing of it reached the client: it may run again elsewhere.
                    if got or not await self._retry.again(e, attempt):
                        raise
                logger.warning(
                    "request %s: its replica lost its engine; sent again (try %d)", req.request_id, attempt + 2
                )
                _cancel(gen)
                attempt += 1
        finally:
            if not run.done and gen is not None:
                _cancel(gen)
            self._metrics.choice(self._served_name, job.ref.adapter, run.first_s, run.last_s, run.tokens)


def engine_error(e: BaseException) -> ServeAppError:
    """A failure on the way to or inside a replica, as one of our typed errors."""
    from ray import exceptions as ray_exc
    from ray.serve.exceptions import BackPressureError

    cause = getattr(e, "cause", None)
    if isinstance(e, ray_exc.RayTaskError) and isinstance(cause, ServeAppError):
        # Object-ref transport: the replica's error as the cause; gRPC transport:
        # an instance of both (``as_instanceof_cause``). The plain error either way.
        return cause
    if isinstance(e, ServeAppError):
        return e
    if isinstance(e, BackPressureError):
        return Overloaded("The server is at capacity; retry shortly.")
    logger.warning("replica call failed: %r", e)
    if isinstance(e, (ray_exc.RayActorError, ray_exc.ActorDiedError, ray_exc.ActorUnavailableError)):
        # Retried elsewhere only if it had sent nothing (the core knows).
        return EngineDead("The replica serving this request stopped; retry the request.")
    return EngineUnavailable("The model replica could not complete this request.")


def _cancel(gen: Any) -> None:
    """Abort a replica call that did not finish (client gone, stop string, error).

    Serve's ``cancel`` re-raises the failure of a call that was never assigned
    to a replica (refused for backpressure, say): there is nothing to abort then.
    """
    try:
        gen.cancel()
    except Exception as e:
        logger.debug("replica call not cancelled (it never started): %r", e)


def _transport(kind: str) -> dict[str, Any]:
    """Handle options for the replica transport (see ``RouterConfig.replica_transport``).

    Serve's gRPC transport sends each streamed item in the gRPC stream itself,
    where object refs go through Ray's object store and core worker. Chunks are
    plain lists (``TokenChunk.to_wire``), which the standard pickle encodes in
    a microsecond, without cloudpickle's per-object class checks; it also
    carries the replica's typed errors (msgpack cannot: Serve sends an
    exception through the same serializer, and a 422 became a 503). The
    request (once per stream) stays cloudpickled.
    """
    if kind == "grpc":
        return {"_by_reference": False, "request_serialization": "cloudpickle", "response_serialization": "pickle"}
    return {"_by_reference": True}


async def _guarded(gen: Any, liveness: ReplicaLiveness | None = None) -> AsyncIterator[TokenChunk]:
    """Iterate a replica stream, turning transport failures into typed errors.

    The first chunk is awaited under ``liveness``: a request no replica can
    start (none is running) fails with a 503 instead of waiting unbounded.
    """
    it = gen.__aiter__()

    def first() -> Awaitable[Any]:
        return liveness.started(it.__anext__()) if liveness is not None else it.__anext__()

    step: Callable[[], Awaitable[Any]] = first
    while True:
        try:
            wire = await step()
            step = it.__anext__
        except StopAsyncIteration:
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            raise engine_error(e) from None
        yield TokenChunk.from_wire(wire)


async def merge(streams: list[AsyncIterator[ChoiceEvent]]) -> AsyncIterator[ChoiceEvent]:
    """Interleave several event streams; the first failure cancels the rest."""
    queue: asyncio.Queue = asyncio.Queue()
    end = object()

    async def pump(stream: AsyncIterator[ChoiceEvent]) -> None:
        try:
            async for event in stream:
                await queue.put(event)
            await queue.put(end)
        except Exception as e:
            await queue.put(e)

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is end:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
