"""Bounds on a request's costly fields (``limits`` in the config), checked before anything is rendered.

Every endpoint describes its request in the same terms (``RequestShape``:
counts, stop strings, tools, JSON schemas, logit_bias, each with the request
field it came from) and ``check`` refuses the first bound it passes with a 400
that names the field and the bound (``limits.<name>``). What they guard: CPU
in the router (rendering thousands of messages, a schema's grammar built by
the engine's backend, whose cost grows with its depth: 2.6 s for 200 levels)
and memory per request, before a token is generated.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from serve_app.config import RequestLimits
from serve_app.protocol.errors import InvalidRequest


@dataclass(frozen=True)
class Schema:
    """A JSON schema of the request, and where it is (``response_format.json_schema.schema``)."""

    param: str
    schema: Any


@dataclass
class RequestShape:
    """What ``check`` measures, in the endpoint's own field names."""

    messages: int = 0
    messages_param: str = "messages"
    prompts: int = 1
    n: int = 1
    n_param: str = "n"
    stop: list[str] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    schemas: list[Schema] = field(default_factory=list)
    logit_bias: dict[int, float] | None = None


def _too_many(what: str, got: int, most: int, param: str, bound: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {got} {what}; at most {most} (limits.{bound})", param=param, code="limit_exceeded")


def schema_measure(schema: Any) -> tuple[int, int]:
    """Nesting depth (objects and arrays, as vLLM counts it) and object properties, without recursion."""
    depth, properties = 0, 0
    level: list[Any] = [schema]
    while level:
        depth += 1
        nxt: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                props = node.get("properties")
                if isinstance(props, dict):
                    properties += len(props)
                nxt.extend(v for v in node.values() if isinstance(v, (dict, list)))
            else:
                nxt.extend(v for v in node if isinstance(v, (dict, list)))
        level = nxt
    return depth, properties


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def check_schema(limits: RequestLimits, schema: Schema) -> None:
    size = _json_size(schema.schema)
    if size > limits.max_schema_bytes:
        raise _too_many("bytes of JSON schema", size, limits.max_schema_bytes, schema.param, "max_schema_bytes")
    depth, properties = schema_measure(schema.schema)
    if depth > limits.max_schema_depth:
        raise _too_many(
            "levels of nested objects and arrays", depth, limits.max_schema_depth, schema.param, "max_schema_depth"
        )
    if properties > limits.max_schema_properties:
        raise _too_many(
            "object properties", properties, limits.max_schema_properties, schema.param, "max_schema_properties"
        )


def _check_stop(limits: RequestLimits, stop: list[str]) -> None:
    if len(stop) > limits.max_stop:
        raise _too_many("stop sequences", len(stop), limits.max_stop, "stop", "max_stop")
    for s in stop:
        if len(s) > limits.max_stop_chars:
            raise _too_many("characters in a stop sequence", len(s), limits.max_stop_chars, "stop", "max_stop_chars")


def _check_tools(limits: RequestLimits, tools: list[dict[str, Any]]) -> None:
    if len(tools) > limits.max_tools:
        raise _too_many("tools", len(tools), limits.max_tools, "tools", "max_tools")
    size = _json_size(tools) if tools else 0
    if size > limits.max_tools_bytes:
        raise _too_many("bytes of tool definitions", size, limits.max_tools_bytes, "tools", "max_tools_bytes")


def _check_logit_bias(limits: RequestLimits, bias: dict[int, float]) -> None:
    if len(bias) > limits.max_logit_bias:
        raise _too_many("logit_bias entries", len(bias), limits.max_logit_bias, "logit_bias", "max_logit_bias")
    if any(token < 0 for token in bias):
        raise InvalidRequest("logit_bias: token ids are not negative", param="logit_bias")


def check(limits: RequestLimits, shape: RequestShape) -> None:
    """Refuse the first bound the request passes (a 400 naming the field and ``limits.<bound>``)."""
    if shape.messages > limits.max_messages:
        raise _too_many("messages", shape.messages, limits.max_messages, shape.messages_param, "max_messages")
    if shape.prompts > limits.max_prompts:
        raise _too_many("prompts", shape.prompts, limits.max_prompts, "prompt", "max_prompts")
    if shape.n > limits.max_n:
        raise _too_many("choices", shape.n, limits.max_n, shape.n_param, "max_n")
    _check_stop(limits, shape.stop)
    _check_tools(limits, shape.tools)
    for schema in shape.schemas:
        check_schema(limits, schema)
    if shape.logit_bias:
        _check_logit_bias(limits, shape.logit_bias)


def tool_schemas(tools: Iterable[tuple[str, dict[str, Any] | None]]) -> list[Schema]:
    """``(param, parameters)`` pairs as schemas (tools without parameters have none)."""
    return [Schema(param, params) for param, params in tools if params is not None]
