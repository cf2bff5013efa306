"""Compaction (``POST /v1/responses/compact``): a conversation window made smaller, sealed in one item.

What it does for gpt-oss here, exactly: the window (the request's items after
``previous_response_id``'s history and item references) loses what gpt-oss's
Harmony format would not show the model anyway: the reasoning of every turn
that already ended in a final answer (a reasoning item followed, later in the
window, by an assistant message). Tool calls and their outputs, messages and the
current turn's reasoning stay. The user's messages are returned as they are, as
OpenAI's compaction does, followed by one ``compaction`` item whose
``encrypted_content`` holds the whole compacted window in order. Nothing is
summarized by the model: that is a choice of this server, since a summary
written by a 20B model loses facts the client cannot see were lost.

Sent back as input, a ``compaction`` item becomes its window again. If the
user messages just before it are the sealed ones (the client passed the output
back as it is), they are not repeated; otherwise the window's other items are
placed where the compaction item is and the client's messages stay as sent.

The content is sealed, not encrypted: zlib-compressed JSON in base64url behind
a version prefix. It is the tenant's own conversation, and a client can send
any of it as plain items anyway; a content that does not open is a 400 naming it.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any

from serve_app.protocol.errors import InvalidRequest

PREFIX = "saw1."
# A sealed window opens to at most this many bytes (a zip bomb is a 400, not memory).
MAX_OPENED_BYTES = 16 * 1024 * 1024


def is_user(item: dict[str, Any]) -> bool:
    return item.get("type", "message") == "message" and item.get("role") == "user"


def _is_answer(item: dict[str, Any]) -> bool:
    return item.get("type", "message") == "message" and item.get("role") == "assistant"


def _text_of(item: dict[str, Any]) -> str:
    content = item.get("content", "")
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def compacted(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The window without the reasoning of turns that already ended in a final answer."""
    last_answer = max((i for i, item in enumerate(items) if _is_answer(item)), default=-1)
    return [item for i, item in enumerate(items) if not (item.get("type") == "reasoning" and i < last_answer)]


def seal(items: list[dict[str, Any]]) -> str:
    raw = json.dumps(items, separators=(",", ":"), ensure_ascii=False).encode()
    return PREFIX + base64.urlsafe_b64encode(zlib.compress(raw, 6)).decode("ascii")


def unseal(content: str, param: str) -> list[dict[str, Any]]:
    """The window a ``compaction`` item holds; a 400 naming ``param`` if it is not one of ours."""
    bad = InvalidRequest(
        "This compaction item's encrypted_content was not made by this server's /v1/responses/compact.", param=param
    )
    if not content.startswith(PREFIX):
        raise bad
    try:
        packed = base64.urlsafe_b64decode(content[len(PREFIX) :].encode("ascii"))
        opener = zlib.decompressobj()
        raw = opener.decompress(packed, MAX_OPENED_BYTES)
        if opener.unconsumed_tail:
            raise InvalidRequest("This compaction item opens to more than 16 MiB.", param=param)
        items = json.loads(raw)
    except (ValueError, UnicodeError, binascii.Error, zlib.error):
        raise bad from None
    if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("type"), str) for i in items):
        raise bad
    return items


def expand(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The input items with every ``compaction`` item opened into its window (see the module's text)."""
    out: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if item.get("type") != "compaction":
            out.append(item)
            continue
        window = unseal(str(item.get("encrypted_content", "")), f"input.{index}.encrypted_content")
        sealed_users = [_text_of(i) for i in window if is_user(i)]
        # The user messages just before it, as the compact endpoint returned them.
        n = len(sealed_users)
        before = out[len(out) - n :] if n else []
        if n and len(before) == n and all(is_user(i) for i in before) and [_text_of(i) for i in before] == sealed_users:
            del out[len(out) - n :]
            out.extend(window)
        else:
            out.extend(i for i in window if not is_user(i))
    return out


def user_message(item: dict[str, Any], id: str) -> dict[str, Any]:
    """A user message of the window as an output item of the compaction."""
    return {
        "type": "message",
        "id": id,
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_text", "text": _text_of(item)}],
    }
