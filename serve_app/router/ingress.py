"""Router: the ingress deployment (a plain class; ``serve_app.app`` deploys it).

A Starlette application with one ``Route`` per endpoint, mounted as Serve's
ingress (``__serve_build_asgi_app__``). Handlers are thin: each endpoint
package parses, accepts and shapes; the generation core runs. Every error is
converted once, here, into the OpenAI error shape: typed errors raised
anywhere, unknown paths (404) and methods (405), and anything unexpected (500,
without internals). Serve's proxy gives every request an ``X-Request-Id`` (the
client's own if it sent one) and returns it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from serve_app.api.auth import KeyRing, Principal
from serve_app.api.context import Services
from serve_app.api.core import EngineRetry, GenerationCore
from serve_app.api.http import error_response, json_response
from serve_app.api.liveness import ReplicaLiveness
from serve_app.api.models import SEPARATOR, AdapterView, ModelResolver
from serve_app.config import AppConfig
from serve_app.endpoints.chat.handler import ChatEndpoint
from serve_app.endpoints.completions.handler import CompletionsEndpoint
from serve_app.endpoints.conversations.handler import ConversationsEndpoint
from serve_app.endpoints.responses.handler import ResponsesEndpoint
from serve_app.endpoints.responses.socket import ResponsesSocket
from serve_app.harmony.encoding import harmony_encoding, use_vocab_dir
from serve_app.heap import freeze_startup_heap
from serve_app.metrics import RequestMetrics
from serve_app.protocol.errors import (
    EngineUnavailable,
    InternalError,
    ManagerUnavailable,
    MethodNotAllowed,
    Overloaded,
    RouteNotFound,
    ServeAppError,
)
from serve_app.quotas.gate import QuotaGate
from serve_app.router.admin import ADAPTERS_PATH, AdminAPI, check_admin
from serve_app.router.cors import Cors, CorsMiddleware

logger = logging.getLogger("ray.serve")

READY_TIMEOUT_S = 5.0
MODELS_PATH = "/v1/models"
OPENAPI_PATH = "/openapi.json"
CONVERSATIONS = "/v1/conversations"
Handler = Callable[[Request], Awaitable[Response]]


class Router:
    def __init__(
        self,
        config: dict | AppConfig,
        replica: Any,
        manager: Any = None,
        responses_store: Any = None,
        quotas: Any = None,
        *,
        in_process: bool = False,
        replicas: ReplicaLiveness | None = None,
    ):
        """``replica``: the LLMReplica deployment's handle, or (``in_process``) this process's
        own engine replica behind a handle's interface (``serve_app.server``): then there is
        no wait for a replica to bound, since the one that runs the request is this one, and
        ``replicas`` counts the deployment's replicas (a request whose engine died is retried
        only while another runs)."""
        self._cfg = AppConfig.model_validate(config)
        use_vocab_dir(self._cfg.model.resolved_vocab_dir())
        harmony_encoding()  # load the vocabulary now, not on the first request
        view = AdapterView(manager, self._cfg.adapters.refresh_s) if manager is not None else None
        self._models = ModelResolver(self._cfg.model.served_name, view)
        self._admin = AdminAPI(manager, view.invalidate) if view is not None else None
        self._admin_key = os.environ.get(self._cfg.auth.admin_key_env) or None
        self._keys = KeyRing(self._cfg.auth.api_keys_env, self._cfg.auth.api_keys_file, quotas=quotas is not None)
        if not self._keys.enabled:
            logger.warning(
                "no API keys configured (%s): inference is open to anyone who reaches this port",
                self._cfg.auth.api_keys_env,
            )
        self._replica = replica
        r = self._cfg.router
        liveness = (
            None
            if in_process
            else ReplicaLiveness.of_handle(replica, r.unavailable_wait_s, r.unavailable_retry_after_s)
        )
        self._services = Services(
            cfg=self._cfg,
            core=GenerationCore(
                replica,
                self._cfg.model.served_name,
                r.replica_transport,
                RequestMetrics(),
                liveness,
                EngineRetry(r.engine_retries, liveness or replicas),
            ),
            models=self._models,
            keys=self._keys,
            responses_store=responses_store,
            quotas=QuotaGate(quotas) if quotas is not None else None,
        )
        self._chat = ChatEndpoint(self._services)
        self._completions = CompletionsEndpoint(self._services)
        self._conversations = ConversationsEndpoint(self._services)
        self._responses = ResponsesEndpoint(self._services, self._conversations.service)
        self._created = int(time.time())
        self._openapi_doc: dict | None = None
        # Not `app`: Serve's ingress wrapper owns that name.
        self.http = self._build_app()
        freeze_startup_heap()

    def __serve_build_asgi_app__(self) -> Any:
        """Serve's late-bound ingress: the application this instance built."""
        return self.http

    def background_stats(self) -> dict[str, Any]:
        """Background responses running in this process, and the streams it read again."""
        return self._responses.background_stats()

    def _build_app(self) -> Starlette:
        g, c = self._guard, self._conversations
        conv = CONVERSATIONS + "/{conversation_id}"
        routes = [
            Route("/health", g(self._health), methods=["GET"]),
            Route("/ready", g(self._ready), methods=["GET"]),
            Route(OPENAPI_PATH, g(self._openapi), methods=["GET"]),
            Route(MODELS_PATH, g(self._model_list), methods=["GET"]),
            Route(MODELS_PATH + "/{model_id:path}", g(self._model), methods=["GET"]),
            Route("/v1/chat/completions", g(self._chat.create), methods=["POST"]),
            Route("/v1/completions", g(self._completions.create), methods=["POST"]),
            Route("/v1/responses", g(self._responses.create), methods=["POST"]),
            WebSocketRoute("/v1/responses", ResponsesSocket(self._responses, self._services).serve),
            Route("/v1/responses/input_tokens", g(self._responses.input_tokens), methods=["POST"]),
            Route("/v1/responses/compact", g(self._responses.compact), methods=["POST"]),
            Route("/v1/responses/{response_id}", g(self._responses.get), methods=["GET"]),
            Route("/v1/responses/{response_id}", g(self._responses.delete), methods=["DELETE"]),
            Route("/v1/responses/{response_id}/input_items", g(self._responses.input_items), methods=["GET"]),
            Route("/v1/responses/{response_id}/cancel", g(self._responses.cancel), methods=["POST"]),
            Route(CONVERSATIONS, g(c.create), methods=["POST"]),
            Route(conv, g(c.get), methods=["GET"]),
            Route(conv, g(c.update), methods=["POST"]),
            Route(conv, g(c.delete), methods=["DELETE"]),
            Route(conv + "/items", g(c.add_items), methods=["POST"]),
            Route(conv + "/items", g(c.list_items), methods=["GET"]),
            Route(conv + "/items/{item_id}", g(c.get_item), methods=["GET"]),
            Route(conv + "/items/{item_id}", g(c.delete_item), methods=["DELETE"]),
            Route(ADAPTERS_PATH, g(self._adapters), methods=["GET", "POST"]),
            Route(ADAPTERS_PATH + "/{name:path}", g(self._adapters), methods=["GET", "DELETE"]),
        ]
        app = Starlette(routes=routes, exception_handlers={HTTPException: self._http_error})
        app.router.redirect_slashes = False
        cors = Cors(self._cfg.router.cors_allow_origins)
        if cors.enabled:
            app.add_middleware(CorsMiddleware, cors=cors)
        return app

    # -- errors, from one place --------------------------------------------------

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except ServeAppError as e:
                return self._error(e)
            except Exception:
                rid = request.headers.get("x-request-id", "")
                logger.exception("request %s failed", rid)
                return self._error(InternalError(f"The server had an error processing request {rid}."))

        return guarded

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        """Starlette's routing errors (no route: 404; route without this method: 405)."""
        status = getattr(exc, "status_code", 500)
        if status == 405:
            allowed = sorted(_allowed_methods(request, self.http.routes))
            return self._error(
                MethodNotAllowed(f"Method {request.method} is not allowed here; use {', '.join(allowed)}.")
            )
        if status == 404:
            return self._error(RouteNotFound(f"No route for {request.method} {request.url.path}."))
        return self._error(InternalError("The server had an error processing this request."))

    def _error(self, err: ServeAppError) -> JSONResponse:
        # Every 429 and 503 says when to come back, from config: the typed
        # error may have crossed a Ray handle, which keeps only its class.
        if isinstance(err, Overloaded):
            err.retry_after_s = self._cfg.router.retry_after_s
        elif isinstance(err, EngineUnavailable) and not isinstance(err, ManagerUnavailable):
            err.retry_after_s = self._cfg.router.unavailable_retry_after_s
        return error_response(err)

    # -- health, models, adapters -----------------------------------------------

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _ready(self, request: Request) -> Response:
        """200 when a model replica answers its health check in time, else 503."""
        try:
            await asyncio.wait_for(self._replica.ready.remote(), READY_TIMEOUT_S)
        except Exception as e:
            logger.warning("readiness check failed: %r", e)
            raise EngineUnavailable("No model replica is ready to serve.") from None
        return JSONResponse({"status": "ready"})

    async def _openapi(self, request: Request) -> Response:
        """The OpenAPI document of these routes, built on first request (serve_app.router.openapi)."""
        if self._openapi_doc is None:
            from importlib.metadata import version

            from serve_app.router.openapi import document

            self._openapi_doc = await asyncio.to_thread(
                document, "serve-app", version("serve-app"), self._cfg.model.served_name
            )
        return json_response(self._openapi_doc)

    def _card(self, id: str, parent: str | None, created: int | None = None) -> dict:
        return {
            "id": id,
            "object": "model",
            "created": created or self._created,
            "owned_by": "serve-app",
            "parent": parent,
            "max_model_len": self._cfg.model.max_model_len,
        }

    async def _model_list(self, request: Request) -> Response:
        principal = self._services.principal(request)
        return json_response({"object": "list", "data": await self._model_cards(principal)})

    async def _model_cards(self, principal: Principal) -> list[dict]:
        base = self._models.served_name
        adapters = await self._models.adapters(principal)
        return [self._card(base, None)] + [
            self._card(f"{base}{SEPARATOR}{name}", base, adapters[name]["created"]) for name in sorted(adapters)
        ]

    async def _model(self, request: Request) -> Response:
        principal = self._services.principal(request)
        ref = await self._models.resolve(request.path_params["model_id"], principal)
        if ref.adapter is None:
            return json_response(self._card(ref.requested, None))
        created = (await self._models.adapters())[ref.adapter]["created"]
        return json_response(self._card(ref.requested, self._models.served_name, created))

    async def _adapters(self, request: Request) -> Response:
        if self._admin is None:  # LoRA off: there is no adapter API
            raise RouteNotFound(f"No route for {request.method} {request.url.path}.")
        check_admin(self._admin_key, request.headers.get("authorization"), self._keys)
        body = await self._services.body(request) if request.method == "POST" else None
        name = request.path_params.get("name")
        status, out = await self._admin.handle(request.method, f"/{name}" if name else "", body)
        return json_response(out, status)


def _allowed_methods(request: Request, routes: list[Any]) -> set[str]:
    from starlette.routing import Match

    allowed: set[str] = set()
    for route in routes:
        match, _ = route.matches(request.scope)
        if match == Match.PARTIAL and getattr(route, "methods", None):
            allowed |= route.methods - {"HEAD"}
    return allowed
