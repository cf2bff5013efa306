"""Constrained decoding for Harmony output, as xgrammar structural tags.

vLLM's structured outputs take a structural tag (JSON): a grammar over the
whole completion. We use it for what the prompt alone cannot guarantee:

- ``tool_choice`` ``required`` or a named function: the completion may reason
  first (``analysis``, a ``commentary`` preamble) but must end in a call to one
  of the allowed functions, its arguments matching the function's JSON schema.
- ``response_format`` ``json_schema``/``json_object``: the reasoning stays
  free text; only the ``final`` message is constrained.

Harmony's markup is written as its special tokens (xgrammar ``token``
elements), never as strings: a string ``"<|channel|>"`` is also matched by the
plain-text tokens that spell it, and a model that took that path (the dev model
did, on prompts it never saw) wrote a tool call the Harmony parser could only
see as text: header text in ``content`` and no ``tool_calls``. Free text inside
a message excludes every Harmony special token, so a message ends only where
the grammar says, and JSON strings exclude ``<|`` (a special token's bytes are
valid string content: the model wrote ``<|end|><|start|>...`` inside one).

The engine's stop tokens (``<|return|>``, ``<|call|>``) end a tag as the empty
string: xgrammar does not let a stop token be sampled inside a constraint, so
the grammar accepts "end of text" there and the stop token is sampled after.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from typing import Any

from serve_app.harmony.encoding import harmony_encoding

_MARKUP = ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>")
# Most whitespace between JSON tokens: a small model left free pads forever.
_MAX_JSON_WHITESPACE = 1


@cache
def _ids() -> dict[str, int]:
    enc = harmony_encoding()
    out = {}
    for name in _MARKUP:
        (out[name],) = enc.encode(name, allowed_special="all")
    return out


def _token(name: str) -> dict[str, Any]:
    return {"type": "token", "token": _ids()[name]}


def _const(text: str) -> dict[str, Any]:
    return {"type": "const_string", "value": text}


def _seq(*elements: dict[str, Any]) -> dict[str, Any]:
    return {"type": "sequence", "elements": list(elements)}


def _json(schema: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": schema if schema else {"type": "object"},
        "max_whitespace_cnt": _MAX_JSON_WHITESPACE,
        # Harmony's special tokens decode to "<|...|>", valid bytes in a JSON
        # string: without this the model wrote <|end|><|start|>... inside one.
        "excludes": ["<|"],
    }


def _content_type(required: bool) -> dict[str, Any]:
    """The JSON content type the model writes after the channel: " <|constrain|>json", "<|constrain|>json", " json"."""
    forms = {
        "type": "or",
        "elements": [
            _seq(_const(" "), _token("<|constrain|>"), _const("json")),
            _seq(_token("<|constrain|>"), _const("json")),
            _const(" json"),
        ],
    }
    return forms if required else {"type": "optional", "content": forms}


def _free_text() -> dict[str, Any]:
    """Message text: any tokens but Harmony's markup."""
    return {"type": "any_tokens", "exclude_tokens": sorted(_ids().values())}


def _optional_message(channel: str) -> dict[str, Any]:
    """An unconstrained ``channel`` message, then the next assistant header."""
    return {
        "type": "optional",
        "content": _seq(
            _token("<|channel|>"),
            _const(channel),
            {"type": "tag", "begin": _token("<|message|>"), "content": _free_text(), "end": _token("<|end|>")},
            _token("<|start|>"),
            _const("assistant"),
        ),
    }


def _tag(last: dict[str, Any] | list[dict[str, Any]]) -> str:
    """analysis?, commentary preamble?, then ``last`` (one of them, if a list)."""
    options = last if isinstance(last, list) else [last]
    final = options[0] if len(options) == 1 else {"type": "or", "elements": options}
    fmt = _seq(_optional_message("analysis"), _optional_message("commentary"), final)
    return json.dumps({"type": "structural_tag", "format": fmt})


def forced_tool_call(tools: Sequence[dict[str, Any]]) -> str:
    """The completion must end in a call to one of ``tools`` (function specs)."""
    calls = [
        _seq(
            _token("<|channel|>"),
            _const(f"commentary to=functions.{tool['name']}"),
            _content_type(required=True),
            _token("<|message|>"),
            _json(tool.get("parameters")),
        )
        for tool in tools
    ]
    return _tag(calls)


def final_json(schema: dict[str, Any] | None) -> str:
    """The ``final`` message must be JSON (matching ``schema`` if given)."""
    return _tag(
        _seq(
            _token("<|channel|>"), _const("final"), _content_type(required=False), _token("<|message|>"), _json(schema)
        )
    )
