"""Typed errors raised inside the app; the router turns them into one OpenAI error shape.

``{"error": {"message", "type", "param", "code"}}`` with ``status`` as the HTTP
status. They pickle cleanly, so a replica's error reaches the router intact.
"""

from __future__ import annotations

import math


class ServeAppError(Exception):
    status: int = 500
    type: str = "internal_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def __reduce__(self):
        return (_rebuild, (type(self), self.message, self.param, self.code))

    def to_dict(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        """HTTP headers that go with this error."""
        return {}


def _rebuild(cls, message, param, code):
    return cls(message, param=param, code=code)


class InvalidRequest(ServeAppError):
    status = 400
    type = "invalid_request_error"


class ModelNotFound(ServeAppError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class RouteNotFound(ServeAppError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(InvalidRequest):
    status = 405
    code = "method_not_allowed"


class RequestTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class Unauthorized(ServeAppError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(ServeAppError):
    """A valid key that does not grant this operation (an inference key on the admin API)."""

    status = 403
    type = "permission_error"
    code = "forbidden"


class InvalidAdapter(ServeAppError):
    """An adapter that must not reach the engine: malformed, unsafe or incompatible."""

    status = 422
    type = "invalid_request_error"
    code = "invalid_adapter"


class RetryAfter:
    """An error that tells the client when to come back (``Retry-After``, seconds)."""

    retry_after_s = 1

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class EngineUnavailable(RetryAfter, ServeAppError):
    """Every 503 of ours: the service cannot take this request now; ``Retry-After`` says when to retry.

    The router sets ``retry_after_s`` from ``router.unavailable_retry_after_s``
    when it answers one (the typed error crossed a Ray handle without it).
    """

    status = 503
    type = "service_unavailable"
    code = "engine_unavailable"
    retry_after_s = 5
    # Nothing of the request reached an engine: the router may run it on another replica.
    retry_elsewhere = False


class EngineDead(EngineUnavailable):
    """This replica's engine is gone (its process died); the request never started on it."""

    retry_elsewhere = True


class ReplicasUnavailable(EngineUnavailable):
    """No replica of the engine is running (one is being replaced): retry after a few seconds."""

    code = "no_replica_available"
    # The router sets it from router.unavailable_retry_after_s.
    retry_after_s = 5


class ManagerUnavailable(EngineUnavailable):
    """The adapter manager died or is restarting under an admin call: retry shortly."""

    code = "adapter_manager_unavailable"
    retry_after_s = 2


class Overloaded(RetryAfter, ServeAppError):
    """Every replica is at its bound of ongoing and queued requests: retry later."""

    status = 429
    type = "rate_limit_error"
    code = "overloaded"
    # The router sets it from router.retry_after_s.
    retry_after_s = 1


class RateLimited(ServeAppError):
    """A tenant over its quota (``serve_app.quotas``): 429 as OpenAI sends it, with when to retry.

    ``kind`` is OpenAI's error type for it, ``requests`` or ``tokens``;
    ``limits`` are the ``x-ratelimit-*`` headers of the tenant's counters.
    """

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        kind: str = "requests",
        retry_after_s: float = 1.0,
        limits: dict[str, str] | None = None,
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message, param=param, code=code)
        self.type = kind
        self.retry_after_s = retry_after_s
        self.limits = dict(limits or {})

    def __reduce__(self):
        return (_rebuild_rate_limited, (self.message, self.type, self.retry_after_s, self.limits))

    def headers(self) -> dict[str, str]:
        # Retry-After in whole seconds (at least 1); the openai SDKs read retry-after-ms first.
        return {
            "Retry-After": str(max(1, math.ceil(self.retry_after_s))),
            "retry-after-ms": str(max(1, math.ceil(self.retry_after_s * 1000))),
            **self.limits,
        }


def _rebuild_rate_limited(message, kind, retry_after_s, limits):
    return RateLimited(message, kind=kind, retry_after_s=retry_after_s, limits=limits)


class InternalError(ServeAppError):
    status = 500
    type = "internal_error"
    code = "internal_error"
