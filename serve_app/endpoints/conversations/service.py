"""The Conversations API: conversations and their items, kept by the response store's actor.

Items are stored in their output form, each with its own id (``msg_``,
``fc_``, ``fco_``, ``rs_``), as OpenAI's API lists them; ``as_stored`` turns
an input item into that form. ``/v1/responses`` with ``conversation`` reads
the items as the response's history and appends its input and output to
them when it completes (``serve_app.endpoints.responses.service``).
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

from pydantic import Field, field_validator

from serve_app.api.auth import Principal
from serve_app.endpoints.responses.models import InputItem, ItemReference
from serve_app.protocol.errors import InvalidRequest, RouteNotFound
from serve_app.protocol.wire import WireModel, parse

MAX_ITEMS_PER_CALL = 20  # OpenAI: "You may add up to 20 items at a time."


class ConversationNotFound(RouteNotFound):
    code = "conversation_not_found"


def _metadata(v: dict[str, str] | None) -> dict[str, str] | None:
    if v is not None:
        if len(v) > 16:
            raise ValueError("metadata: at most 16 pairs")
        if any(len(k) > 64 or len(val) > 512 for k, val in v.items()):
            raise ValueError("metadata: keys at most 64 characters, values at most 512")
    return v


class CreateConversation(WireModel):
    metadata: dict[str, str] | None = None
    items: list[InputItem] | None = Field(None, max_length=MAX_ITEMS_PER_CALL)

    _check_metadata = field_validator("metadata")(_metadata)


class UpdateConversation(WireModel):
    metadata: dict[str, str]

    _check_metadata = field_validator("metadata")(_metadata)


class AddItems(WireModel):
    items: list[InputItem] = Field(min_length=1, max_length=MAX_ITEMS_PER_CALL)


class ListQuery(WireModel):
    limit: int = Field(20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


def as_stored(item: dict[str, Any]) -> dict[str, Any]:
    """An input (or output) item in the form a conversation lists: its own id, status, content parts."""
    kind = item.get("type", "message")
    out = {**item, "type": kind, "id": item.get("id") or new_id(_PREFIX.get(kind, "item"))}
    if kind == "message":
        role = out.get("role", "user")
        part = "output_text" if role == "assistant" else "input_text"
        content = out.get("content")
        if isinstance(content, str):
            content = [{"type": part, "text": content}]
        out["content"] = [
            {**p, "type": part, **({"annotations": [], "logprobs": []} if part == "output_text" else {})}
            for p in content or []
        ]
        out.setdefault("status", "completed")
    elif kind in ("function_call", "function_call_output"):
        out.setdefault("status", "completed")
        if kind == "function_call_output" and not isinstance(out.get("output"), str):
            out["output"] = "".join(p.get("text", "") for p in out.get("output") or [])
    return out


class ConversationService:
    def __init__(self, store: Any):
        self._store = store

    async def _call(self, op: str, principal: Principal, *args: Any, **kwargs: Any) -> Any:
        if self._store is None:
            raise RouteNotFound("Conversations need the response store (responses.enabled).")
        return await self._store.conversation.remote(op, principal.name, *args, **kwargs)

    def _missing(self, id: str) -> ConversationNotFound:
        return ConversationNotFound(f"Conversation with id '{id}' not found.", param="conversation_id")

    async def _items(self, items: list[Any]) -> list[dict[str, Any]]:
        if any(isinstance(i, ItemReference) for i in items):
            raise InvalidRequest("items: item references cannot be added to a conversation", param="items")
        return [as_stored(i.model_dump(by_alias=True, exclude_none=True)) for i in items]

    async def create(self, principal: Principal, body: Any) -> dict[str, Any]:
        req: CreateConversation = parse(CreateConversation, body if body is not None else {}, deepest=True)
        items = await self._items(req.items or [])
        return await self._call("create", principal, new_id("conv"), req.metadata or {}, items)

    async def get(self, principal: Principal, id: str) -> dict[str, Any]:
        record = await self._call("get", principal, id)
        if record is None:
            raise self._missing(id)
        return record

    async def update(self, principal: Principal, id: str, body: Any) -> dict[str, Any]:
        req: UpdateConversation = parse(UpdateConversation, body)
        record = await self._call("update", principal, id, req.metadata)
        if record is None:
            raise self._missing(id)
        return record

    async def delete(self, principal: Principal, id: str) -> dict[str, Any]:
        if not await self._call("delete", principal, id):
            raise self._missing(id)
        return {"id": id, "object": "conversation.deleted", "deleted": True}

    async def add(self, principal: Principal, id: str, body: Any) -> dict[str, Any]:
        req: AddItems = parse(AddItems, body, deepest=True)
        items = await self._items(req.items)
        if not await self._call("add", principal, id, items):
            raise self._missing(id)
        return page(items, False)

    async def append(self, principal: Principal, id: str, items: list[dict[str, Any]]) -> None:
        """Items of a response that ran in this conversation (its input, then its output)."""
        if not await self._call("add", principal, id, [as_stored(i) for i in items]):
            raise self._missing(id)

    async def list_items(self, principal: Principal, id: str, query: dict[str, Any]) -> dict[str, Any]:
        q: ListQuery = parse(ListQuery, query)
        found = await self._call("items", principal, id, after=q.after, limit=q.limit, order=q.order)
        if found is None:
            raise self._missing(id)
        return page(*found)

    async def history(self, principal: Principal, id: str) -> list[dict[str, Any]]:
        """Every item, oldest first (a response's history)."""
        found = await self._call("items", principal, id)
        if found is None:
            raise ConversationNotFound(f"Conversation with id '{id}' not found.", param="conversation")
        return found[0]

    async def item(self, principal: Principal, id: str, item_id: str) -> dict[str, Any]:
        found = await self._call("item", principal, id, item_id)
        if found is None:
            raise RouteNotFound(f"Item with id '{item_id}' not found in conversation '{id}'.", param="item_id")
        return found

    async def delete_item(self, principal: Principal, id: str, item_id: str) -> dict[str, Any]:
        if not await self._call("delete_item", principal, id, item_id):
            raise RouteNotFound(f"Item with id '{item_id}' not found in conversation '{id}'.", param="item_id")
        return await self.get(principal, id)


def page(items: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": more,
    }
