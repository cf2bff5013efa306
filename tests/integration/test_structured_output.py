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


# The date is in every prompt (the Harmony system message), so which unseen schema the
# dev model closes can change from day to day: measured on 16 dates (offline, the same
# rendering and grammar, the note of issue 30's follow-up), at most one of these three
# schemas per framework style ran to max_tokens on any day. Every answer that finishes
# must parse into the model; at least two of the three must finish.
MIN_FINISHED = 2


def _tally(style: str, finished: dict[str, bool]) -> None:
    print(f"structured output, {style}: {sum(finished.values())} of {len(finished)} finished {finished}")
    assert sum(finished.values()) >= MIN_FINISHED, finished


def test_chat_completions_parse_finishes(client):
    finished = {}
    for model, text in CASES:
        try:
            r = client.chat.completions.parse(
                model=BASE, messages=[{"role": "user", "content": text}], response_format=model, max_tokens=256
            )
        except openai.LengthFinishReasonError:
            finished[model.__name__] = False
            continue
        choice = r.choices[0]
        assert choice.finish_reason == "stop", choice
        assert isinstance(choice.message.parsed, model)
        finished[model.__name__] = True
    _tally("chat.completions.parse", finished)


def test_responses_parse_finishes(client):
    finished = {}
    for model, text in CASES:
        raw = client.responses.with_raw_response.parse(
            model=BASE, input=text, text_format=model, max_output_tokens=256, store=False
        )
        body = raw.http_response.json()
        finished[model.__name__] = body["status"] == "completed"
        if body["status"] == "completed":
            assert isinstance(raw.parse().output_parsed, model)
        else:
            assert body["status"] == "incomplete" and body["incomplete_details"]["reason"] == "max_output_tokens"
    _tally("responses.parse", finished)


@pytest.mark.parametrize("style", ["instructor", "pydantic-ai"])
def test_forced_tool_call_finishes(client, style):
    """instructor: the model's own name, a named tool_choice; pydantic-ai: ``final_result``, ``required``."""
    finished = {}
    for model, text in CASES:
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
        # Finished or cut, the grammar made it a call of the named function.
        [call] = choice.message.tool_calls
        assert call.function.name == tool["function"]["name"]
        finished[model.__name__] = choice.finish_reason == "tool_calls"
        if choice.finish_reason == "tool_calls":
            model.model_validate_json(call.function.arguments)
        else:
            assert choice.finish_reason == "length", choice
    _tally(style, finished)
