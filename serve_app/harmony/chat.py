"""The Harmony seam: an OpenAI chat request in, prompt tokens and decoding rules out.

Everything gpt-oss-specific the router needs sits behind ``prepare`` (request
-> ``HarmonyPrompt``) and ``CompletionParser`` (token stream -> OpenAI deltas,
in ``serve_app.harmony.parse``). Generic code never asks "is this gpt-oss?".
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from serve_app.harmony import constraints
from serve_app.harmony.encoding import assistant_stop_token_ids
from serve_app.harmony.render import conversation, render_prompt
from serve_app.protocol.openai import ChatCompletionRequest, NamedToolChoice

DEFAULT_EFFORT = "medium"


@dataclass(frozen=True)
class HarmonyPrompt:
    prompt_token_ids: list[int]
    # <|return|> and <|call|>: the model's turn ends at either.
    stop_token_ids: list[int]
    # An xgrammar structural tag for vLLM's structured outputs, or None.
    structural_tag: str | None


def _offered_tools(request: ChatCompletionRequest) -> list[dict]:
    if request.tool_choice == "none" or not request.tools:
        return []
    return [t.function.model_dump(exclude_none=True, include={"name", "description", "parameters"}) for t in request.tools]


def _structural_tag(request: ChatCompletionRequest, tools: list[dict]) -> str | None:
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice):
        return constraints.forced_tool_call([t for t in tools if t["name"] == choice.name])
    if choice == "required":
        return constraints.forced_tool_call(tools)
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_schema":
        return constraints.final_json((fmt.json_schema or {}).get("schema"))
    if fmt is not None and fmt.type == "json_object":
        return constraints.final_json(None)
    return None


def prepare(
    request: ChatCompletionRequest, default_effort: str = DEFAULT_EFFORT, today: datetime.date | None = None
) -> HarmonyPrompt:
    """Render ``request`` for gpt-oss: effort and today's date in the system message."""
    tools = _offered_tools(request)
    messages = [m.model_dump(exclude_none=True) for m in request.messages]
    date = (today or datetime.datetime.now(datetime.timezone.utc).date()).isoformat()
    harmony_messages = conversation(messages, tools, effort=request.reasoning_effort or default_effort, date=date)
    return HarmonyPrompt(
        prompt_token_ids=render_prompt(harmony_messages),
        stop_token_ids=assistant_stop_token_ids(),
        structural_tag=_structural_tag(request, tools),
    )
