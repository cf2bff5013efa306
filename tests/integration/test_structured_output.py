"""Structured output as the frameworks ask for it, on schemas the dev model never saw.

What the openai SDK's ``chat.completions.parse`` and ``responses.parse``,
instructor's TOOLS mode (a named tool_choice) and pydantic-ai's tool output
(tool_choice ``required`` with a ``final_result`` tool) send, against the
gpt-oss dev model (``make serve``'s). The grammar holds the structure; these
tests hold that the weights close each value, so that the request finishes
(``stop``/``tool_calls``) instead of running to ``max_tokens`` and the
frameworks get an object. None of these schemas or prompts is in the corpus.
"""

from __future__ import annotations

import openai
import pytest
from pydantic import BaseModel

from serve_app.devmodel.corpus import STRUCTURED

pytestmark = pytest.mark.integration

BASE = "gpt-oss-20b"


class Book(BaseModel):
    title: str
    author: str
    year: int


class Ticket(BaseModel):
    summary: str
    priority: str
    tags: list[str]


class Person(BaseModel):
    name: str
    age: int
    email: str
    member: bool


CASES = [
    (Book, "Ursula K. Le Guin published The Dispossessed in 1974."),
    (Ticket, "File a ticket: the login page times out for every user since this morning."),
    (Person, "Jane Doe, 31, jane@example.org, has been a member for years."),
]
IDS = [c[0].__name__ for c in CASES]


@pytest.fixture(scope="module")
def client(serve_url, gptoss_app):
    return openai.OpenAI(base_url=f"{serve_url}/gptoss/v1", api_key="unused", max_retries=0, timeout=120)


def test_the_schemas_here_are_not_in_the_corpus():
    taught = {name for name, _, _ in STRUCTURED} | {key for _, _, values in STRUCTURED for key in values}
    for model, _ in CASES:
        assert model.__name__ not in taught
        assert not set(model.model_fields) & taught, model


@pytest.mark.parametrize("model, text", CASES, ids=IDS)
def test_chat_completions_parse_finishes(client, model, text):
    r = client.chat.completions.parse(
        model=BASE, messages=[{"role": "user", "content": text}], response_format=model, max_tokens=256
    )
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice
    assert isinstance(choice.message.parsed, model)


@pytest.mark.parametrize("model, text", CASES, ids=IDS)
def test_responses_parse_finishes(client, model, text):
    r = client.responses.parse(model=BASE, input=text, text_format=model, max_output_tokens=256, store=False)
    assert r.status == "completed", r
    assert isinstance(r.output_parsed, model)


@pytest.mark.parametrize("model, text", CASES, ids=IDS)
@pytest.mark.parametrize("style", ["instructor", "pydantic-ai"])
def test_forced_tool_call_finishes(client, model, text, style):
    """instructor: the model's own name, a named tool_choice; pydantic-ai: ``final_result``, ``required``."""
    tool = openai.pydantic_function_tool(model)
    if style == "instructor":
        tool_choice = {"type": "function", "function": {"name": model.__name__}}
    else:
        tool["function"]["name"] = "final_result"
        tool["function"]["description"] = "The final response which ends this conversation"
        tool_choice = "required"
    r = client.chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": text}],
        tools=[tool],
        tool_choice=tool_choice,
        max_tokens=256,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    [call] = choice.message.tool_calls
    assert call.function.name == tool["function"]["name"]
    model.model_validate_json(call.function.arguments)
