"""``POST /v1/completions``: raw text completion for the base model or an adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from serve_app.api import sse
from serve_app.api.auth import Principal
from serve_app.api.context import Services
from serve_app.api.core import ChoiceEvent, Job
from serve_app.api.endpoint import GenerationEndpoint
from serve_app.api.http import Outcome
from serve_app.endpoints.completions.output import (
    TextChoice,
    TextChunkWriter,
    completion_body,
    extend_logprobs,
    legacy_logprobs,
)
from serve_app.endpoints.completions.service import CompletionRun, CompletionsService


class CompletionsEndpoint(GenerationEndpoint[CompletionRun]):
    name = "completions"

    def __init__(self, services: Services):
        super().__init__(services)
        self._service = CompletionsService(services.cfg, services.models)

    async def accept(self, body: Any, principal: Principal, arrived: float, **context: Any) -> CompletionRun:
        return await self._service.accept(body, principal, arrived)

    def jobs(self, run: CompletionRun) -> list[Job]:
        return run.jobs

    def streamed(self, run: CompletionRun) -> bool:
        return run.request.stream

    def stream(
        self, run: CompletionRun, first: ChoiceEvent, events: AsyncIterator[ChoiceEvent], outcome: Outcome
    ) -> AsyncIterator[bytes]:
        return chunks(run, first, events, outcome)

    async def collect(self, run: CompletionRun, events: AsyncIterator[ChoiceEvent]) -> tuple[dict, int]:
        body = await collect(run, events)
        return body, body["usage"]["completion_tokens"]


def _prompt_of(run: CompletionRun, index: int) -> str:
    return run.prompt_texts[index // run.request.n] if run.request.echo else ""


async def collect(run: CompletionRun, events: AsyncIterator[ChoiceEvent]) -> dict:
    n = run.request.n * len(run.jobs)
    choices = [TextChoice(text=_prompt_of(run, i)) for i in range(n)]
    try:
        async for event in events:
            c = choices[event.index]
            c.logprobs = extend_logprobs(
                c.logprobs, legacy_logprobs(event.logprobs, event.content_token_ids, len(c.text))
            )
            c.text += event.delta.content
            if event.finish_reason:
                c.finish_reason, c.stop_reason = event.finish_reason, event.stop_reason
                c.completion_tokens = event.completion_tokens
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    return completion_body(run.id, run.created, run.model, choices, run.prompt_tokens)


async def chunks(
    run: CompletionRun, first: ChoiceEvent, events: AsyncIterator[ChoiceEvent], outcome: Outcome
) -> AsyncIterator[bytes]:
    opts = run.request.stream_options
    include_usage = bool(opts and opts.include_usage)
    writer = TextChunkWriter(run.id, run.created, run.model, include_usage)
    n = run.request.n * len(run.jobs)
    tokens = [0] * n
    sent = [0] * n  # characters sent per choice (logprobs' text_offset)
    if run.request.echo:
        for i in range(n):
            text = _prompt_of(run, i)
            sent[i] = len(text)
            yield sse.encode(writer.chunk(i, text))
    event: ChoiceEvent | None = first
    while event is not None:
        i = event.index
        lp = legacy_logprobs(event.logprobs, event.content_token_ids, sent[i])
        text = event.delta.content
        if text or event.finish_reason or (lp and lp["tokens"]):
            if event.finish_reason:
                tokens[i] = event.completion_tokens
                outcome.completion_tokens = sum(tokens)
            yield sse.encode(writer.chunk(i, text, lp, event.finish_reason, event.stop_reason))
            sent[i] += len(text)
        event = await anext(events, None)
    if include_usage:
        yield sse.encode(writer.usage(run.prompt_tokens, sum(tokens)))
