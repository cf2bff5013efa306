"""Router: the ingress deployment (plain class; ``serve_app.app`` deploys it).

Thin handlers over ``ChatService``: parse the body, pick JSON or SSE, convert
every error once, here, into the OpenAI error shape. Serve's proxy gives every
request an ``X-Request-Id`` (the client's own if it sent one) and returns it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from serve_app.config import AppConfig
from serve_app.harmony.encoding import harmony_encoding, use_vocab_dir
from serve_app.metrics import RequestMetrics
from serve_app.protocol.errors import (
    EngineUnavailable,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    Overloaded,
    RequestTooLarge,
    RouteNotFound,
    ServeAppError,
)
from serve_app.router import sse
from serve_app.router.chat import ChatRun, ChatService, ChoiceEvent
from serve_app.router.admin import ADAPTERS_PATH, AdminAPI, check_admin
from serve_app.router.auth import KeyRing, Principal
from serve_app.router.cors import Cors
from serve_app.router.models import SEPARATOR, AdapterView, ModelResolver
from serve_app.router.responses import ChoiceState, ChunkWriter, completion

logger = logging.getLogger("ray.serve")

CHAT_PATH = "/v1/chat/completions"
READY_TIMEOUT_S = 5.0
MODELS_PATH = "/v1/models"


def error_response(err: ServeAppError) -> JSONResponse:
    return JSONResponse(err.to_dict(), status_code=err.status, headers=err.headers())


class Router:
    def __init__(self, config: dict | AppConfig, replica: Any, manager: Any = None):
        self._cfg = AppConfig.model_validate(config)
        use_vocab_dir(self._cfg.model.resolved_vocab_dir())
        harmony_encoding()  # load the vocabulary now, not on the first request
        view = AdapterView(manager, self._cfg.adapters.refresh_s) if manager is not None else None
        self._models = ModelResolver(self._cfg.model.served_name, view)
        self._admin = AdminAPI(manager, view.invalidate) if view is not None else None
        self._admin_key = os.environ.get(self._cfg.auth.admin_key_env) or None
        self._keys = KeyRing(self._cfg.auth.api_keys_env, self._cfg.auth.api_keys_file)
        if not self._keys.enabled:
            logger.warning("no API keys configured (%s): inference is open to anyone who reaches this port",
                           self._cfg.auth.api_keys_env)
        self._cors = Cors(self._cfg.router.cors_allow_origins)
        self._replica = replica
        self._metrics = RequestMetrics()
        self._chat = ChatService(self._cfg, replica, self._models, self._metrics)
        self._created = int(time.time())

    async def __call__(self, request: Request) -> Response:
        origin = request.headers.get("origin")
        if self._cors.is_preflight(request.method, request.headers):
            return self._cors.preflight(origin)
        return self._cors.decorate(await self._route(request), origin)

    async def _route(self, request: Request) -> Response:
        arrived = time.monotonic()
        method = request.method
        path = request.url.path
        # Serve passes the full path; the application's route prefix is root_path.
        root = request.scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        path = path.rstrip("/") or "/"
        authorization = request.headers.get("authorization")
        try:
            if path == "/health":
                _allow(method, "GET")
                return JSONResponse({"status": "ok"})
            if path == "/ready":
                _allow(method, "GET")
                return await self._ready()
            if path == ADAPTERS_PATH or path.startswith(ADAPTERS_PATH + "/"):
                check_admin(self._admin_key if self._admin else None, authorization, self._keys)
                body = await self._json_body(request) if method == "POST" else None
                status, out = await self._admin.handle(method, path[len(ADAPTERS_PATH):], body)
                return JSONResponse(out, status_code=status)
            principal = self._keys.authenticate(authorization)
            if path == CHAT_PATH:
                _allow(method, "POST")
                return await self._chat_completions(request, principal, arrived)
            if path == MODELS_PATH:
                _allow(method, "GET")
                return JSONResponse({"object": "list", "data": await self._model_cards(principal)})
            if path.startswith(MODELS_PATH + "/"):
                _allow(method, "GET")
                return await self._model(path[len(MODELS_PATH) + 1 :], principal)
            raise RouteNotFound(f"No route for {method} {request.url.path}.")
        except ServeAppError as e:
            return self._error(e)
        except Exception:
            rid = request.headers.get("x-request-id", "")
            logger.exception("request %s failed", rid)
            return self._error(InternalError(f"The server had an error processing request {rid}."))

    def _error(self, err: ServeAppError) -> JSONResponse:
        if isinstance(err, Overloaded):
            err.retry_after_s = self._cfg.router.retry_after_s
        return error_response(err)

    async def _ready(self) -> JSONResponse:
        """200 when a model replica answers its health check in time, else 503."""
        try:
            await asyncio.wait_for(self._replica.check_health.remote(), READY_TIMEOUT_S)
        except Exception as e:
            logger.warning("readiness check failed: %r", e)
            raise EngineUnavailable("No model replica is ready to serve.") from None
        return JSONResponse({"status": "ready"})

    # -- models ----------------------------------------------------------------

    def _card(self, id: str, parent: str | None, created: int | None = None) -> dict:
        return {
            "id": id,
            "object": "model",
            "created": created or self._created,
            "owned_by": "serve-app",
            "parent": parent,
            "max_model_len": self._cfg.model.max_model_len,
        }

    async def _model_cards(self, principal: Principal) -> list[dict]:
        base = self._models.served_name
        adapters = await self._models.adapters(principal)
        return [self._card(base, None)] + [
            self._card(f"{base}{SEPARATOR}{name}", base, adapters[name]["created"]) for name in sorted(adapters)
        ]

    async def _model(self, model_id: str, principal: Principal) -> JSONResponse:
        ref = await self._models.resolve(model_id, principal)
        if ref.adapter is None:
            return JSONResponse(self._card(ref.requested, None))
        created = (await self._models.adapters())[ref.adapter]["created"]
        return JSONResponse(self._card(ref.requested, self._models.served_name, created))

    # -- chat completions ----------------------------------------------------

    async def _chat_completions(self, request: Request, principal: Principal, arrived: float) -> Response:
        run = None
        try:
            run = await self._chat.accept(await self._json_body(request), principal, arrived)
            if run.request.stream:
                # The stream's own end records it (status of its last event).
                return await self._stream(run)
            body, tokens = await self._complete(run)
        except ServeAppError as e:
            self._finished(run, e.status, arrived)
            raise
        self._finished(run, 200, arrived, tokens)
        return JSONResponse(body)

    async def _complete(self, run: ChatRun) -> tuple[dict, int]:
        """The whole completion body, and its completion tokens."""
        choices = [ChoiceState(logprobs=[] if run.request.logprobs else None) for _ in range(run.request.n)]
        events = self._chat.events(run)
        try:
            async for event in events:
                state = choices[event.index]
                state.add(event.delta, event.logprobs)
                if event.finish_reason:
                    state.finish_reason, state.stop_reason = event.finish_reason, event.stop_reason
                    state.completion_tokens = event.completion_tokens
        finally:
            await events.aclose()
        body = completion(run.id, run.created, run.model, choices, run.prompt_tokens)
        return body, body["usage"]["completion_tokens"]

    def _finished(self, run: ChatRun | None, status: int, arrived: float, completion_tokens: int = 0) -> None:
        """Per-request metrics and the access line (request id from Serve's log context; never a key)."""
        e2e = time.monotonic() - arrived
        adapter = run.ref.adapter if run is not None else None
        prompt_tokens = run.prompt_tokens if run is not None else 0
        self._metrics.finished(self._models.served_name, adapter, status, prompt_tokens, e2e)
        logger.info(
            "chat %s status=%d tenant=%s adapter=%s prompt_tokens=%d completion_tokens=%d e2e=%.3fs",
            run.id if run is not None else "-", status, run.principal.name if run is not None else "-",
            adapter or "-", prompt_tokens, completion_tokens, e2e,
        )

    async def _json_body(self, request: Request) -> Any:
        limit = self._cfg.router.max_request_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > limit:
                raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise InvalidRequest(f"The request body is not valid JSON: {e}.") from None

    async def _stream(self, run: ChatRun) -> Response:
        events = self._chat.events(run)
        # Wait for the first output before answering 200, so that a failure
        # before any token (bad adapter, overload, dead replica) is a real
        # HTTP error rather than an event inside a successful stream.
        try:
            first = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        return StreamingResponse(
            sse_body(run, first, events, lambda status, tokens: self._finished(run, status, run.arrived, tokens)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

async def sse_body(
    run: ChatRun,
    first: ChoiceEvent,
    events: AsyncIterator[ChoiceEvent],
    on_end: Callable[[int, int], None] | None = None,
) -> AsyncIterator[bytes]:
    """The SSE body of a streamed completion whose first event is already in hand.

    Role chunks first, then deltas, one finish chunk per choice, the usage chunk
    if asked for, and ``data: [DONE]`` exactly once; an error after the first
    token becomes an in-band error event before it. ``on_end(status, tokens)``
    learns how it ended: 200, the in-band error's status, or 499 (client gone).
    """
    writer = ChunkWriter(run.id, run.created, run.model, _include_usage(run))
    completion_tokens = [0] * run.request.n
    status = 499
    try:
        for i in range(run.request.n):
            yield sse.encode(writer.role(i))
        event: ChoiceEvent | None = first
        while event is not None:
            if event.delta or event.logprobs:
                yield sse.encode(writer.delta(event.index, event.delta, event.logprobs))
            if event.finish_reason:
                completion_tokens[event.index] = event.completion_tokens
                yield sse.encode(writer.finish(event.index, event.finish_reason, event.stop_reason))
            event = await anext(events, None)
        if _include_usage(run):
            yield sse.encode(writer.usage(run.prompt_tokens, sum(completion_tokens)))
        status = 200
    except ServeAppError as e:
        status = e.status
        yield sse.encode(e.to_dict())
    except Exception:
        status = 500
        logger.exception("stream %s failed", run.id)
        yield sse.encode(InternalError("The server had an error while streaming this response.").to_dict())
    finally:
        # Also on cancellation (the client went away): aborts the engine requests.
        await events.aclose()
        if on_end is not None:
            on_end(status, sum(completion_tokens))
    yield sse.DONE


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise MethodNotAllowed(f"Method {method} is not allowed here; use {allowed}.")


def _include_usage(run: ChatRun) -> bool:
    opts = run.request.stream_options
    return bool(opts and opts.include_usage)
