"""``/v1/responses``: create (JSON or SSE events; in the background), get (or resume its stream),
cancel, delete, list input items, compact."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from serve_app.api import sse
from serve_app.api.auth import Principal
from serve_app.api.context import Services
from serve_app.api.core import ChoiceEvent, Job
from serve_app.api.endpoint import GenerationEndpoint
from serve_app.api.http import SSE_HEADERS, Outcome, json_response
from serve_app.endpoints.conversations.service import ConversationService, as_stored
from serve_app.endpoints.responses.background import BackgroundRuns
from serve_app.endpoints.responses.service import ResponseRun, ResponsesService
from serve_app.protocol.errors import EngineUnavailable, InvalidRequest, ServeAppError
from serve_app.quotas.gate import Admission

logger = logging.getLogger("ray.serve")

# A resumed stream reads the store for new events this often.
RESUME_POLL_S = 0.1
# How long a cancel waits for the run to stop before it answers with the response as it stands.
CANCEL_WAIT_S = 5.0


class ResponsesEndpoint(GenerationEndpoint[ResponseRun]):
    name = "responses"
    # After response.completed (or .incomplete, .failed): ``data: [DONE]``, which Open
    # Responses requires and the openai SDKs stop at (OpenAI's own API leaves it out).
    done = sse.DONE

    def __init__(self, services: Services, conversations: ConversationService):
        super().__init__(services)
        self._service = ResponsesService(services.cfg, services.models, services.responses_store, conversations)
        self._store = services.responses_store
        self._background = BackgroundRuns(services.responses_store)
        # Background streams this process read again (GET ?stream=true), for ``background_stats``.
        self._read_again = 0

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

    async def detach(
        self, run: ResponseRun, events: AsyncIterator[ChoiceEvent], admission: Admission
    ) -> Response | None:
        """``background: true``: the run goes on apart from this connection; the queued response, or its stream."""
        if not run.request.background:
            return None
        try:
            first = await self._background.start(
                run,
                events,
                self.event_objects,
                lambda o: self.finished(run, o.status, o.completion_tokens, admission=admission),
            )
        except BaseException:
            await events.aclose()  # type: ignore[attr-defined]
            raise
        if run.request.stream:
            return self._tail(run.job.principal, run.writer.id, -1)
        return json_response(first, headers=admission.headers)

    def _tail(self, principal: Principal, id: str, after: int) -> StreamingResponse:
        """A background response's events after ``after``, from the store, until its last."""

        async def events() -> AsyncIterator[bytes]:
            seen = after
            while True:
                got = await self._store.run_events.remote(principal.name, id, seen)
                for e in got["events"]:
                    seen = e["sequence_number"]
                    yield sse.event(e["type"], e)
                if got["done"]:
                    yield sse.DONE
                    return
                await asyncio.sleep(RESUME_POLL_S)

        return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)

    def error_event(self, run: ResponseRun, err: ServeAppError) -> bytes:
        """``response.failed``, with the error's code and message."""
        event = run.writer.failed_with(err.status, err.message)[0]
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
        """The stored response; with ``stream=true``, a background response's events after ``starting_after``."""
        principal = self._s.principal(request)
        id = request.path_params["response_id"]
        if request.query_params.get("stream", "false").lower() not in ("true", "1"):
            record = await self._service.stored(principal, id)
            return json_response(record["response"])
        after = _starting_after(request.query_params.get("starting_after"))
        got = await self._store.run_events.remote(principal.name, id, after) if self._store is not None else None
        if got is None:
            await self._service.stored(principal, id)  # 404 if it is not there at all
            raise InvalidRequest("Only a background response's stream can be read again.", param="stream")
        if after > got["last"]:
            raise InvalidRequest(
                f"starting_after {after} is past this response's last event ({got['last']}).", param="starting_after"
            )
        logger.info("responses %s stream read again after %d in pid %d", id, after, os.getpid())
        self._read_again += 1
        return self._tail(principal, id, after)

    def background_stats(self) -> dict[str, Any]:
        """This process's background runs and the streams it read again (for operators and tests)."""
        return {"running": self._background.ids(), "read_again": self._read_again}

    async def cancel(self, request: Request) -> Response:
        """``POST /v1/responses/{id}/cancel``: stop a background run (from any replica); the response as it ends."""
        principal = self._s.principal(request)
        id = request.path_params["response_id"]
        state = await self._store.run_cancel.remote(principal.name, id) if self._store is not None else None
        record = await self._service.stored(principal, id)  # 404 for an unknown id or another tenant's
        if state is None:
            raise InvalidRequest("Only a background response can be cancelled.", param="response_id")
        if state == "done" and record["response"]["status"] != "cancelled":
            raise InvalidRequest(
                f"Response '{id}' already ended ({record['response']['status']}): only a queued or in-progress "
                "background response can be cancelled.",
                param="response_id",
            )
        deadline = time.monotonic() + CANCEL_WAIT_S
        while record["response"]["status"] in ("queued", "in_progress") and time.monotonic() < deadline:
            await asyncio.sleep(RESUME_POLL_S)
            record = await self._service.stored(principal, id)
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


def _starting_after(raw: str | None) -> int:
    if raw is None:
        return -1
    try:
        value = int(raw)
    except ValueError:
        message = "starting_after must be an integer (an event's sequence_number)."
        raise InvalidRequest(message, param="starting_after") from None
    if value < -1:
        raise InvalidRequest("starting_after must be -1 or more.", param="starting_after")
    return value
