"""``/v1/responses``: create (JSON or SSE events), get, delete, list input items, compact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from serve_app.api import sse
from serve_app.api.auth import Principal
from serve_app.api.context import Services
from serve_app.api.core import ChoiceEvent, Job
from serve_app.api.endpoint import GenerationEndpoint
from serve_app.api.http import Outcome, json_response
from serve_app.endpoints.conversations.service import ConversationService, as_stored
from serve_app.endpoints.responses.service import ResponseRun, ResponsesService
from serve_app.protocol.errors import EngineUnavailable, ServeAppError


class ResponsesEndpoint(GenerationEndpoint[ResponseRun]):
    name = "responses"
    # After response.completed (or .incomplete, .failed): ``data: [DONE]``, which Open
    # Responses requires and the openai SDKs stop at (OpenAI's own API leaves it out).
    done = sse.DONE

    def __init__(self, services: Services, conversations: ConversationService):
        super().__init__(services)
        self._service = ResponsesService(services.cfg, services.models, services.responses_store, conversations)

    async def accept(self, body: Any, principal: Principal, arrived: float, **context: Any) -> ResponseRun:
        """``context``: ``recent``, a WebSocket connection's own responses (``socket``)."""
        return await self._service.accept(body, principal, arrived, context.get("recent"))

    def jobs(self, run: ResponseRun) -> list[Job]:
        return [run.job]

    def streamed(self, run: ResponseRun) -> bool:
        return run.request.stream

    async def stream(
        self, run: ResponseRun, first: ChoiceEvent, events: AsyncIterator[ChoiceEvent], outcome: Outcome
    ) -> AsyncIterator[bytes]:
        async for e in self.event_objects(run, first, events, outcome):
            yield sse.event(e["type"], e)

    def error_event(self, run: ResponseRun, err: ServeAppError) -> bytes:
        """``response.failed``, with the error's code and message."""
        event = run.writer.failed(err.code or err.type, err.message)[0]
        return sse.event(event["type"], event)

    async def collect(self, run: ResponseRun, events: AsyncIterator[ChoiceEvent]) -> tuple[dict, int]:
        await collect(run, events)
        await self._service.save(run)
        body = run.writer.response()
        return body, body["usage"]["output_tokens"]

    async def event_objects(
        self, run: ResponseRun, first: ChoiceEvent, events: AsyncIterator[ChoiceEvent], outcome: Outcome
    ) -> AsyncIterator[dict[str, Any]]:
        """The response's stream events, as objects (SSE and WebSocket encode them their own way)."""
        w = run.writer
        for e in w.start():
            yield e
        event: ChoiceEvent | None = first
        while event is not None:
            for e in w.delta(event.delta):
                yield e
            if event.finish_reason:
                outcome.completion_tokens = event.completion_tokens
                done = w.finish(
                    event.finish_reason, run.job.prompt_tokens, event.completion_tokens, event.reasoning_tokens
                )
                # Stored before the client hears it is done: a follow-up with
                # previous_response_id must find it.
                await self._service.save(run)
                for e in done:
                    yield e
            event = await anext(events, None)

    async def compact(self, request: Request) -> Response:
        principal = self._s.principal(request)
        return json_response(await self._service.compact(await self._s.body(request), principal))

    async def input_tokens(self, request: Request) -> Response:
        body = await self._s.body(request)
        return json_response(await self._service.input_tokens(body, self._s.principal(request)))

    async def get(self, request: Request) -> Response:
        record = await self._service.stored(self._s.principal(request), request.path_params["response_id"])
        return json_response(record["response"])

    async def delete(self, request: Request) -> Response:
        id = request.path_params["response_id"]
        await self._service.delete(self._s.principal(request), id)
        return json_response({"id": id, "object": "response.deleted", "deleted": True})

    async def input_items(self, request: Request) -> Response:
        record = await self._service.stored(self._s.principal(request), request.path_params["response_id"])
        data = [listed_item(i, item) for i, item in enumerate(record["input_items"])]
        return json_response(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": False,
            }
        )


def listed_item(index: int, item: dict[str, Any]) -> dict[str, Any]:
    """A stored input item as the list shows it: an id, a status, a message's text as content parts."""
    return as_stored({"id": f"item_{index}", **item})


async def collect(run: ResponseRun, events: AsyncIterator[ChoiceEvent]) -> None:
    """Run the response to its end (the writer holds it)."""
    try:
        async for event in events:
            run.writer.delta(event.delta)
            if event.finish_reason:
                run.writer.finish(
                    event.finish_reason, run.job.prompt_tokens, event.completion_tokens, event.reasoning_tokens
                )
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    if run.writer.status == "in_progress":
        raise EngineUnavailable("The model replica ended the response early; retry the request.")
