"""Responses input -> the conversation the Harmony package renders.

Items map onto chat messages one by one: a ``message`` keeps its role and text,
a ``function_call`` is an assistant tool call (its ``call_id`` is the call's
id), a ``function_call_output`` the tool's answer to that id, and a
``reasoning`` item the assistant's analysis. ``instructions`` lead as a system
message, which the renderer puts in the developer message as gpt-oss expects.
Which reasoning survives is the renderer's rule, the same as for chat: only
that of the turn still open (its tool calls awaiting answers); the analysis
of a turn that ended in a final answer is dropped.
"""

from __future__ import annotations

from typing import Any

from serve_app.endpoints.responses.models import (
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    ReasoningItem,
    ResponsesRequest,
)
from serve_app.harmony.chat import OutputRules


def messages(instructions: str | None, items: list[Any]) -> list[dict]:
    out: list[dict] = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        if isinstance(item, MessageItem):
            out.append({"role": item.role, "content": item.text})
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            out.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text})
        elif isinstance(item, ReasoningItem):
            if item.text:
                out.append({"role": "assistant", "content": None, "reasoning": item.text})
    return out


def tools(request: ResponsesRequest) -> list[dict]:
    return [t.model_dump(exclude_none=True, include={"name", "description", "parameters"}) for t in request.tools]


def rules(request: ResponsesRequest) -> OutputRules:
    choice = request.tool_choice
    fmt = request.text.format if request.text is not None else None
    return OutputRules(
        tool_choice=choice if isinstance(choice, str) else choice.name,
        json={"json_schema": "schema", "json_object": "object"}.get(fmt.type) if fmt is not None else None,
        schema=fmt.schema_ if fmt is not None else None,
        format_name=fmt.name if fmt is not None else None,
        format_description=fmt.description if fmt is not None else None,
        format_param="text.format.schema" if fmt is not None and fmt.type == "json_schema" else "text.format",
    )


def effort(request: ResponsesRequest, default: str) -> str:
    e = request.reasoning.effort if request.reasoning is not None else None
    return {"minimal": "low"}.get(e, e) if e else default
