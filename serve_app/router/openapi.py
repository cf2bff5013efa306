"""``GET /openapi.json``: an OpenAPI 3.1 document generated from the models the routes parse and answer with.

Requests are our own wire models (what the router accepts, bounds included);
chat, completions and responses bodies are the ``openai`` SDK's models (the
shapes clients parse them with); the rest is ``serve_app.protocol.api_models``.
``OPERATIONS`` is the route table's description: a unit test checks that it
names every route of the app and nothing else. Built once, on first request
(importing the SDK's types takes most of a second).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from serve_app.protocol import api_models as api

REF = "#/components/schemas/{model}"
# Errors every operation of a kind may answer (the one error shape).
_COMMON_ERRORS = {"400", "401", "404", "413"}
_INFERENCE_ERRORS = _COMMON_ERRORS | {"422", "429", "503"}
_ADMIN_ERRORS = _COMMON_ERRORS | {"403", "409", "422", "503"}
_ERROR_TEXT = {
    "400": "The request is malformed or passes a bound (code limit_exceeded names it)",
    "401": "No key, or not a valid one",
    "403": "A valid key that may not do this",
    "404": "No such model, adapter, response or route",
    "405": "The route does not take this method",
    "409": "The adapter is being changed by another request",
    "413": "The body is larger than router.max_request_bytes",
    "422": "An adapter that must not reach the engine (malformed, unsafe or incompatible)",
    "429": "Every replica is at its bound: retry after Retry-After seconds",
    "503": "No engine can take the request now: retry after Retry-After seconds",
}


@dataclass(frozen=True)
class Operation:
    path: str
    method: str
    summary: str
    tag: str
    response: str | None  # a component name
    request: str | None = None
    security: str | None = "ApiKey"
    stream: str | None = None  # the component of one streamed event, when the body can ask for SSE
    status: str = "200"
    errors: frozenset[str] = frozenset(_COMMON_ERRORS)
    body_required: bool = True


OPERATIONS: tuple[Operation, ...] = (
    Operation("/health", "get", "The router process is up", "health", "Status", security=None, errors=frozenset()),
    Operation(
        "/ready", "get", "A model replica answers its health check", "health", "Status", security=None,
        errors=frozenset({"503"}),
    ),
    Operation(
        "/openapi.json", "get", "This document", "health", None, security=None, errors=frozenset()
    ),
    Operation("/v1/models", "get", "The base model and the adapters this key may use", "models", "ModelList"),
    Operation("/v1/models/{model_id}", "get", "One model or adapter", "models", "ModelCard"),
    Operation(
        "/v1/chat/completions", "post", "Chat completion (Harmony: reasoning, tools, structured output)", "chat",
        "ChatCompletion", request="ChatCompletionRequest", stream="ChatCompletionChunk",
        errors=frozenset(_INFERENCE_ERRORS),
    ),
    Operation(
        "/v1/completions", "post", "Text completion of a raw prompt (no Harmony)", "completions", "Completion",
        request="CompletionRequest", stream="CompletionChunk", errors=frozenset(_INFERENCE_ERRORS),
    ),
    Operation(
        "/v1/responses", "post", "Create a response (stored unless store is false)", "responses", "Response",
        request="ResponsesRequest", stream="ResponseStreamEvent", errors=frozenset(_INFERENCE_ERRORS),
    ),
    Operation(
        "/v1/responses/input_tokens", "post", "Count a response request's input tokens (its Harmony prompt)",
        "responses", "InputTokens", request="ResponsesRequest", errors=frozenset(_INFERENCE_ERRORS - {"429", "503"}),
    ),
    Operation(
        "/v1/responses/compact", "post", "Compact a window of items (what gpt-oss would not see dropped, sealed)",
        "responses", "Compaction", request="CompactRequest", errors=frozenset(_INFERENCE_ERRORS - {"429", "503"}),
    ),
    Operation(
        "/v1/responses/{response_id}", "get",
        "A stored response; with stream=true, a background response's events after starting_after", "responses",
        "Response", stream="ResponseStreamEvent",
    ),
    Operation(
        "/v1/responses/{response_id}/cancel", "post", "Cancel a background response (from any replica)",
        "responses", "Response", body_required=False,
    ),
    Operation("/v1/responses/{response_id}", "delete", "Delete a stored response", "responses", "ResponseDeleted"),
    Operation(
        "/v1/responses/{response_id}/input_items", "get", "A stored response's input items", "responses", "ItemList"
    ),
    Operation(
        "/v1/conversations", "post", "Create a conversation (optionally with items)", "conversations",
        "Conversation", request="CreateConversation", body_required=False,
    ),
    Operation("/v1/conversations/{conversation_id}", "get", "A conversation", "conversations", "Conversation"),
    Operation(
        "/v1/conversations/{conversation_id}", "post", "Update a conversation's metadata", "conversations",
        "Conversation", request="UpdateConversation",
    ),
    Operation(
        "/v1/conversations/{conversation_id}", "delete", "Delete a conversation and its items", "conversations",
        "ConversationDeleted",
    ),
    Operation(
        "/v1/conversations/{conversation_id}/items", "post", "Add items to a conversation", "conversations",
        "ItemList", request="AddItems",
    ),
    Operation(
        "/v1/conversations/{conversation_id}/items", "get", "A conversation's items (paginated: limit, order, after)",
        "conversations", "ItemList",
    ),
    Operation(
        "/v1/conversations/{conversation_id}/items/{item_id}", "get", "One item of a conversation",
        "conversations", "Item",
    ),
    Operation(
        "/v1/conversations/{conversation_id}/items/{item_id}", "delete", "Delete an item (answers the conversation)",
        "conversations", "Conversation",
    ),
    Operation(
        "/v1/adapters", "get", "Registered adapters", "adapters", "AdapterList", security="AdminKey",
        errors=frozenset(_ADMIN_ERRORS),
    ),
    Operation(
        "/v1/adapters", "post", "Register (copy, validate, store) an adapter", "adapters", "Adapter",
        request="AdapterRegistration", security="AdminKey", status="201", errors=frozenset(_ADMIN_ERRORS),
    ),
    Operation(
        "/v1/adapters/{name}", "get", "One adapter", "adapters", "Adapter", security="AdminKey",
        errors=frozenset(_ADMIN_ERRORS),
    ),
    Operation(
        "/v1/adapters/{name}", "delete", "Remove an adapter", "adapters", "AdapterDeleted", security="AdminKey",
        errors=frozenset(_ADMIN_ERRORS),
    ),
)  # fmt: skip


def _models() -> dict[str, Any]:
    """Component name -> model (or type adapter) the document describes."""
    from openai.types import Completion
    from openai.types.chat import ChatCompletion, ChatCompletionChunk
    from openai.types.responses import Response, ResponseStreamEvent

    from serve_app.endpoints.chat.models import ChatCompletionRequest
    from serve_app.endpoints.completions.models import CompletionRequest
    from serve_app.endpoints.conversations.service import AddItems, CreateConversation, UpdateConversation
    from serve_app.endpoints.responses.models import CompactRequest, ResponsesRequest

    return {
        "ChatCompletionRequest": ChatCompletionRequest,
        "CompletionRequest": CompletionRequest,
        "ResponsesRequest": ResponsesRequest,
        "CompactRequest": CompactRequest,
        "AdapterRegistration": api.AdapterRegistration,
        "ChatCompletion": ChatCompletion,
        "ChatCompletionChunk": ChatCompletionChunk,
        "Completion": Completion,
        "CompletionChunk": api.CompletionChunk,
        "Response": Response,
        "ResponseStreamEvent": TypeAdapter(ResponseStreamEvent),
        "ModelList": api.ModelList,
        "ModelCard": api.ModelCard,
        "ResponseDeleted": api.ResponseDeleted,
        "ItemList": api.ItemList,
        "InputTokens": api.InputTokens,
        "Compaction": api.Compaction,
        "Conversation": api.Conversation,
        "ConversationDeleted": api.ConversationDeleted,
        "Item": api.Item,
        "CreateConversation": CreateConversation,
        "UpdateConversation": UpdateConversation,
        "AddItems": AddItems,
        "Adapter": api.Adapter,
        "AdapterList": api.AdapterList,
        "AdapterDeleted": api.AdapterDeleted,
        "Status": api.Status,
        "Error": api.ErrorBody,
    }


def _components(requests: set[str]) -> dict[str, Any]:
    """JSON schemas of every model, their shared definitions hoisted into ``components.schemas``."""
    schemas: dict[str, Any] = {}
    pairs: list[tuple[str, Any, JsonSchemaMode]] = []
    for name, model in _models().items():
        mode: JsonSchemaMode = "validation" if name in requests else "serialization"
        if isinstance(model, TypeAdapter):
            schema = model.json_schema(ref_template=REF, mode=mode)
            schemas.update(schema.pop("$defs", {}))
            schemas[name] = schema
        else:
            pairs.append((name, model, mode))
    keyed, defs = models_json_schema([(m, mode) for _, m, mode in pairs], ref_template=REF)
    schemas.update(defs.get("$defs", {}))
    for name, model, mode in pairs:
        ref = keyed[(model, mode)]
        if "$ref" in ref and ref["$ref"] != REF.format(model=name):
            # Component named after the model class; alias it under our name.
            schemas[name] = ref
    return schemas


def _json(component: str) -> dict[str, Any]:
    return {"schema": {"$ref": REF.format(model=component)}}


def _sse_event(component: str) -> dict[str, Any]:
    """One server-sent event: its data is a ``component`` (or an in-band error) as JSON, the last ``[DONE]``."""
    payload = {"anyOf": [{"$ref": REF.format(model=component)}, {"$ref": REF.format(model="Error")}]}
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "event": {"type": "string"},
            "data": {
                "type": "string",
                "if": {"const": "[DONE]"},
                "else": {"contentMediaType": "application/json", "contentSchema": payload},
            },
        },
    }


def _operation(op: Operation) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if op.response is not None:
        content["application/json"] = _json(op.response)
    else:
        content["application/json"] = {"schema": {"type": "object"}}
    if op.stream is not None:
        content["text/event-stream"] = {"schema": _sse_event(op.stream)}
    ok = {
        "description": "OK"
        if op.stream is None
        else f"JSON, or with stream: true server-sent events, each a {op.stream} then data: [DONE]",
        "content": content,
    }
    responses: dict[str, Any] = {op.status: ok}
    for status in sorted(op.errors | {"405"}):
        headers = {}
        if status in ("429", "503"):
            headers["Retry-After"] = {"description": "Seconds to wait", "schema": {"type": "integer"}}
        responses[status] = {"description": _ERROR_TEXT[status], "content": {"application/json": _json("Error")}}
        if headers:
            responses[status]["headers"] = headers
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{op.method}_{op.path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
        "tags": [op.tag],
        "responses": responses,
    }
    params = [seg[1:-1] for seg in op.path.split("/") if seg.startswith("{")]
    if params:
        out["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}} for p in params
        ]
    if op.request is not None:
        out["requestBody"] = {"required": op.body_required, "content": {"application/json": _json(op.request)}}
    out["security"] = [{op.security: []}] if op.security else []
    return out


def document(title: str, version: str, served_name: str) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    requests = {op.request for op in OPERATIONS if op.request}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": f"OpenAI-compatible API for {served_name} and its LoRA adapters "
            f"(model: {served_name}:<adapter>).",
        },
        "paths": paths,
        "components": {
            "schemas": _components(requests),
            "securitySchemes": {
                "ApiKey": {"type": "http", "scheme": "bearer", "description": "An inference key"},
                "AdminKey": {"type": "http", "scheme": "bearer", "description": "The admin key (adapters)"},
            },
        },
    }


def route_table(routes: list[Any]) -> set[tuple[str, str]]:
    """(path, method) of a Starlette route list, paths as OpenAPI writes them (``{name}``)."""
    import re

    out = set()
    for route in routes:
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for method in getattr(route, "methods", None) or []:
            if method != "HEAD":
                out.add((path, method.lower()))
    return out
