"""Router: the ingress deployment (plain class; ``serve_app.app`` deploys it).

This foundation serves ``GET /health`` and ``GET /v1/models``; the chat API
is built on top of it. Every error leaves in the one OpenAI error shape.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from serve_app.config import AppConfig
from serve_app.protocol.errors import RouteNotFound, ServeAppError


def error_response(err: ServeAppError) -> JSONResponse:
    return JSONResponse(err.to_dict(), status_code=err.status)


class Router:
    def __init__(self, config: dict | AppConfig, replica):
        self._cfg = AppConfig.model_validate(config)
        self._replica = replica
        self._created = int(time.time())

    async def __call__(self, request: Request) -> JSONResponse:
        path, method = request.url.path.rstrip("/") or "/", request.method
        if method == "GET" and path == "/health":
            return JSONResponse({"status": "ok"})
        if method == "GET" and path == "/v1/models":
            return JSONResponse({"object": "list", "data": [self._model_card()]})
        return error_response(RouteNotFound(f"no route for {method} {request.url.path}"))

    def _model_card(self) -> dict:
        return {"id": self._cfg.model.served_name, "object": "model", "created": self._created, "owned_by": "serve-app"}
