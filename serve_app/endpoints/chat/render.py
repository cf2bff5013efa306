"""A chat-completions request rendered for gpt-oss, through the Harmony seam."""

from __future__ import annotations

import datetime

from serve_app.endpoints.chat.models import ChatCompletionRequest, NamedToolChoice
from serve_app.harmony.chat import DEFAULT_EFFORT, HarmonyPrompt, OutputRules, prepare_conversation


def prepare(
    request: ChatCompletionRequest, default_effort: str = DEFAULT_EFFORT, today: datetime.date | None = None
) -> HarmonyPrompt:
    """Render a chat-completions request."""
    tools = [
        t.function.model_dump(exclude_none=True, include={"name", "description", "parameters"})
        for t in request.tools or []
    ]
    choice = request.tool_choice
    fmt = request.response_format
    rules = OutputRules(
        tool_choice=choice.name if isinstance(choice, NamedToolChoice) else (choice or "auto"),
        json={"json_schema": "schema", "json_object": "object"}.get(fmt.type) if fmt is not None else None,
        schema=((fmt.json_schema or {}).get("schema") if fmt is not None else None),
        format_name=((fmt.json_schema or {}).get("name") if fmt is not None else None),
        format_description=((fmt.json_schema or {}).get("description") if fmt is not None else None),
        format_param="response_format.json_schema.schema"
        if fmt is not None and fmt.type == "json_schema"
        else "response_format",
    )
    messages = [m.model_dump(exclude_none=True) for m in request.messages]
    return prepare_conversation(messages, tools, rules, request.reasoning_effort or default_effort, today)
