"""``/v1/conversations`` routes: thin, over ``ConversationService``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from serve_app.api.context import Services
from serve_app.api.http import json_response
from serve_app.endpoints.conversations.service import ConversationService


class ConversationsEndpoint:
    def __init__(self, services: Services):
        self._s = services
        self.service = ConversationService(services.responses_store)

    async def create(self, request: Request) -> Response:
        # The body is optional here (an empty conversation).
        sent = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
        body = await self._s.body(request) if sent else None
        return json_response(await self.service.create(self._s.principal(request), body))

    async def get(self, request: Request) -> Response:
        return json_response(await self.service.get(self._s.principal(request), request.path_params["conversation_id"]))

    async def update(self, request: Request) -> Response:
        id = request.path_params["conversation_id"]
        return json_response(await self.service.update(self._s.principal(request), id, await self._s.body(request)))

    async def delete(self, request: Request) -> Response:
        id = request.path_params["conversation_id"]
        return json_response(await self.service.delete(self._s.principal(request), id))

    async def add_items(self, request: Request) -> Response:
        id = request.path_params["conversation_id"]
        return json_response(await self.service.add(self._s.principal(request), id, await self._s.body(request)))

    async def list_items(self, request: Request) -> Response:
        id = request.path_params["conversation_id"]
        query = dict(request.query_params)
        return json_response(await self.service.list_items(self._s.principal(request), id, query))

    async def get_item(self, request: Request) -> Response:
        p = request.path_params
        return json_response(await self.service.item(self._s.principal(request), p["conversation_id"], p["item_id"]))

    async def delete_item(self, request: Request) -> Response:
        p = request.path_params
        out = await self.service.delete_item(self._s.principal(request), p["conversation_id"], p["item_id"])
        return json_response(out)
