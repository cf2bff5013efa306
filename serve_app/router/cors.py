"""CORS for browser clients: off unless ``router.cors_allow_origins`` lists origins.

Off, the router sends no CORS header at all, so browsers keep other origins
out. On, a listed origin (or any, with ``"*"``) gets the headers, and a
preflight ``OPTIONS`` is answered here without authentication, as browsers
send it without credentials. Credentials (cookies) are never allowed: the API
authenticates with bearer keys.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import Response

ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, X-Request-Id, OpenAI-Organization, OpenAI-Project"
EXPOSE_HEADERS = "X-Request-Id, Retry-After"
MAX_AGE_S = "600"


class Cors:
    def __init__(self, allow_origins: list[str]):
        self._any = "*" in allow_origins
        self._origins = frozenset(o.rstrip("/") for o in allow_origins if o != "*")

    @property
    def enabled(self) -> bool:
        return self._any or bool(self._origins)

    def allowed(self, origin: str | None) -> bool:
        if not origin:
            return False
        return self._any or origin.rstrip("/") in self._origins

    def is_preflight(self, method: str, headers) -> bool:
        return self.enabled and method == "OPTIONS" and "access-control-request-method" in headers

    def preflight(self, origin: str | None) -> Response:
        if not self.allowed(origin):
            return Response(status_code=403)
        headers = self._headers(origin)
        headers.update(
            {
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": MAX_AGE_S,
            }
        )
        return Response(status_code=204, headers=headers)

    def decorate(self, response: Response, origin: str | None) -> Response:
        if self.enabled and self.allowed(origin):
            response.headers.update(self._headers(origin))
        return response

    def _headers(self, origin: str | None) -> dict[str, str]:
        headers = {
            "Access-Control-Allow-Origin": "*" if self._any else (origin or ""),
            "Access-Control-Expose-Headers": EXPOSE_HEADERS,
        }
        if not self._any:
            headers["Vary"] = "Origin"
        return headers


class CorsMiddleware:
    """``Cors`` as ASGI middleware: preflights answered here, headers added to responses.

    Plain ASGI, not Starlette's ``BaseHTTPMiddleware``, which would wrap every
    streamed body in another task and queue.
    """

    def __init__(self, app, cors: Cors):
        self._app = app
        self._cors = cors

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if self._cors.is_preflight(scope["method"], headers):
            await self._cors.preflight(origin)(scope, receive, send)
            return
        if not self._cors.allowed(origin):
            await self._app(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in self._cors._headers(origin).items()]

        async def send_with_cors(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self._app(scope, receive, send_with_cors)
