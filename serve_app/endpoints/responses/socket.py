"""WebSocket mode of ``/v1/responses`` (the Open Responses WebSocket transport).

One connection, one response at a time: each ``response.create`` message is a
create request (the HTTP body's fields, without ``stream``, ``stream_options``
or ``background``), answered with the same event objects an SSE stream carries,
one per text frame, ending with ``response.completed``, ``.incomplete`` or
``.failed``. A turn refused before it starts (bad input, unknown model, quota,
no replica) gets an ``error`` envelope instead: ``{"type": "error", "status":
<HTTP status>, "error": {"type", "code", "message", "param"}}``; so do frames
that are not JSON, not an object, of another ``type``, or too large. The
connection stays open after any of them.

Continuation: the connection keeps its most recent response (its items), so a
``store: false`` chain continues with ``previous_response_id`` without being
stored; an older or stored id is looked up in the response store as over HTTP.
A continuation turn that fails evicts the id it continued from. A connection
is closed after ``MAX_CONNECTION_S`` with ``websocket_connection_limit_reached``.
The key is the handshake's ``Authorization`` header; without a valid one the
connection gets the 401 envelope and is closed (1008).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from serve_app.api.auth import Principal
from serve_app.api.context import Services
from serve_app.api.http import Outcome, peek
from serve_app.endpoints.responses.handler import ResponsesEndpoint
from serve_app.endpoints.responses.service import Recent
from serve_app.protocol.errors import InternalError, InvalidRequest, RequestTooLarge, ServeAppError

logger = logging.getLogger("ray.serve")

# Open Responses: connections are limited to 60 minutes.
MAX_CONNECTION_S = 3600.0
# HTTP-only fields a response.create message must not carry.
HTTP_ONLY = ("stream", "stream_options", "background")
# WebSocket close codes: normal, policy violation.
CLOSE_NORMAL, CLOSE_POLICY = 1000, 1008


class ConnectionLimit(InvalidRequest):
    code = "websocket_connection_limit_reached"


def envelope(err: ServeAppError) -> dict[str, Any]:
    """An error as the WebSocket transport sends it (its HTTP status beside the usual payload)."""
    payload = err.to_dict()["error"]
    return {"type": "error", "status": err.status, "error": {**payload, "code": err.code or err.type}}


class ResponsesSocket:
    def __init__(self, endpoint: ResponsesEndpoint, services: Services):
        self._endpoint = endpoint
        self._s = services

    async def serve(self, ws: WebSocket) -> None:
        await ws.accept()
        try:
            principal = self._s.principal(ws)
        except ServeAppError as e:
            await self._send(ws, envelope(e))
            await ws.close(CLOSE_POLICY)
            return
        opened = time.monotonic()
        recent: Recent = {}
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if time.monotonic() - opened > MAX_CONNECTION_S:
                    limit = ConnectionLimit("This connection reached its 60-minute limit; open a new one.")
                    await self._send(ws, envelope(limit))
                    await ws.close(CLOSE_NORMAL)
                    return
                try:
                    body = self._create_message(message)
                except ServeAppError as e:
                    await self._send(ws, envelope(e))
                    continue
                await self._turn(ws, body, principal, recent)
        except (WebSocketDisconnect, OSError):
            return  # the client went away (a send to a closed socket raises OSError)
        except Exception:
            logger.exception("responses websocket failed")
            if ws.application_state == WebSocketState.CONNECTED:
                try:
                    await self._send(ws, envelope(InternalError("The server had an error on this connection.")))
                    await ws.close(CLOSE_NORMAL)
                except (WebSocketDisconnect, OSError, RuntimeError):
                    pass

    def _create_message(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """A ``response.create`` frame's create-request body (typed 4xx for anything else)."""
        raw = message.get("text")
        if raw is None:
            raw = (message.get("bytes") or b"").decode("utf-8", errors="replace")
        limit = self._s.cfg.router.max_request_bytes
        if len(raw) > limit:
            raise RequestTooLarge(f"The message is larger than {limit} bytes.")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as e:
            raise InvalidRequest(f"The message is not valid JSON: {e}.", code="invalid_json") from None
        if not isinstance(body, dict):
            raise InvalidRequest("The message must be a JSON object with a type.", code="invalid_json")
        kind = body.pop("type", None)
        if kind != "response.create":
            raise InvalidRequest(
                f"Unknown message type {kind!r}: this connection takes response.create.",
                param="type",
                code="unknown_message_type",
            )
        for field in HTTP_ONLY:
            if field in body:
                raise InvalidRequest(f"{field} is an HTTP field; leave it out over WebSocket.", param=field)
        return body

    async def _turn(self, ws: WebSocket, body: dict[str, Any], principal: Principal, recent: Recent) -> None:
        arrived = time.monotonic()
        previous = body.get("previous_response_id")
        ep = self._endpoint
        try:
            run, events, admission = await ep.begin({**body, "stream": True}, principal, arrived, recent=recent)
        except ServeAppError as e:
            _forget(recent, previous)
            await self._send(ws, envelope(e))
            return
        outcome = Outcome()
        try:
            try:
                first = await peek(events)
            except ServeAppError as e:
                outcome.status = e.status
                _forget(recent, previous)
                await self._send(ws, envelope(e))
                return
            try:
                async for event in ep.event_objects(run, first, events, outcome):
                    await self._send(ws, event)
                outcome.status = 200
            except ServeAppError as e:
                outcome.status = e.status
                await self._send(ws, run.writer.failed_with(e.status, e.message)[0])
            except (WebSocketDisconnect, OSError):
                raise
            except Exception:
                outcome.status = 500
                logger.exception("responses websocket turn %s failed", run.writer.id)
                failed = run.writer.failed("server_error", "The server had an error while streaming this response.")
                await self._send(ws, failed[0])
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            ep.finished(run, outcome.status, outcome.completion_tokens, admission=admission)
        if run.writer.status in ("completed", "incomplete"):
            # The most recent response only: what a continuation on this socket needs.
            recent.clear()
            recent[run.writer.id] = run.history()
        else:
            _forget(recent, previous)

    @staticmethod
    async def _send(ws: WebSocket, obj: dict[str, Any]) -> None:
        await ws.send_text(orjson.dumps(obj).decode())


def _forget(recent: Recent, id: Any) -> None:
    if isinstance(id, str):
        recent.pop(id, None)
