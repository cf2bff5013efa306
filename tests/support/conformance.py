"""Our bodies and stream events against OpenAI's published schemas (``tests/conformance/openai-spec.json``).

The spec is OpenAI's OpenAPI document (openai/openai-openapi, the commit in
the file), cut to the schemas we answer with by ``tests/conformance/extract.py``.
It is OpenAPI 3.1 (JSON Schema 2020-12), but parts of it still mark nullable
fields the 3.0 way (``nullable: true``), which 2020-12 ignores: ``_nullable``
rewrites those into what they mean before validating.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SPEC_FILE = Path(__file__).resolve().parents[1] / "conformance" / "openai-spec.json"
# Counted by kind, for the closing figures (bodies and events validated in a run).
VALIDATED: dict[str, int] = {}


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` as JSON Schema: null is also allowed (also by an ``enum``)."""
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable(v) for k, v in node.items()}
    if node.pop("nullable", False) is not True:
        return node
    if "$ref" in node:
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return {**rest, "anyOf": [{"$ref": node["$ref"]}, {"type": "null"}]}
    if isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    elif isinstance(node.get("type"), list) and "null" not in node["type"]:
        node["type"] = [*node["type"], "null"]
    if "enum" in node and None not in node["enum"]:
        node["enum"] = [*node["enum"], None]
    for union in ("anyOf", "oneOf"):
        if union in node:
            node[union] = [*node[union], {"type": "null"}]
    return node


def _usage_until_done(schemas: dict[str, Any]) -> None:
    """A response's ``usage`` may be null: OpenAI's API sends ``usage: null`` in the
    ``response.created``/``in_progress`` snapshots, its SDKs type it ``Optional``, and
    Open Responses requires the field (object or null); the spec has it optional, non-null."""
    for part in schemas["Response"]["allOf"]:
        props = part.get("properties", {})
        if "usage" in props:
            props["usage"] = {"anyOf": [props["usage"], {"type": "null"}]}


@functools.cache
def spec() -> dict[str, Any]:
    doc = json.loads(SPEC_FILE.read_text())
    doc["schemas"] = _nullable(doc["schemas"])
    _usage_until_done(doc["schemas"])
    return doc


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    root = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": spec()["schemas"]}}
    return Draft202012Validator(root)


def problems(name: str, body: Any) -> list[str]:
    """Every way ``body`` departs from the spec's schema ``name`` (empty: it conforms)."""
    out = []
    for err in sorted(_validator(name).iter_errors(body), key=lambda e: list(e.absolute_path)):
        path = "/".join(str(p) for p in err.absolute_path) or "(root)"
        out.append(f"{path}: {err.message[:300]}")
    return out


def conform(name: str, body: Any) -> None:
    """Fail with every departure of ``body`` from OpenAI's schema ``name``."""
    found = problems(name, body)
    VALIDATED[name] = VALIDATED.get(name, 0) + 1
    assert not found, f"{name} departs from OpenAI's spec:\n  " + "\n  ".join(found)


@functools.cache
def _event_schemas() -> dict[str, str]:
    """Responses stream event type -> the spec's schema for that event (``ResponseStreamEvent``'s members)."""
    schemas = spec()["schemas"]
    out = {}
    for member in schemas["ResponseStreamEvent"].get("anyOf", []):
        name = member["$ref"].rsplit("/", 1)[-1]
        kind = schemas[name].get("properties", {}).get("type", {})
        for value in kind.get("enum", []) + ([kind["const"]] if "const" in kind else []):
            out[value] = name
    return out


def conform_event(event: dict[str, Any]) -> None:
    """A Responses stream event against the spec's schema for its ``type`` (an unknown type fails)."""
    name = _event_schemas().get(event.get("type", ""))
    assert name is not None, f"event type {event.get('type')!r} is not in OpenAI's spec"
    conform(name, event)


def sse_payloads(text: str) -> list[Any]:
    """The JSON ``data`` of every event of a server-sent stream, without the final ``[DONE]``."""
    out = []
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[len("data: ") :]))
    return out


