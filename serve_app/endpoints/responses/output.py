"""Response objects and their streamed events, built from a choice's deltas.

One ``ResponseWriter`` per response, streamed or not: deltas become output
items in the order the model wrote them (``reasoning`` with its
``reasoning_text``, ``message`` with ``output_text``, one ``function_call`` per
tool call), and, for a stream, the event sequence the official SDK parses:
``response.created``, ``response.in_progress``, per item ``output_item.added``
(+ ``content_part.added``), its deltas and ``.done`` events, ``output_item.done``,
then ``response.completed`` or ``response.incomplete`` (``response.failed`` on
an error), each with its ``sequence_number``. Plain dicts: encoded per event.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from serve_app.harmony.parse import Delta


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# The streamed reasoning events' names: OpenAI's, or Open Responses' (``responses.reasoning_events``).
REASONING_EVENTS = {
    "openai": ("response.reasoning_text.delta", "response.reasoning_text.done"),
    "open_responses": ("response.reasoning.delta", "response.reasoning.done"),
}


def error_code(status: int) -> str:
    """A response's ``error.code`` for an error of this HTTP status (OpenAI's ``ResponseErrorCode``
    enum: rate_limit_exceeded, invalid_prompt, server_error, ...); the message says the rest."""
    if status == 429:
        return "rate_limit_exceeded"
    return "invalid_prompt" if 400 <= status < 500 else "server_error"


class ResponseWriter:
    def __init__(self, envelope: dict[str, Any], reasoning_events: str = "openai"):
        # Every field of the response but status, output, usage and the outcome.
        self._envelope = envelope
        self._reasoning_delta, self._reasoning_done = REASONING_EVENTS[reasoning_events]
        self.output: list[dict[str, Any]] = []
        self._seq = 0
        # The item being written: its kind ("reasoning", "message", "call"), and for a call its index.
        self._open: tuple[str, int | None] | None = None
        # Tool-call index -> (its item, its index in output).
        self._calls: dict[int, tuple[dict[str, Any], int]] = {}
        self.status = "in_progress"
        self.usage: dict[str, Any] | None = None
        self.incomplete_details: dict[str, str] | None = None
        self.error: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return self._envelope["id"]

    def response(self) -> dict[str, Any]:
        out = {
            **self._envelope,
            "status": self.status,
            "output": self.output,
            "incomplete_details": self.incomplete_details,
            "error": self.error,
            # Null until the response is done (OpenAI: present, null, in created/in_progress).
            "completed_at": int(time.time()) if self.status in ("completed", "incomplete") else None,
            # Null until there is some, as OpenAI's API sends it and its SDKs type it.
            "usage": self.usage,
        }
        return out

    def _event(self, type: str, **fields: Any) -> dict[str, Any]:
        event = {"type": type, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    # -- the stream ------------------------------------------------------------

    def start(self) -> list[dict[str, Any]]:
        return [
            self._event("response.created", response=self.response()),
            self._event("response.in_progress", response=self.response()),
        ]

    def delta(self, delta: Delta) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if delta.reasoning:
            events += self._text("reasoning", delta.reasoning)
        if delta.content:
            events += self._text("message", delta.content)
        for piece in delta.tool_calls:
            if piece.id is not None:
                events += self._close()
                call: dict[str, Any] = {
                    "type": "function_call",
                    "id": new_id("fc"),
                    "call_id": piece.id,
                    "name": piece.name or "",
                    "arguments": "",
                    "status": "in_progress",
                }
                self._calls[piece.index] = (call, len(self.output))
                self.output.append(call)
                self._open = ("call", piece.index)
                events.append(
                    self._event("response.output_item.added", output_index=len(self.output) - 1, item=dict(call))
                )
            entry = self._calls.get(piece.index)
            if entry is None or not piece.arguments:
                continue
            item, output_index = entry
            item["arguments"] += piece.arguments
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=output_index,
                    delta=piece.arguments,
                )
            )
        return events

    def finish(
        self, finish_reason: str, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int
    ) -> list[dict[str, Any]]:
        incomplete = finish_reason == "length"
        events = self._close(incomplete)
        self.usage = {
            "input_tokens": prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": completion_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if incomplete:
            self.status = "incomplete"
            self.incomplete_details = {"reason": "max_output_tokens"}
            events.append(self._event("response.incomplete", response=self.response()))
        else:
            self.status = "completed"
            events.append(self._event("response.completed", response=self.response()))
        return events

    def cancelled(self) -> list[dict[str, Any]]:
        """A background run stopped on request: its open item closed, ``status: cancelled``.

        OpenAI's stream has no cancelled event: the terminal event is
        ``response.failed``, its response ``cancelled`` without an error.
        """
        events = self._close(incomplete=True)
        self.status = "cancelled"
        events.append(self._event("response.failed", response=self.response()))
        return events

    def failed_with(self, status: int, message: str) -> list[dict[str, Any]]:
        """``failed`` for an error of HTTP ``status``, its code one of those OpenAI's response errors take."""
        return self.failed(error_code(status), message)

    def failed(self, code: str, message: str) -> list[dict[str, Any]]:
        self.status = "failed"
        self.error = {"code": code, "message": message}
        return [self._event("response.failed", response=self.response())]

    # -- items -------------------------------------------------------------------

    def _text(self, kind: str, text: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self._open is None or self._open[0] != kind:
            events += self._close()
            events += self._open_text(kind)
        item = self.output[-1]
        part = item["content"][0]
        part["text"] += text
        name = self._reasoning_delta if kind == "reasoning" else "response.output_text.delta"
        extra: dict[str, Any] = {} if kind == "reasoning" else {"logprobs": []}
        events.append(
            self._event(
                name, item_id=item["id"], output_index=len(self.output) - 1, content_index=0, delta=text, **extra
            )
        )
        return events

    def _open_text(self, kind: str) -> list[dict[str, Any]]:
        if kind == "reasoning":
            item: dict[str, Any] = {
                "type": "reasoning",
                "id": new_id("rs"),
                "summary": [],
                "content": [],
                "status": "in_progress",
            }
            part: dict[str, Any] = {"type": "reasoning_text", "text": ""}
        else:
            item = {"type": "message", "id": new_id("msg"), "role": "assistant", "status": "in_progress", "content": []}
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        self.output.append(item)
        self._open = (kind, None)
        index = len(self.output) - 1
        events = [self._event("response.output_item.added", output_index=index, item=_copy(item))]
        item["content"].append(part)
        events.append(
            self._event(
                "response.content_part.added", item_id=item["id"], output_index=index, content_index=0, part=dict(part)
            )
        )
        return events

    def _close(self, incomplete: bool = False) -> list[dict[str, Any]]:
        """Finish the item being written: its ``.done`` events and ``output_item.done``."""
        if self._open is None:
            return []
        kind, _ = self._open
        self._open = None
        item = self.output[-1]
        index = len(self.output) - 1
        item["status"] = "incomplete" if incomplete else "completed"
        events = []
        if kind == "call":
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        else:
            part = item["content"][0]
            if kind == "reasoning":
                events.append(
                    self._event(
                        self._reasoning_done,
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        text=part["text"],
                    )
                )
            else:
                events.append(
                    self._event(
                        "response.output_text.done",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        text=part["text"],
                        logprobs=[],
                    )
                )
            events.append(
                self._event(
                    "response.content_part.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=dict(part),
                )
            )
        events.append(self._event("response.output_item.done", output_index=index, item=_copy(item)))
        return events


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    """A snapshot of an item as it is now (events must not change as the item grows)."""
    out = dict(item)
    if "content" in out:
        out["content"] = [dict(p) for p in out["content"]]
    return out
