"""Render an OpenAI-style chat conversation into Harmony prompt tokens.

The request's system and developer messages become the developer message's
instructions; function tools go into the developer message; the Harmony system
message carries the reasoning effort and the conversation date. A JSON-schema
output format goes last in the developer message, as a ``# Response Formats``
section (the Harmony guide's "Structured output": the schema tells the model
what to write; the grammar, ``serve_app.harmony.constraints``, enforces it).
Assistant tool
calls become ``commentary`` messages to ``functions.<name>`` with
``<|constrain|>json``; tool results are authored by ``functions.<name>``.

Reasoning sent back on assistant messages (``reasoning_content`` or
``reasoning``) is kept only for the turn still in progress, the one whose tool
calls await their answer; the analysis of a turn that ended in a final answer
is dropped, as the Harmony format asks. ``openai_harmony``'s own
``auto_drop_analysis`` only drops analysis before the first final message, so
this is done here. Message text is always encoded as plain text: a user who
types ``<|end|>`` gets the characters, never the control token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from openai_harmony import (
    Author,
    Conversation,
    DeveloperContent,
    Message,
    ReasoningEffort,
    RenderConversationConfig,
    Role,
    SystemContent,
    TextContent,
    ToolDescription,
)

from serve_app.harmony.encoding import harmony_encoding

EFFORTS = {"low": ReasoningEffort.LOW, "medium": ReasoningEffort.MEDIUM, "high": ReasoningEffort.HIGH}


@dataclass(frozen=True)
class ResponseFormat:
    """A named JSON schema the final answer must follow (``response_format``/``text.format``)."""

    name: str
    schema: dict[str, Any]
    description: str | None = None

    def section(self) -> str:
        """The developer message's ``# Response Formats`` section for this format."""
        # One line each: a name or description cannot open a section of its own.
        name = " ".join(self.name.split())
        comment = f"// {' '.join(self.description.split())}\n" if self.description else ""
        return f"# Response Formats\n\n## {name}\n\n{comment}{json.dumps(self.schema, separators=(',', ':'))}"


def _text(content: Any) -> str:
    """Content as a string, or a list of ``{"type": "text", "text": ...}`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def _header(
    messages: Sequence[dict],
    tools: Sequence[dict],
    effort: str,
    date: str | None,
    response_format: ResponseFormat | None,
) -> list[Message]:
    system = SystemContent.new().with_reasoning_effort(EFFORTS[effort])
    if date:
        system = system.with_conversation_start_date(date)
    out = [Message.from_role_and_content(Role.SYSTEM, system)]
    instructions = "\n\n".join(_text(m.get("content")) for m in messages if m["role"] in ("system", "developer"))
    if instructions or tools:
        developer = DeveloperContent.new()
        if instructions:
            developer = developer.with_instructions(instructions)
        if tools:
            developer = developer.with_function_tools(
                [
                    ToolDescription.new(t["name"], t.get("description") or "", parameters=t.get("parameters"))
                    for t in tools
                ]
            )
        message = Message.from_role_and_content(Role.DEVELOPER, developer)
        if response_format is not None:
            message = message.adding_content(TextContent(text="\n\n" + response_format.section()))
        out.append(message)
    elif response_format is not None:
        out.append(Message.from_role_and_content(Role.DEVELOPER, response_format.section()))
    return out


def tool_call_message(name: str, arguments: str) -> Message:
    return (
        Message.from_role_and_content(Role.ASSISTANT, arguments)
        .with_channel("commentary")
        .with_recipient(f"functions.{name}")
        .with_content_type("<|constrain|>json")
    )


def _open_turn_start(messages: Sequence[dict]) -> int:
    """Index after the last assistant final answer: reasoning from here on is kept."""
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if m["role"] == "assistant" and _text(m.get("content")):
            return i + 1
    return 0


def _history(messages: Sequence[dict]) -> list[Message]:
    out: list[Message] = []
    call_names: dict[str, str] = {}
    keep_reasoning_from = _open_turn_start(messages)
    for i, m in enumerate(messages):
        role = m["role"]
        if role == "user":
            out.append(Message.from_role_and_content(Role.USER, _text(m.get("content"))))
        elif role == "assistant":
            reasoning = m.get("reasoning_content") or m.get("reasoning")
            if reasoning and i >= keep_reasoning_from:
                out.append(Message.from_role_and_content(Role.ASSISTANT, reasoning).with_channel("analysis"))
            if text := _text(m.get("content")):
                out.append(Message.from_role_and_content(Role.ASSISTANT, text).with_channel("final"))
            for call in m.get("tool_calls") or []:
                fn = call["function"]
                call_names[call["id"]] = fn["name"]
                args = fn.get("arguments") or "{}"
                out.append(tool_call_message(fn["name"], args if isinstance(args, str) else json.dumps(args)))
        elif role == "tool":
            name = call_names.get(m.get("tool_call_id", ""), m.get("name") or "tool")
            out.append(
                Message.from_author_and_content(Author.new(Role.TOOL, f"functions.{name}"), _text(m.get("content")))
                .with_channel("commentary")
                .with_recipient("assistant")
            )
    return out


def conversation(
    messages: Sequence[dict],
    tools: Sequence[dict] = (),
    effort: str = "medium",
    date: str | None = None,
    response_format: ResponseFormat | None = None,
) -> list[Message]:
    """Harmony messages for an OpenAI-style conversation (``tools`` are function specs)."""
    return _header(messages, tools, effort, date, response_format) + _history(messages)


def render_prompt(harmony_messages: list[Message]) -> list[int]:
    """Prompt tokens, ending with ``<|start|>assistant`` for the model to continue."""
    return list(
        harmony_encoding().render_conversation_for_completion(
            Conversation.from_messages(harmony_messages), Role.ASSISTANT
        )
    )


def render_completion(harmony_messages: list[Message], reply: list[Message]) -> list[int]:
    """The tokens of ``reply`` as the model should generate them after the prompt.

    Rendered as training data: a final answer ends with ``<|return|>``, a tool
    call with ``<|call|>``, and the reply's analysis is kept.
    """
    prompt = render_prompt(harmony_messages)
    full = list(
        harmony_encoding().render_conversation_for_training(
            Conversation.from_messages(harmony_messages + reply),
            RenderConversationConfig(auto_drop_analysis=False),
        )
    )
    if full[: len(prompt)] != prompt:
        raise ValueError("Harmony rendering of the reply does not extend the prompt")
    return full[len(prompt) :]
