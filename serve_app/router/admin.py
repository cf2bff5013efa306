"""Admin endpoints for adapters, on the router.

Enabled only when an admin key is configured (the environment variable named
by ``auth.admin_key_env``, ``SERVE_APP_ADMIN_KEY`` by default): without it
the routes answer 404 as if they did not exist; with it, a request needs
``Authorization: Bearer <admin key>`` (compared in constant time). An
inference key gets 403 (it is a key, just not this one); anything else 401.

    POST   /v1/adapters          {"name", "source", "sha256"?}
    GET    /v1/adapters
    GET    /v1/adapters/{name}
    DELETE /v1/adapters/{name}
"""

from __future__ import annotations

from typing import Any

from serve_app.api.auth import KeyRing, bearer_token, digest, matches
from serve_app.protocol.api_models import AdapterRegistration
from serve_app.protocol.errors import (
    Forbidden,
    ManagerUnavailable,
    RouteNotFound,
    ServeAppError,
    Unauthorized,
)
from serve_app.protocol.wire import parse

ADAPTERS_PATH = "/v1/adapters"


def check_admin(key: str | None, authorization: str | None, keyring: KeyRing | None = None) -> None:
    if not key:
        raise RouteNotFound("No such route.")
    if matches(bearer_token(authorization), [digest(key)]) is None:
        if keyring is not None and keyring.is_key(authorization):
            raise Forbidden("This key may not manage adapters; the admin key is required.")
        raise Unauthorized("A valid admin key is required (Authorization: Bearer <key>).")


def _public(record: dict[str, Any]) -> dict[str, Any]:
    """A registry record as the API shows it (the manager's store paths stay inside)."""
    return {"id": record["name"], "object": "adapter", **record}


class AdminAPI:
    def __init__(self, manager: Any, on_change):
        self._manager = manager
        self._on_change = on_change

    async def _call(self, method: str, *args: Any) -> Any:
        """One manager call; the manager dying or restarting under it is a 503, not a 500.

        A registration cut off that way never shows half-done: the registry row
        is written only after the copy is complete (``AdapterStore.sweep``
        removes what the dead manager left), so the caller simply retries.
        """
        from ray import exceptions as ray_exc

        try:
            return await getattr(self._manager, method).remote(*args)
        except ServeAppError:
            raise
        except (ray_exc.RayActorError, ray_exc.ActorUnavailableError) as e:
            raise ManagerUnavailable(
                f"The adapter manager stopped during this operation ({type(e).__name__}); it is being "
                "restarted: retry the request (an unfinished registration was not recorded)."
            ) from None

    async def handle(self, method: str, sub: str, body: Any) -> tuple[int, Any]:
        """``sub`` is the path after ``/v1/adapters`` ("" or "/<name>")."""
        name = sub.strip("/")
        if not name:
            if method == "GET":
                return 200, {"object": "list", "data": [_public(r) for r in await self._call("list")]}
            if method == "POST":
                reg: AdapterRegistration = parse(AdapterRegistration, body)
                record = await self._call("register", reg.name, reg.source, reg.sha256)
                self._on_change()
                return 201, _public(record)
        elif "/" not in name:
            if method == "GET":
                return 200, _public(await self._call("get", name))
            if method == "DELETE":
                out = await self._call("delete", name)
                self._on_change()
                return 200, out
        raise RouteNotFound(f"No route for {method} {ADAPTERS_PATH}{sub}.")
