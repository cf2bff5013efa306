"""Server-sent events as OpenAI streams them: ``data: <json>\\n\\n`` ... ``data: [DONE]\\n\\n``."""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


def encode(obj: Any) -> bytes:
    """One SSE event; compact JSON, non-ASCII text kept as UTF-8.

    orjson: once per streamed chunk, where the standard library's encoder was
    the router's largest cost of its own per token.
    """
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def event(name: str, obj: Any) -> bytes:
    """A named SSE event (``event: <name>``), as the Responses API streams them."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"
