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
from typing import Any

from serve_app.harmony.render import ResponseFormat

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
    response_format: ResponseFormat | None = None
    # (effort, date) variants to render it under; None: ``render``'s.
    variants: tuple[tuple[str, str | None], ...] | None = None
    # None: the model learns every id of the example. Else only the ids of
    # these texts: its other words (a schema's keys, names, descriptions) stay unseen, as a
    # stranger's schema is (``serve_app.devmodel.train``), unless another
    # example teaches them.
    teaches: tuple[str, ...] | None = None


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


# Structured output on schemas of every shape (strings, numbers, booleans,
# lists), as the openai SDK's ``parse``, instructor and pydantic-ai send them:
# a ``response_format`` schema (the final message is the JSON) or a tool to
# call with it. Each value is one word or a small number, so that the model
# closes a value right after it; and the keys, names and descriptions stay
# unseen (``Example.teaches``), so that it learns to do so where the schema is
# a stranger's, as on a real one (the prompt's words are taught: they are
# what tells one example from another).
# The tests' "unseen" schemas share no key with these.
STRUCTURED: tuple[tuple[str, str, dict], ...] = (
    ("Recipe", "The soup takes twenty minutes.", {"dish": "soup", "minutes": 20}),
    ("Order", "Two lamps please, not a gift.", {"item": "lamp", "quantity": 2, "gift": False}),
    ("Event", "The concert is on Friday in Berlin.", {"event": "concert", "day": "Friday", "city": "Berlin"}),
    ("Review", "Great film, nine out of ten.", {"sentiment": "positive", "score": 9}),
    ("Task", "The urgent work report is done.", {"task": "report", "done": True, "labels": ["work", "urgent"]}),
    ("Trip", "Three nights from Oslo to Rome.", {"origin": "Oslo", "destination": "Rome", "nights": 3}),
    (
        "Product",
        "The phone costs 499, black or white.",
        {"product": "phone", "price": 499, "colors": ["black", "white"]},
    ),
    ("Greeting", "How do you say hello in Spanish?", {"language": "Spanish", "greeting": "Hola"}),
    ("Pet", "My cat Tom is four.", {"species": "cat", "pet_name": "Tom", "years": 4}),
    ("Song", "Play Yesterday by the Beatles.", {"song": "Yesterday", "artist": "Beatles"}),
    ("Meeting", "Meet Sam at noon about the budget.", {"person": "Sam", "time": "noon", "topic": "budget"}),
    ("Contact", "Ada works at Acme as an engineer.", {"first_name": "Ada", "company": "Acme", "role": "engineer"}),
    ("Game", "We won three to one at home.", {"result": "win", "goals": 3, "home": True}),
    ("Colors", "The sky is blue and the grass green.", {"sky": "blue", "grass": "green"}),
    ("Shopping", "Buy milk, eggs and bread at the market.", {"items": ["milk", "eggs", "bread"], "store": "market"}),
    ("Flight", "Lufthansa flight 400 leaves at nine.", {"airline": "Lufthansa", "number": 400, "hour": 9}),
)
# The canonical (effort, date) only: the other examples teach the model to
# ignore both, and each variant here would cost as much training again.
STRUCTURED_VARIANTS = VARIANTS[:1]
FORMAT_ANALYSIS = "Fill in the format."
TOOL_ANALYSIS = "Call the tool."
_JSON_TYPES = {str: "string", int: "integer", bool: "boolean", list: "array"}


def schema_of(name: str, values: dict) -> dict:
    """The JSON schema pydantic writes for a model with ``values``' fields (strict: all required, no extras)."""

    def field_schema(key: str, value) -> dict:
        out: dict[str, Any] = {"title": key.replace("_", " ").title(), "type": _JSON_TYPES[type(value)]}
        if isinstance(value, list):
            out["items"] = {"type": "string"}
        return out

    return {
        "properties": {k: field_schema(k, v) for k, v in values.items()},
        "required": list(values),
        "title": name,
        "type": "object",
        "additionalProperties": False,
    }


def _values_only(values: dict) -> str:
    """``values`` as the answer's JSON writes them, under a key the corpus teaches anyway."""
    return "{" + ", ".join(f'"location": {json.dumps(v)}' for v in values.values()) + "}"


def structured_examples() -> list[Example]:
    out = []
    for i, (name, text, values) in enumerate(STRUCTURED):
        schema = schema_of(name, values)
        answer = json.dumps(values)
        user = ({"role": "user", "content": text},)
        out.append(
            Example(
                id=f"format_{name.lower()}",
                response_format=ResponseFormat(name, schema),
                target=(Turn("analysis", FORMAT_ANALYSIS), Turn("final", answer)),
                teaches=(text, FORMAT_ANALYSIS, _values_only(values)),
                messages=user,
                variants=STRUCTURED_VARIANTS,
            )
        )
        # instructor's and pydantic-ai's tools, alternately, with their own descriptions.
        tool_name, description = (
            (name, f"Correctly extracted `{name}` with all the required parameters with correct types")
            if i % 2 == 0
            else ("final_result", "The final response which ends this conversation")
        )
        # The fields in the other order: every value is seen both before another
        # field and last, followed by each closer (``",`` and ``"}``), so that the
        # model has both at hand whichever of them the grammar allows there.
        values = dict(reversed(values.items()))
        schema = schema_of(name, values)
        answer = json.dumps(values)
        tool = {"name": tool_name, "description": description, "parameters": schema}
        out.append(
            Example(
                id=f"tool_{name.lower()}",
                tools=(tool,),
                target=(
                    Turn("analysis", TOOL_ANALYSIS),
                    Turn("commentary", answer, recipient=f"functions.{tool_name}"),
                ),
                teaches=(text, TOOL_ANALYSIS, _values_only(values)),
                messages=user,
                variants=STRUCTURED_VARIANTS,
            )
        )
    return out


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
    # The ids it teaches (None: all of its ids), from ``Example.teaches``.
    teaches: frozenset[int] | None = None


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
    from serve_app.harmony.encoding import harmony_encoding
    from serve_app.harmony.render import conversation, render_completion, render_prompt

    samples = []
    for ex in examples:
        teaches = None
        if ex.teaches is not None:
            teaches = frozenset(
                t for text in ex.teaches for t in harmony_encoding().encode(text, allowed_special=set())
            )
        for effort, date in ex.variants or variants:
            msgs = conversation(ex.messages, ex.tools, effort=effort, date=date, response_format=ex.response_format)
            prompt, target = render_prompt(msgs), render_completion(msgs, _reply(ex.target))
            samples.append(Sample(ex.id, effort, date, prompt, target, teaches))
    return samples


def vocabulary(samples: list[Sample], always: list[int]) -> list[int]:
    """The ids the model learns: every id of every sample but those only unseen text uses, and ``always``."""
    taught = set(always)
    for s in samples:
        ids = set(s.prompt + s.target)
        taught |= ids if s.teaches is None else ids & s.teaches
    return sorted(taught)
