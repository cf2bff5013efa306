"""OpenAI response shapes for chat completions, streamed and not.

Follows the model card's response: ``message`` with ``reasoning_content``,
``content`` and ``tool_calls`` (a list, empty when none), ``finish_reason`` and
vLLM's ``stop_reason`` per choice, ``usage`` with ``prompt_tokens_details``.
Reasoning is also sent as ``reasoning``, the newer name some clients read.
Built as plain dicts: they are encoded once per chunk on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from serve_app.api.core import TokenLogprobs
from serve_app.harmony.encoding import token_text
from serve_app.harmony.parse import Delta


def _logprob(token_id: int, logprob: float) -> dict[str, Any]:
    text = token_text(token_id)
    return {"token": text, "logprob": max(logprob, -9999.0), "bytes": list(text.encode())}


def content_logprobs(entries: list[TokenLogprobs] | None) -> list[dict[str, Any]] | None:
    """OpenAI ``logprobs.content`` entries from the engine's (id, logprob) lists."""
    if entries is None:
        return None
    out = []
    for (tok, lp), *top in entries:
        out.append(_logprob(tok, lp) | {"top_logprobs": [_logprob(t, l) for t, l in top]})
    return out


@dataclass
class ChoiceState:
    """What one choice has produced so far (non-streaming responses)."""

    reasoning: str = ""
    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    completion_tokens: int = 0
    logprobs: list[dict[str, Any]] | None = None

    def add(self, delta: Delta, logprobs: list[dict[str, Any]] | None = None) -> None:
        if logprobs is not None:
            self.logprobs = (self.logprobs or []) + logprobs
        self.reasoning += delta.reasoning
        self.content += delta.content
        for piece in delta.tool_calls:
            if piece.index == len(self.tool_calls):
                self.tool_calls.append(
                    {"id": piece.id, "type": "function", "function": {"name": piece.name, "arguments": ""}}
                )
            self.tool_calls[piece.index]["function"]["arguments"] += piece.arguments


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    # No prompt_tokens_details: OpenAI's spec makes it an object when present,
    # and the engine's cached-token count does not reach the router.
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }


def logprobs_object(content: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """A choice's ``logprobs``: its content tokens, and ``refusal`` (the spec requires it; always null here)."""
    return None if content is None else {"content": content, "refusal": None}


def completion(id: str, created: int, model: str, choices: list[ChoiceState], prompt_tokens: int) -> dict[str, Any]:
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "reasoning_content": c.reasoning or None,
                    "reasoning": c.reasoning or None,
                    "content": c.content if (c.content or not c.tool_calls) else None,
                    "refusal": None,
                    "tool_calls": c.tool_calls,
                },
                "logprobs": logprobs_object(c.logprobs),
                "finish_reason": c.finish_reason,
                "stop_reason": c.stop_reason,
            }
            for i, c in enumerate(choices)
        ],
        "usage": usage(prompt_tokens, sum(c.completion_tokens for c in choices)),
        "prompt_logprobs": None,
    }


def delta_dict(delta: Delta) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if delta.reasoning:
        out["reasoning_content"] = delta.reasoning
        out["reasoning"] = delta.reasoning
    if delta.content:
        out["content"] = delta.content
    if delta.tool_calls:
        calls = []
        for piece in delta.tool_calls:
            call: dict[str, Any] = {"index": piece.index}
            if piece.id is not None:
                call.update(id=piece.id, type="function", function={"name": piece.name, "arguments": piece.arguments})
            else:
                call["function"] = {"arguments": piece.arguments}
            calls.append(call)
        out["tool_calls"] = calls
    return out


class ChunkWriter:
    """Builds the ``chat.completion.chunk`` objects of one streamed completion."""

    def __init__(self, id: str, created: int, model: str, include_usage: bool):
        self._head = {"id": id, "object": "chat.completion.chunk", "created": created, "model": model}
        self._include_usage = include_usage

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        out = {**self._head, "choices": choices}
        if self._include_usage:
            out["usage"] = None
        return out

    def role(self, index: int) -> dict[str, Any]:
        return self._chunk(
            [{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]
        )

    def delta(self, index: int, delta: Delta, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        lp = logprobs_object(logprobs)
        return self._chunk([{"index": index, "delta": delta_dict(delta), "logprobs": lp, "finish_reason": None}])

    def finish(self, index: int, reason: str, stop_reason: int | str | None) -> dict[str, Any]:
        return self._chunk(
            [{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason, "stop_reason": stop_reason}]
        )

    def usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        return {**self._head, "choices": [], "usage": usage(prompt_tokens, completion_tokens)}
