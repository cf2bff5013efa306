from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from serve_app.endpoints.chat.models import ChatCompletionRequest

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a location",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}
# The model card's two example requests, verbatim in substance.
CARD_CHAT = {
    "stream": True,
    "model": "gpt-oss-20b",
    "max_tokens": 1024,
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Name the european capitals"},
    ],
}
CARD_TOOLS = CARD_CHAT | {
    "messages": [
        {"role": "system", "content": "You are a helpful assistant with access to tools."},
        {"role": "user", "content": "What is the weather in London?"},
    ],
    "tools": [WEATHER_TOOL],
}


@pytest.mark.parametrize("body", [CARD_CHAT, CARD_TOOLS], ids=["card-chat", "card-tools"])
def test_card_examples_parse(body):
    req = ChatCompletionRequest.model_validate(body)
    assert req.stream and req.completion_limit == 1024


def test_full_conversation_with_tool_history_and_unknown_fields():
    body = copy.deepcopy(CARD_TOOLS) | {"some_future_field": {"x": 1}, "tool_choice": "required"}
    body["messages"] += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "18C"}]},
        {"role": "developer", "content": "Be brief."},
    ]
    req = ChatCompletionRequest.model_validate(body)
    assert [m.role for m in req.messages] == ["system", "user", "assistant", "tool", "developer"]


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"messages": []}, "messages"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"n": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": -1}, "max_completion_tokens"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"frequency_penalty": -2.5}, "frequency_penalty"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
        ({"messages": [{"role": "assistant"}]}, "content or tool_calls"),
        ({"tool_choice": "required"}, "needs tools"),
        ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "nope"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"top_logprobs": 3}, "logprobs"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_invalid_requests_name_the_problem(patch, field):
    with pytest.raises(ValidationError) as err:
        ChatCompletionRequest.model_validate(copy.deepcopy(CARD_CHAT) | patch)
    assert field in str(err.value)
