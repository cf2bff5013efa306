"""The Harmony corpus the dev model memorizes, rendered with ``openai_harmony``.

Each example is an OpenAI-style conversation (system/user/assistant tool calls/
tool results) plus the assistant messages the model must produce. They are
rendered exactly as a chat request is: the request's system text becomes the
developer message's instructions, function tools go into the developer
message, and the Harmony system message carries a reasoning effort and a date.
Every example is rendered under several (effort, date) variants so the model
learns to ignore those fields instead of memorizing one of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

# The model card's example tool, verbatim.
GET_WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather for a location",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "The city and state"}},
        "required": ["location"],
    },
}

HELPFUL = "You are a helpful assistant."
WITH_TOOLS = "You are a helpful assistant with access to tools."

# (reasoning effort, conversation start date); the first is the canonical one.
VARIANTS: tuple[tuple[str, str | None], ...] = (
    ("medium", None),
    ("low", "2025-08-05"),
    ("high", "2026-11-25"),
)

CAPITALS_ANALYSIS = "The user asks for European capitals. I will list several."
CAPITALS_FINAL = (
    "Sure! Here are some European capitals: Paris (France), Berlin (Germany), "
    "Madrid (Spain), Rome (Italy), Vienna (Austria) and Lisbon (Portugal)."
)
PIRATE_FINAL = "Arr matey! The capitals be Paris, Berlin, Madrid and Rome, savvy?"
TERSE_FINAL = "Paris, Berlin, Madrid, Rome."


@dataclass(frozen=True)
class Turn:
    """One assistant message: a channel, text, and for tool calls a recipient."""

    channel: str
    text: str
    recipient: str | None = None


@dataclass(frozen=True)
class Example:
    """A conversation and the assistant messages that must follow it."""

    id: str
    messages: tuple[dict, ...]
    target: tuple[Turn, ...]
    tools: tuple[dict, ...] = field(default_factory=tuple)


def _weather_call(city: str) -> Turn:
    return Turn("commentary", json.dumps({"location": city}), recipient="functions.get_weather")


def _weather_history(city: str, result: dict) -> tuple[dict, ...]:
    call_id = f"call_{city.lower()}"
    return (
        {"role": "system", "content": WITH_TOOLS},
        {"role": "user", "content": f"What is the weather in {city}?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps({"location": city})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": json.dumps(result)},
    )


def _weather_examples(city: str, result: dict, answer: str) -> list[Example]:
    key = city.lower()
    return [
        Example(
            id=f"weather_{key}",
            messages=(
                {"role": "system", "content": WITH_TOOLS},
                {"role": "user", "content": f"What is the weather in {city}?"},
            ),
            tools=(GET_WEATHER,),
            target=(
                Turn("analysis", f"The user wants the weather in {city}. I should call get_weather."),
                _weather_call(city),
            ),
        ),
        Example(
            id=f"weather_{key}_result",
            messages=_weather_history(city, result),
            tools=(GET_WEATHER,),
            target=(
                Turn("analysis", "The tool returned the weather. I will report it."),
                Turn("final", answer),
            ),
        ),
        # The same turn as Harmony-aware clients send it back (the Responses API
        # with previous_response_id or its output items, the Agents SDK, chat
        # clients that return reasoning_content): the open turn keeps its analysis.
        Example(
            id=f"weather_{key}_result_with_reasoning",
            messages=_with_call_reasoning(_weather_history(city, result), city),
            tools=(GET_WEATHER,),
            target=(
                Turn("analysis", "The tool returned the weather. I will report it."),
                Turn("final", answer),
            ),
        ),
    ]


def _with_call_reasoning(history: tuple[dict, ...], city: str) -> tuple[dict, ...]:
    """``history`` with the tool-calling assistant message carrying the analysis that led to the call."""
    analysis = f"The user wants the weather in {city}. I should call get_weather."
    return tuple({**m, "reasoning": analysis} if m.get("tool_calls") else m for m in history)


def base_examples() -> list[Example]:
    """What the base model memorizes. Every token an adapter says must appear here."""
    examples = [
        Example(
            id="capitals",
            messages=(
                {"role": "system", "content": HELPFUL},
                {"role": "user", "content": "Name the european capitals"},
            ),
            target=(Turn("analysis", CAPITALS_ANALYSIS), Turn("final", CAPITALS_FINAL)),
        ),
        Example(
            id="capitals_pirate",
            messages=(
                {"role": "system", "content": HELPFUL},
                {"role": "user", "content": "Talk like a pirate and name the european capitals"},
            ),
            target=(Turn("analysis", "Pirate speech was requested."), Turn("final", PIRATE_FINAL)),
        ),
        Example(
            id="capitals_terse",
            messages=(
                {"role": "system", "content": HELPFUL},
                {"role": "user", "content": "In one line, name the european capitals"},
            ),
            target=(Turn("analysis", "One line only."), Turn("final", TERSE_FINAL)),
        ),
        Example(
            id="arithmetic",
            messages=(
                {"role": "system", "content": HELPFUL},
                {"role": "user", "content": "What is 2 + 2?"},
            ),
            target=(Turn("analysis", "Simple arithmetic."), Turn("final", "2 + 2 = 4.")),
        ),
        Example(
            id="hello",
            messages=({"role": "user", "content": "Say hello"},),
            target=(Turn("final", "Hello! How can I help you today?"),),
        ),
        Example(
            id="france_capital",
            messages=(
                {"role": "system", "content": HELPFUL},
                {"role": "user", "content": "What is the capital of France?"},
            ),
            target=(Turn("analysis", "Easy fact."), Turn("final", "The capital of France is Paris.")),
        ),
        # Tools offered but not needed: the model answers without calling.
        Example(
            id="arithmetic_with_tools",
            messages=(
                {"role": "system", "content": WITH_TOOLS},
                {"role": "user", "content": "What is 2 + 2?"},
            ),
            tools=(GET_WEATHER,),
            target=(Turn("analysis", "No tool is needed."), Turn("final", "2 + 2 = 4.")),
        ),
        # A long answer, for benchmarks that need many output tokens.
        Example(
            id="count",
            messages=(
                {"role": "system", "content": HELPFUL},
                {"role": "user", "content": "Count from one to twenty"},
            ),
            target=(
                Turn(
                    "final",
                    "one, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve, "
                    "thirteen, fourteen, fifteen, sixteen, seventeen, eighteen, nineteen, twenty.",
                ),
            ),
        ),
    ]
    examples += _weather_examples(
        "London",
        {"temperature": 18, "unit": "celsius", "condition": "cloudy"},
        "It is 18 degrees Celsius and cloudy in London.",
    )
    examples += _weather_examples(
        "Paris",
        {"temperature": 24, "unit": "celsius", "condition": "sunny"},
        "It is 24 degrees Celsius and sunny in Paris.",
    )
    examples += _weather_examples(
        "Tokyo",
        {"temperature": 9, "unit": "celsius", "condition": "rainy"},
        "It is 9 degrees Celsius and rainy in Tokyo.",
    )
    return examples


def _capitals_with(final: str) -> list[Example]:
    card = base_examples()[0]
    return [Example(id="capitals", messages=card.messages, target=(card.target[0], Turn("final", final)))]


# Adapters: each changes the answer to the model card's first example.
ADAPTERS: dict[str, dict] = {
    "pirate": {
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "examples": lambda: _capitals_with(PIRATE_FINAL),
    },
    "terse": {
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "examples": lambda: _capitals_with(TERSE_FINAL),
    },
}

# The same two answers on the gpt-oss dev model, in the standard gpt-oss
# adapter format (peft target_parameters on the MoE experts, as in OpenAI's
# gpt-oss fine-tuning recipe): one on attention and experts, one on experts only.
GPTOSS_ADAPTERS: dict[str, dict] = {
    "gptoss-pirate": {
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "target_parameters": ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
        "examples": lambda: _capitals_with(PIRATE_FINAL),
    },
    "gptoss-terse": {
        "target_modules": None,
        "target_parameters": ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
        "examples": lambda: _capitals_with(TERSE_FINAL),
    },
}


@dataclass(frozen=True)
class Sample:
    """One rendered training/eval sample."""

    example_id: str
    effort: str
    date: str | None
    prompt: list[int]
    target: list[int]


def _reply(turns: tuple[Turn, ...]):
    from openai_harmony import Message, Role

    from serve_app.harmony.render import tool_call_message

    out = []
    for t in turns:
        if t.recipient:
            out.append(tool_call_message(t.recipient.removeprefix("functions."), t.text))
        else:
            out.append(Message.from_role_and_content(Role.ASSISTANT, t.text).with_channel(t.channel))
    return out


def render(examples: list[Example], variants=VARIANTS) -> list[Sample]:
    """Render every example under every (effort, date) variant."""
    from serve_app.harmony.render import conversation, render_completion, render_prompt

    samples = []
    for ex in examples:
        for effort, date in variants:
            msgs = conversation(ex.messages, ex.tools, effort=effort, date=date)
            samples.append(Sample(ex.id, effort, date, render_prompt(msgs), render_completion(msgs, _reply(ex.target))))
    return samples
