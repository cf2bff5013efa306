"""``POST /v1/chat/completions``: parse, accept, run on the core, answer JSON or SSE."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from serve_app.api import sse
from serve_app.api.auth import Principal
from serve_app.api.context import Services
from serve_app.api.core import ChoiceEvent, Job
from serve_app.api.endpoint import GenerationEndpoint
from serve_app.api.http import Outcome
from serve_app.endpoints.chat.output import ChoiceState, ChunkWriter, completion, content_logprobs
from serve_app.endpoints.chat.service import ChatRun, ChatService

PATH = "/v1/chat/completions"


class ChatEndpoint(GenerationEndpoint[ChatRun]):
    name = "chat"

    def __init__(self, services: Services):
        super().__init__(services)
        self._chat = ChatService(services.cfg, services.models)

    async def accept(self, body: Any, principal: Principal, arrived: float, **context: Any) -> ChatRun:
        return await self._chat.accept(body, principal, arrived)

    def jobs(self, run: ChatRun) -> list[Job]:
        return [run.job]

    def streamed(self, run: ChatRun) -> bool:
        return run.request.stream

    def stream(
        self, run: ChatRun, first: ChoiceEvent, events: AsyncIterator[ChoiceEvent], outcome: Outcome
    ) -> AsyncIterator[bytes]:
        return chunks(run, first, events, outcome)

    async def collect(self, run: ChatRun, events: AsyncIterator[ChoiceEvent]) -> tuple[dict, int]:
        body = await collect(run, events)
        return body, body["usage"]["completion_tokens"]


async def collect(run: ChatRun, events: AsyncIterator[ChoiceEvent]) -> dict:
    """The whole ``chat.completion`` body."""
    choices = [ChoiceState(logprobs=[] if run.request.logprobs else None) for _ in range(run.request.n)]
    try:
        async for event in events:
            state = choices[event.index]
            state.add(event.delta, content_logprobs(event.logprobs))
            if event.finish_reason:
                state.finish_reason, state.stop_reason = event.finish_reason, event.stop_reason
                state.completion_tokens = event.completion_tokens
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    return completion(run.id, run.created, run.model, choices, run.prompt_tokens)


async def chunks(
    run: ChatRun, first: ChoiceEvent, events: AsyncIterator[ChoiceEvent], outcome: Outcome
) -> AsyncIterator[bytes]:
    """``chat.completion.chunk`` events of a stream whose first event is in hand.

    Role chunks first, then deltas, one finish chunk per choice, and the usage
    chunk if asked for (``sse_response`` adds ``data: [DONE]``).
    """
    opts = run.request.stream_options
    include_usage = bool(opts and opts.include_usage)
    writer = ChunkWriter(run.id, run.created, run.model, include_usage)
    tokens = [0] * run.request.n
    for i in range(run.request.n):
        yield sse.encode(writer.role(i))
    event: ChoiceEvent | None = first
    while event is not None:
        if event.delta or event.logprobs:
            yield sse.encode(writer.delta(event.index, event.delta, content_logprobs(event.logprobs)))
        if event.finish_reason:
            tokens[event.index] = event.completion_tokens
            outcome.completion_tokens = sum(tokens)
            yield sse.encode(writer.finish(event.index, event.finish_reason, event.stop_reason))
        event = await anext(events, None)
    if include_usage:
        yield sse.encode(writer.usage(run.prompt_tokens, sum(tokens)))
