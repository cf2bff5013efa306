"""Harmony the strict parser gave up on: messages recovered from the text.

A model can write Harmony's markup partly as plain-text tokens (``<``, ``|``,
``message``, ``|``, ``>``) instead of its special tokens, or stray from the
format altogether. ``openai_harmony`` then raises (or never leaves a header),
and ``CompletionParser`` hands the rest of the completion here as text, with
the special tokens it did get written out the same way. This module splits
that text at every marker, real or spelled, and routes each message body as
the strict parser would have: ``analysis`` to reasoning, a ``functions.*``
recipient to a tool call, anything else to content. Header text (roles,
channels, recipients, content types) never reaches the client: a header the
text never finishes is held back while streaming and dropped at the end,
unless it holds no markup at all (a model that never spoke Harmony: its text
is the answer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAMES = ("start", "end", "message", "channel", "constrain", "return", "call")
_MARK = re.compile(r"<\|(" + "|".join(_NAMES) + r")\|>")
_MARKERS = tuple(f"<|{name}|>" for name in _NAMES)
_RECIPIENT = re.compile(r"to=([^\s<]+)")
_CHANNEL = re.compile(r"<\|channel\|>\s*([A-Za-z_]+)")
FUNCTIONS = "functions."


@dataclass
class TextMessage:
    route: str  # "reasoning", "content" or "tool"
    name: str | None  # the function, for a tool call
    text: str = ""


def _routed(header: str) -> TextMessage:
    recipient = _RECIPIENT.search(header)
    if recipient and recipient.group(1).startswith(FUNCTIONS):
        return TextMessage("tool", recipient.group(1)[len(FUNCTIONS) :])
    channel = _CHANNEL.search(header)
    if channel and channel.group(1) == "analysis":
        return TextMessage("reasoning", None)
    return TextMessage("content", None)


def split(text: str, in_header: bool, final: bool) -> list[TextMessage]:
    """The messages of ``text`` so far, in order (streaming: only what can no longer change).

    ``in_header``: the text starts inside a message header (the strict parser
    was reading one when it gave up).
    """
    if not final:
        text = text.rstrip("\ufffd")  # a UTF-8 sequence cut between tokens
        cut = text.rfind("<")
        if cut != -1 and any(m.startswith(text[cut:]) for m in _MARKERS):
            text = text[:cut]  # maybe a marker still being spelled
    messages: list[TextMessage] = []
    header: list[str] | None = [] if in_header else None  # None: inside a message body
    current: TextMessage | None = None
    pos = 0
    for m in [*_MARK.finditer(text), None]:
        piece = text[pos : m.start() if m else len(text)]
        if header is not None:
            header.append(piece)
        elif piece:
            if current is None:
                current = TextMessage("content", None)
                messages.append(current)
            current.text += piece
        if m is None:
            break
        pos = m.end()
        kind = m.group(1)
        if kind == "start":
            header, current = [], None
        elif kind in ("channel", "constrain"):
            if header is None:  # a header begun without <|start|>
                header, current = [], None
            header.append(m.group(0))
        elif kind == "message":
            current = _routed("".join(header or []))
            messages.append(current)
            header = None
        else:  # end, call, return: the message is over
            header, current = None, None
    if header is not None and final:
        unfinished = "".join(header)
        if "<|" not in unfinished and "to=" not in unfinished and unfinished.strip():
            messages.append(TextMessage("content", None, unfinished))
    return messages
