"""HTTP pieces every endpoint shares: the JSON body, the error shape, SSE streams.

Streams follow one rule: the first output is awaited before the 200 (``peek``),
so a failure before any token (bad adapter, overload, dead replica) is a real
HTTP error; after that an error goes in-band, the stream ends exactly once, and
the engine requests are aborted whenever the body stops early (the client went
away: Starlette cancels the body when the connection closes).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from serve_app.protocol.errors import InternalError, InvalidRequest, RequestTooLarge, ServeAppError

logger = logging.getLogger("ray.serve")

T = TypeVar("T")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def error_response(err: ServeAppError) -> JSONResponse:
    return JSONResponse(err.to_dict(), status_code=err.status, headers=err.headers())


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """orjson-encoded: responses are built as plain dicts, some of them large."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON; 413 past ``limit`` bytes (declared or streamed), 400 if not JSON."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
    try:
        # The standard library's parser: it takes integers of any size, so an
        # out-of-range seed is refused by name in validation, not here.
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise InvalidRequest(f"The request body is not valid JSON: {e}.") from None


async def peek(events: AsyncIterator[T]) -> T:
    """The first event, before the response starts; the stream is closed if it fails."""
    try:
        return await anext(events)
    except BaseException:
        await events.aclose()  # type: ignore[attr-defined]
        raise


@dataclass
class Outcome:
    """How a streamed response ended, for metrics and the access log."""

    # 499: the client went away before the end.
    status: int = 499
    completion_tokens: int = 0


class _Stream(StreamingResponse):
    """A streamed response whose ending runs even when its body never started.

    The client can leave between the first engine event and the first byte
    (Starlette then never iterates the body, or the response start fails):
    without this the engine request would run to its end for nobody and the
    tenant's quota slot would stay taken.
    """

    def __init__(self, body: AsyncIterator[bytes], unstarted: Callable[[], Awaitable[None]], **kwargs: Any):
        super().__init__(body, **kwargs)
        self._unstarted = unstarted

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._unstarted()


def sse_response(
    body: AsyncIterator[bytes],
    events: AsyncIterator[Any],
    outcome: Outcome,
    error_event: Callable[[ServeAppError], bytes],
    on_end: Callable[[Outcome], None],
    done: bytes | None = None,
    what: str = "stream",
    headers: dict[str, str] | None = None,
) -> StreamingResponse:
    """A streamed response: ``body``'s events, an error in-band, ``done`` once at the end."""
    started = False

    async def guarded() -> AsyncIterator[bytes]:
        nonlocal started
        started = True
        try:
            async for part in body:
                yield part
            outcome.status = 200
        except ServeAppError as e:
            outcome.status = e.status
            yield error_event(e)
        except Exception:
            outcome.status = 500
            logger.exception("%s failed", what)
            yield error_event(InternalError("The server had an error while streaming this response."))
        finally:
            # Also on cancellation (the client went away): aborts the engine requests.
            await events.aclose()  # type: ignore[attr-defined]
            on_end(outcome)
        if done is not None:
            yield done

    async def unstarted() -> None:
        """The client left before the body started: abort the engine requests, end it (499)."""
        if not started:
            await events.aclose()  # type: ignore[attr-defined]
            on_end(outcome)

    return _Stream(guarded(), unstarted, media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})})
