"""Chat completions: request -> Harmony prompt -> replica streams -> choice events.

The handlers in ``ingress`` only pick JSON or SSE; this module validates,
resolves the model, renders, checks the context length, runs one engine
request per choice (``n``), and turns token chunks into OpenAI deltas.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from serve_app.config import AppConfig
from serve_app.harmony.chat import HarmonyPrompt, prepare
from serve_app.harmony.parse import CompletionParser, Delta
from serve_app.protocol.engine import GenerateRequest, SamplingOptions, TokenChunk
from serve_app.protocol.errors import EngineUnavailable, InvalidRequest, Overloaded, ServeAppError
from serve_app.metrics import RequestMetrics
from serve_app.protocol.openai import ChatCompletionRequest
from serve_app.router.auth import ANONYMOUS, Principal
from serve_app.router.models import ModelRef, ModelResolver
from serve_app.router.responses import content_logprobs
from serve_app.router.stops import StopMatcher

logger = logging.getLogger("ray.serve")


@dataclass
class ChoiceEvent:
    """New output of one choice; the last event of a choice has ``finish_reason``."""

    index: int
    delta: Delta
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    completion_tokens: int = 0
    # OpenAI logprob entries of the content tokens in this event, when asked for.
    logprobs: list[dict] | None = None


def _json_path(loc: tuple) -> str:
    """pydantic's error location as the JSON path the client wrote.

    Locations also name union members (``str``, ``list[TextPart]``, a role
    tag after a message index, a validator); those are not in the JSON.
    """
    parts: list[str] = []
    prev: Any = None
    for p in loc:
        skip = isinstance(p, str) and (
            "[" in p or "(" in p or p in _TYPE_NAMES or (isinstance(prev, int) and p in _ROLES)
        )
        if not skip:
            parts.append(str(p))
        prev = p
    return ".".join(parts)


_ROLES = {"system", "developer", "user", "assistant", "tool"}
_TYPE_NAMES = {"str", "int", "float", "bool"}


def validation_error(e: ValidationError) -> InvalidRequest:
    """The first schema violation, named by its JSON path, as a 400."""
    err = e.errors()[0]
    path = _json_path(err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return InvalidRequest(f"{path}: {msg}" if path else msg, param=path or None)


def _engine_error(e: BaseException) -> ServeAppError:
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
        return EngineUnavailable("The replica serving this request stopped; retry the request.")
    return EngineUnavailable("The model replica could not complete this request.")


@dataclass
class ChatRun:
    """One accepted chat request, ready to run."""

    id: str
    created: int
    model: str
    request: ChatCompletionRequest
    prompt: HarmonyPrompt
    ref: ModelRef
    max_tokens: int
    principal: Principal = ANONYMOUS
    # time.monotonic() when the request arrived (TTFT and latency count from it).
    arrived: float = 0.0

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt.prompt_token_ids)


class ChatService:
    def __init__(
        self, cfg: AppConfig, replica_handle: Any, resolver: ModelResolver, metrics: RequestMetrics | None = None
    ):
        self._cfg = cfg
        self._replica = replica_handle
        self._resolver = resolver
        self._metrics = metrics or RequestMetrics()
        self._handles: dict[str, Any] = {}

    # -- accepting a request ------------------------------------------------

    async def accept(self, body: Any, principal: Principal = ANONYMOUS, arrived: float | None = None) -> ChatRun:
        """Validate, resolve (for this caller) and render; every refusal is a typed 4xx."""
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        try:
            request = ChatCompletionRequest.model_validate(body)
        except ValidationError as e:
            raise validation_error(e) from None
        ref = await self._resolver.resolve(request.model, principal)
        prompt = await asyncio.to_thread(prepare, request, self._cfg.sampling_defaults.reasoning_effort)
        return ChatRun(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=request.model,
            request=request,
            prompt=prompt,
            ref=ref,
            max_tokens=self._completion_budget(request, len(prompt.prompt_token_ids)),
            principal=principal,
            arrived=time.monotonic() if arrived is None else arrived,
        )

    def _completion_budget(self, request: ChatCompletionRequest, prompt_tokens: int) -> int:
        context = self._cfg.model.max_model_len
        asked = request.completion_limit
        if asked is None:
            if prompt_tokens >= context:
                raise InvalidRequest(
                    f"This model's maximum context length is {context} tokens, and the messages "
                    f"take {prompt_tokens} tokens, leaving no room for a completion.",
                    param="messages",
                    code="context_length_exceeded",
                )
            return context - prompt_tokens
        if prompt_tokens + asked > context:
            raise InvalidRequest(
                f"This model's maximum context length is {context} tokens. However, you requested "
                f"{prompt_tokens + asked} tokens ({prompt_tokens} in the messages, {asked} in the completion). "
                "Please reduce the length of the messages or the completion.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return asked

    # -- running it ------------------------------------------------------------

    def events(self, run: ChatRun) -> AsyncIterator[ChoiceEvent]:
        """Events of every choice, interleaved as they arrive."""
        streams = [self._choice(run, i) for i in range(run.request.n)]
        return streams[0] if len(streams) == 1 else _merge(streams)

    def _sampling(self, run: ChatRun, index: int) -> SamplingOptions:
        r, d = run.request, self._cfg.sampling_defaults
        top_k = d.top_k if r.top_k is None else r.top_k
        return SamplingOptions(
            max_tokens=run.max_tokens,
            temperature=d.temperature if r.temperature is None else r.temperature,
            top_p=max(d.top_p if r.top_p is None else r.top_p, 1e-6),  # vLLM refuses 0
            top_k=-1 if top_k == 0 else top_k,
            # n choices with one seed would be n copies of one answer.
            # Wrapped so that seed + index stays an int64.
            seed=None if r.seed is None else (r.seed + index + 2**63) % 2**64 - 2**63,
            presence_penalty=r.presence_penalty,
            frequency_penalty=r.frequency_penalty,
            # ignore_eos asks for exactly max_tokens (benchmarks): the end of
            # the assistant's turn must not stop it either.
            stop_token_ids=[] if r.ignore_eos else run.prompt.stop_token_ids,
            ignore_eos=r.ignore_eos,
            structural_tag=run.prompt.structural_tag,
            logprobs=(r.top_logprobs or 0) if r.logprobs else None,
        )

    def _handle(self, adapter: str | None) -> Any:
        key = adapter or ""
        if key not in self._handles:
            if len(self._handles) > 256:
                self._handles.clear()
            self._handles[key] = self._replica.options(
                stream=True, multiplexed_model_id=key, **_transport(self._cfg.router.replica_transport)
            )
        return self._handles[key]

    async def _choice(self, run: ChatRun, index: int) -> AsyncIterator[ChoiceEvent]:
        req = GenerateRequest(
            request_id=f"{run.id}-{index}",
            prompt_token_ids=run.prompt.prompt_token_ids,
            sampling=self._sampling(run, index),
            adapter=run.ref.ref,
        )
        stop = run.request.stop
        stops = StopMatcher([stop] if isinstance(stop, str) else stop or [])
        parser = CompletionParser()
        done = started = False
        first_s = last_s = None
        tokens = 0
        gen = self._handle(run.ref.ref).generate.remote(req)
        try:
            async for chunk in _guarded(gen):
                if chunk.completion_tokens > tokens:
                    last_s = time.monotonic() - run.arrived
                    first_s = last_s if first_s is None else first_s
                    tokens = chunk.completion_tokens
                delta = parser.feed(chunk.token_ids)
                delta.content = stops.push(delta.content)
                logprobs = content_logprobs(chunk, parser.content_positions) if run.request.logprobs else None
                if stops.stopped:
                    done = True
                    yield ChoiceEvent(index, delta, "stop", None, chunk.completion_tokens, logprobs)
                    return
                if chunk.finished:
                    done = True
                    event = self._last_event(index, chunk, parser, stops, delta)
                    event.logprobs = logprobs
                    yield event
                    return
                if delta or logprobs or not started:
                    # The first chunk goes out even when it holds only Harmony
                    # headers: the client's stream opens (role chunk) when the
                    # engine's first token does, as vLLM's own server does.
                    yield ChoiceEvent(index, delta, completion_tokens=chunk.completion_tokens, logprobs=logprobs)
                started = True
            raise EngineUnavailable("The model replica ended the stream early; retry the request.")
        finally:
            if not done:
                _cancel(gen)
            self._metrics.choice(self._resolver.served_name, run.ref.adapter, first_s, last_s, tokens)

    @staticmethod
    def _last_event(
        index: int, chunk: TokenChunk, parser: CompletionParser, stops: StopMatcher, delta: Delta
    ) -> ChoiceEvent:
        if chunk.finish_reason in ("abort", "error"):
            raise EngineUnavailable("The engine stopped this request; retry it.")
        tail, reason = parser.finish(chunk.finish_reason)
        delta.reasoning += tail.reasoning
        delta.tool_calls += tail.tool_calls
        delta.content += stops.push(tail.content)
        if stops.stopped:
            reason = "stop"
        else:
            delta.content += stops.flush()
        return ChoiceEvent(index, delta, reason, chunk.stop_reason, chunk.completion_tokens)


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


async def _guarded(gen: Any) -> AsyncIterator[TokenChunk]:
    """Iterate a replica stream, turning transport failures into typed errors."""
    it = gen.__aiter__()
    while True:
        try:
            wire = await it.__anext__()
        except StopAsyncIteration:
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            raise _engine_error(e) from None
        yield TokenChunk.from_wire(wire)


async def _merge(streams: list[AsyncIterator[ChoiceEvent]]) -> AsyncIterator[ChoiceEvent]:
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
