"""``text_completion`` shapes, streamed and not, with the legacy logprobs object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serve_app.api.core import TokenLogprobs
from serve_app.endpoints.chat.output import usage
from serve_app.harmony.encoding import token_text


@dataclass
class TextChoice:
    text: str = ""
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    completion_tokens: int = 0
    logprobs: dict[str, list] | None = None


def legacy_logprobs(entries: list[TokenLogprobs] | None, ids: list[int] | None, offset: int) -> dict[str, list] | None:
    """``{tokens, token_logprobs, top_logprobs, text_offset}`` for these tokens; ``offset``: text before them."""
    if entries is None:
        return None
    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for tok, ((_, lp), *top) in zip(ids or [], entries, strict=False):
        text = token_text(tok)
        out["tokens"].append(text)
        out["token_logprobs"].append(max(lp, -9999.0))
        # The sampled token among the most likely, as vLLM's server gives them.
        out["top_logprobs"].append({text: max(lp, -9999.0)} | {token_text(t): max(l, -9999.0) for t, l in top})
        out["text_offset"].append(offset)
        offset += len(text)
    return out


def extend_logprobs(into: dict[str, list] | None, more: dict[str, list] | None) -> dict[str, list] | None:
    if into is None or more is None:
        return into or more
    for k, v in more.items():
        into[k].extend(v)
    return into


def completion_body(id: str, created: int, model: str, choices: list[TextChoice], prompt_tokens: int) -> dict[str, Any]:
    return {
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": i,
                "text": c.text,
                "logprobs": c.logprobs,
                "finish_reason": c.finish_reason,
                "stop_reason": c.stop_reason,
            }
            for i, c in enumerate(choices)
        ],
        "usage": usage(prompt_tokens, sum(c.completion_tokens for c in choices)),
    }


class TextChunkWriter:
    def __init__(self, id: str, created: int, model: str, include_usage: bool):
        self._head = {"id": id, "object": "text_completion", "created": created, "model": model}
        self._include_usage = include_usage

    def chunk(
        self,
        index: int,
        text: str,
        logprobs: dict[str, list] | None = None,
        finish_reason: str | None = None,
        stop_reason: int | str | None = None,
    ) -> dict[str, Any]:
        choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
        if finish_reason is not None:
            choice["stop_reason"] = stop_reason
        out = {**self._head, "choices": [choice]}
        if self._include_usage:
            out["usage"] = None
        return out

    def usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        return {**self._head, "choices": [], "usage": usage(prompt_tokens, completion_tokens)}