# Our routes (under any app prefix) -> the spec's schema of a JSON body and of one streamed event.
_ROUTES: list[tuple[re.Pattern[str], str, str | None]] = [
    (re.compile(r"/v1/chat/completions$"), "CreateChatCompletionResponse", "CreateChatCompletionStreamResponse"),
    (re.compile(r"/v1/completions$"), "CreateCompletionResponse", "CreateCompletionResponse"),
    (re.compile(r"/v1/responses$"), "Response", "event"),
    (re.compile(r"/v1/responses/input_tokens$"), "TokenCountsResource", None),
    (re.compile(r"/v1/responses/[^/]+/input_items$"), "ResponseItemList", None),
    (re.compile(r"/v1/responses/[^/]+$"), "Response", None),
    (re.compile(r"/v1/conversations/[^/]+/items$"), "ConversationItemList", None),
    (re.compile(r"/v1/conversations/[^/]+/items/[^/]+$"), "ConversationItem", None),
    (re.compile(r"/v1/conversations(/[^/]+)?$"), "ConversationResource", None),
    (re.compile(r"/v1/models$"), "ListModelsResponse", None),
    (re.compile(r"/v1/models/.+$"), "Model", None),
]


def _route(path: str) -> tuple[str, str | None] | None:
    for pattern, body, event in _ROUTES:
        if pattern.search(path):
            return body, event
    return None


def check_answer(method: str, path: str, status: int, content_type: str, content: bytes) -> None:
    """One answer of ours (any route of ``_ROUTES``, an error anywhere under /v1/) against the spec."""
    route = _route(path)
    if status >= 400:
        if "json" in content_type:
            conform("ErrorResponse", json.loads(content))
        return
    if route is None or status != 200 or method == "DELETE":
        return
    body, event = route
    if "text/event-stream" in content_type:
        for payload in sse_payloads(content.decode()):
            if "error" in payload and len(payload) == 1:
                conform("ErrorResponse", payload)  # an in-band error, then [DONE]
            elif event == "event":
                conform_event(payload)
            elif event == "CreateCompletionResponse":
                # The spec reuses the whole-response schema for completions chunks, whose
                # finish_reason is null until the last one (as OpenAI's own API sends them).
                choices = [{**c, "finish_reason": c.get("finish_reason") or "stop"} for c in payload["choices"]]
                conform(event, {**payload, "choices": choices})
            elif event is not None:
                conform(event, payload)
    elif "json" in content_type:
        conform(body, json.loads(content))


def _watch(request: Any, response: Any, streamed_cls: type) -> Any:
    """Validate ``response`` when its body is complete: now if read, else when its stream ends."""
    path, method = request.url.path, request.method
    if "/v1/" not in path:
        return response
    content_type = response.headers.get("content-type", "")

    def done(content: bytes) -> None:
        check_answer(method, path, response.status_code, content_type, content)

    if response.is_stream_consumed or getattr(response, "_content", None) is not None:
        done(response.content)
    else:
        response.stream = streamed_cls(response.stream, done)
    return response


def _tees() -> tuple[type, type]:
    """Byte streams that keep what passes through them and hand it over at the end.

    They subclass httpx's own stream types: httpx refuses to iterate a stream
    of the other kind (sync/async), and checks by type.
    """
    import httpx

    class Tee(httpx.SyncByteStream):
        def __init__(self, inner: Any, done: Any):
            self._inner, self._done, self._buf = inner, done, bytearray()

        def __iter__(self):
            for chunk in self._inner:
                self._buf += chunk
                yield chunk
            self._done(bytes(self._buf))

        def close(self) -> None:
            self._inner.close()

    class AsyncTee(httpx.AsyncByteStream):
        def __init__(self, inner: Any, done: Any):
            self._inner, self._done, self._buf = inner, done, bytearray()

        async def __aiter__(self):
            async for chunk in self._inner:
                self._buf += chunk
                yield chunk
            self._done(bytes(self._buf))

        async def aclose(self) -> None:
            await self._inner.aclose()

    return Tee, AsyncTee


def watch_httpx(patch: Any) -> None:
    """Every httpx answer (the openai SDK's too) from one of our routes is validated against the spec."""
    import httpx

    send, asend = httpx.Client.send, httpx.AsyncClient.send
    tee, async_tee = _tees()

    def checked_send(self, request, *args, **kwargs):
        return _watch(request, send(self, request, *args, **kwargs), tee)

    async def checked_asend(self, request, *args, **kwargs):
        return _watch(request, await asend(self, request, *args, **kwargs), async_tee)

    patch.setattr(httpx.Client, "send", checked_send)
    patch.setattr(httpx.AsyncClient, "send", checked_asend)
