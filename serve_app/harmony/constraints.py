"""Constrained decoding for Harmony output, as xgrammar structural tags.

vLLM's structured outputs take a structural tag (JSON): a grammar over the
whole completion, written in terms of the Harmony header strings. We use it
for what the prompt alone cannot guarantee:

- ``tool_choice`` ``required`` or a named function: the completion may reason
  first (``analysis``, a ``commentary`` preamble) but must end in a call to one
  of the allowed functions, its arguments matching the function's JSON schema.
- ``response_format`` ``json_schema``/``json_object``: the reasoning stays
  free text; only the ``final`` message is constrained.

The engine's stop tokens (``<|return|>``, ``<|call|>``) end a tag as the empty
string: xgrammar does not let a stop token be sampled inside a constraint, so
the grammar accepts "end of text" there and the stop token is sampled after.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

_ANY_TEXT = {"type": "any_text"}
# The final message ends where the grammar does: the stop token (<|return|>)
# follows. Accepting "<|end|>" here let the model spell it in plain-text
# tokens, which then reached the client's content.
_END = [""]
# Most whitespace between JSON tokens: a small model left free pads forever.
_MAX_JSON_WHITESPACE = 1
# Both spellings of the content type the model may write after the recipient.
_CONSTRAINS = (" <|constrain|>json", " json")


def _json(schema: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": schema if schema else {"type": "object"},
        "max_whitespace_cnt": _MAX_JSON_WHITESPACE,
    }


def _optional_message(channel: str) -> dict[str, Any]:
    """An unconstrained ``channel`` message, then the next assistant header."""
    return {
        "type": "optional",
        "content": {
            "type": "sequence",
            "elements": [
                {"type": "tag", "begin": f"<|channel|>{channel}<|message|>", "content": _ANY_TEXT, "end": "<|end|>"},
                {"type": "const_string", "value": "<|start|>assistant"},
            ],
        },
    }


def _tag(content: dict[str, Any] | list[dict[str, Any]]) -> str:
    elements = content if isinstance(content, list) else [content]
    options = elements[0] if len(elements) == 1 else {"type": "or", "elements": elements}
    fmt = {
        "type": "sequence",
        "elements": [_optional_message("analysis"), _optional_message("commentary"), options],
    }
    return json.dumps({"type": "structural_tag", "format": fmt})


def forced_tool_call(tools: Sequence[dict[str, Any]]) -> str:
    """The completion must end in a call to one of ``tools`` (function specs)."""
    calls = [
        {
            "type": "tag",
            "begin": f"<|channel|>commentary to=functions.{tool['name']}{constrain}<|message|>",
            "content": _json(tool.get("parameters")),
            "end": [""],
        }
        for tool in tools
        for constrain in _CONSTRAINS
    ]
    return _tag(calls)


def final_json(schema: dict[str, Any] | None) -> str:
    """The ``final`` message must be JSON (matching ``schema`` if given)."""
    return _tag({"type": "tag", "begin": "<|channel|>final<|message|>", "content": _json(schema), "end": _END})
