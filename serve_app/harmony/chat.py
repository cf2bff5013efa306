"""The Harmony seam: an OpenAI chat request in, prompt tokens and decoding rules out.

Everything gpt-oss-specific the endpoints need sits behind ``prepare_conversation``
(OpenAI-style messages, tools and output rules -> ``HarmonyPrompt``) and
``CompletionParser`` (token stream -> OpenAI deltas, in ``serve_app.harmony.parse``).
Each endpoint turns its own request model into those (``endpoints/chat/render.py``,
``endpoints/responses/render.py``). Generic code never asks "is this gpt-oss?".
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from serve_app.harmony import constraints
from serve_app.harmony.encoding import assistant_stop_token_ids
from serve_app.harmony.render import ResponseFormat, conversation, render_prompt

DEFAULT_EFFORT = "medium"


@dataclass(frozen=True)
class HarmonyPrompt:
    prompt_token_ids: list[int]
    # <|return|> and <|call|>: the model's turn ends at either.
    stop_token_ids: list[int]
    # An xgrammar structural tag for vLLM's structured outputs, or None.
    structural_tag: str | None
    # Whether the prompt offers functions (else a call the model writes is content).
    tools_offered: bool = True
    # The request field the structural tag comes from (named if the engine refuses it).
    constraint_param: str | None = None


@dataclass(frozen=True)
class OutputRules:
    """What the completion must be: ``tool_choice`` and a JSON format, endpoint-neutral.

    ``tool_choice``: "auto", "none", "required" or a function's name;
    ``json``: None (free text), "object" or "schema" (with ``schema``).
    """

    tool_choice: str = "auto"
    json: str | None = None
    schema: dict | None = None
    # The schema's name and description, for the prompt's ``# Response Formats`` section.
    format_name: str | None = None
    format_description: str | None = None
    # Where the endpoint's request holds the format's schema and the tools.
    format_param: str = "response_format"
    tools_param: str = "tools"


def _structural_tag(rules: OutputRules, tools: list[dict]) -> tuple[str | None, str | None]:
    """The tag and the request field it constrains by."""
    if rules.tool_choice not in ("auto", "none", "required"):
        named = [t for t in tools if t["name"] == rules.tool_choice]
        return constraints.forced_tool_call(named), rules.tools_param
    if rules.tool_choice == "required":
        return constraints.forced_tool_call(tools), rules.tools_param
    if rules.json == "schema":
        return constraints.final_json(rules.schema), rules.format_param
    if rules.json == "object":
        return constraints.final_json(None), rules.format_param
    return None, None


def _response_format(rules: OutputRules) -> ResponseFormat | None:
    if rules.json != "schema" or rules.schema is None:
        return None
    return ResponseFormat(rules.format_name or "response", rules.schema, rules.format_description)


def prepare_conversation(
    messages: list[dict],
    tools: list[dict],
    rules: OutputRules,
    effort: str = DEFAULT_EFFORT,
    today: datetime.date | None = None,
) -> HarmonyPrompt:
    """Render an OpenAI-style conversation for gpt-oss: effort and today's date in the system message.

    ``messages`` are chat-completions messages as dicts (roles system,
    developer, user, assistant with ``tool_calls`` and ``reasoning``, tool);
    ``tools`` are function specs (name, description, parameters). Every
    endpoint that speaks Harmony renders through here.
    """
    offered = [] if rules.tool_choice == "none" else tools
    date = (today or datetime.datetime.now(datetime.UTC).date()).isoformat()
    harmony_messages = conversation(
        messages, offered, effort=effort, date=date, response_format=_response_format(rules)
    )
    tag, param = _structural_tag(rules, offered)
    return HarmonyPrompt(
        prompt_token_ids=render_prompt(harmony_messages),
        stop_token_ids=assistant_stop_token_ids(),
        structural_tag=tag,
        tools_offered=bool(offered),
        constraint_param=param,
    )
