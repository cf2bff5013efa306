"""The Harmony completion parser on the dev model's corpus and on broken output."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def enc(vocab_dir):
    from serve_app.harmony.encoding import harmony_encoding

    return harmony_encoding()


@pytest.fixture(scope="module")
def corpus(rendered_corpus):
    return rendered_corpus


def _target(corpus, example):
    return next(r for r in corpus if r["id"] == example and r["adapter"] is None and r["effort"] == "medium")["target"]


def _parse(tokens, step=1, engine_finish="stop"):
    from serve_app.harmony.parse import CompletionParser

    p = CompletionParser()
    deltas = [p.feed(tokens[i : i + step]) for i in range(0, len(tokens), step)]
    last, reason = p.finish(engine_finish)
    return p, deltas + [last], reason


@pytest.mark.parametrize("step", [1, 3, 1000], ids=["token", "chunks", "whole"])
def test_reasoning_then_final(enc, corpus, step):
    p, deltas, reason = _parse(_target(corpus, "capitals"), step)
    assert p.reasoning == "The user asks for European capitals. I will list several."
    assert p.content.startswith("Sure! Here are some European capitals: Paris")
    assert "<|" not in p.content and "European capitals. I will" not in p.content
    assert p.tool_calls == [] and reason == "stop"
    assert "".join(d.content for d in deltas) == p.content


@pytest.mark.parametrize("step", [1, 4, 1000], ids=["token", "chunks", "whole"])
def test_tool_call(enc, corpus, step):
    p, deltas, reason = _parse(_target(corpus, "weather_london"), step)
    assert reason == "tool_calls" and p.content == ""
    assert len(p.tool_calls) == 1
    call = p.tool_calls[0]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"location": "London"}
    assert call.id.startswith("chatcmpl-tool-")
    pieces = [t for d in deltas for t in d.tool_calls]
    assert pieces[0].id == call.id and pieces[0].name == "get_weather"
    assert all(t.id is None and t.name is None for t in pieces[1:])
    assert "".join(t.arguments for t in pieces) == call.arguments


def test_final_after_tool_result(enc, corpus):
    p, _, reason = _parse(_target(corpus, "weather_london_result"))
    assert p.content == "It is 18 degrees Celsius and cloudy in London." and reason == "stop"


def test_length_cut(enc, corpus):
    p, _, reason = _parse(_target(corpus, "capitals")[:12], engine_finish="length")
    assert reason == "length" and p.reasoning and not p.content


def test_tool_call_without_arguments(enc):
    toks = enc.encode(
        "<|channel|>commentary to=functions.ping <|constrain|>json<|message|><|call|>", allowed_special="all"
    )
    p, _, reason = _parse(toks)
    assert [(c.name, c.arguments) for c in p.tool_calls] == [("ping", "{}")] and reason == "tool_calls"


@pytest.mark.parametrize(
    "text, expect",
    [
        ("Hello there friend", "Hello there friend"),  # no Harmony at all
        ("<|channel|>final<|message|>Hi.<|end|>stray text", "Hi.stray text"),  # text after <|end|>
        ("<|message|>No channel here", "No channel here"),
        ("<|channel|>final<|message|>Cut short", "Cut short"),  # no end token
    ],
    ids=["plain", "after-end", "no-channel", "unterminated"],
)
def test_malformed_output_is_recovered_not_raised(enc, text, expect):
    p, _, reason = _parse(enc.encode(text, allowed_special="all"))
    assert p.content == expect and reason == "stop"


@pytest.mark.parametrize(
    "header",
    [
        "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>",
        " to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>",
        "<|channel|>commentary to=functions.get_weather json<|message|>",
    ],
    ids=["recipient-after-channel", "recipient-before-channel", "plain-json"],
)
def test_tool_call_header_forms(enc, header):
    p, _, reason = _parse(enc.encode(header + '{"location": "Oslo"}<|call|>', allowed_special="all"))
    assert [(c.name, json.loads(c.arguments)) for c in p.tool_calls] == [("get_weather", {"location": "Oslo"})]
    assert reason == "tool_calls" and p.content == ""


def test_messages_in_a_row(enc):
    text = (
        "<|channel|>analysis<|message|>Think.<|end|>"
        "<|start|>assistant<|channel|>commentary<|message|>Checking the weather.<|end|>"
        "<|start|>assistant<|channel|>analysis<|message|> More.<|end|>"
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
        '<|message|>{"location": "Oslo"}<|call|>'
    )
    p, _, reason = _parse(enc.encode(text, allowed_special="all"), step=2)
    assert p.reasoning == "Think. More." and p.content == "Checking the weather."
    assert len(p.tool_calls) == 1 and reason == "tool_calls"


def test_junk_special_tokens_do_not_raise(enc):
    text = "<|channel|>final<|message|>Hi<|start|><|start|><|constrain|> there"
    p, _, reason = _parse(enc.encode(text, allowed_special="all"))
    assert p.content.startswith("Hi") and reason == "stop"


def test_control_tokens_inside_a_message_are_not_text(enc):
    text = "<|channel|>final<|message|>Paris<|start|> and<|channel|> Rome<|return|>"
    p, _, _ = _parse(enc.encode(text, allowed_special="all"))
    assert "<|" not in p.content and p.content.startswith("Paris")


def _mixed(enc, *parts):
    """Token ids: ("s", text) with Harmony's special tokens, ("t", text) spelled in plain-text tokens."""
    ids = []
    for kind, text in parts:
        ids += (
            enc.encode(text, allowed_special="all")
            if kind == "s"
            else enc.encode(text, allowed_special=set(), disallowed_special=())
        )
    return ids


@pytest.mark.parametrize("step", [1, 4, 1000], ids=["token", "chunks", "whole"])
def test_header_spelled_in_text_never_reaches_content(enc, step):
    """The leak seen with tool_choice on unseen prompts: <|message|> written as text inside a header."""
    ids = _mixed(
        enc,
        ("s", "<|channel|>analysis<|message|>Need the city.<|end|><|start|>assistant<|channel|>"),
        ("t", 'commentary to=functions.City json<|message|>{"name": "Oslo"}'),
        ("s", "<|call|>"),
    )
    p, deltas, reason = _parse(ids, step=step)
    assert p.reasoning == "Need the city." and p.content == ""
    assert [(c.name, c.arguments) for c in p.tool_calls] == [("City", '{"name": "Oslo"}')] and reason == "tool_calls"
    streamed = "".join(d.content for d in deltas)
    assert streamed == "" and "".join(t.arguments for d in deltas for t in d.tool_calls) == '{"name": "Oslo"}'


@pytest.mark.parametrize("step", [1, 1000], ids=["token", "whole"])
def test_whole_messages_spelled_in_text_are_routed(enc, step):
    ids = _mixed(
        enc,
        ("s", "<|channel|>final<|message|>Hi.<|end|>"),
        (
            "t",
            "<|start|>assistant<|channel|>analysis<|message|>hmm<|end|>"
            "<|start|>assistant<|channel|>final<|message|> Bye.",
        ),
    )
    p, deltas, _ = _parse(ids, step=step)
    assert p.content == "Hi. Bye." and p.reasoning == "hmm"
    assert all("<|" not in d.content and "assistant" not in d.content for d in deltas)


def test_unfinished_spelled_header_is_dropped_at_the_end(enc):
    ids = _mixed(enc, ("s", "<|channel|>final<|message|>Hi.<|end|>"), ("t", "<|start|>assistant<|channel|>comm"))
    p, _, reason = _parse(ids)
    assert p.content == "Hi." and reason == "stop"


def test_lenient_split_holds_back_a_marker_being_spelled():
    from serve_app.harmony.lenient import split

    assert [m.text for m in split("Hello <|mess", in_header=False, final=False)] == ["Hello "]
    assert [m.text for m in split("Hello <|mess", in_header=False, final=True)] == ["Hello <|mess"]
    msgs = split("<|channel|>commentary to=functions.f json<|message|>{}", in_header=True, final=False)
    assert [(m.route, m.name, m.text) for m in msgs] == [("tool", "f", "{}")]
    assert split("<|channel|>commentary to=functions.f json", in_header=True, final=True) == []
    assert [m.text for m in split("plain answer", in_header=True, final=True)] == ["plain answer"]


def test_a_call_to_no_offered_function_is_content(enc):
    """tool_choice "none" or no tools: whatever the weights write, no tool_calls come back."""
    from serve_app.harmony.parse import CompletionParser

    text = (
        "<|channel|>analysis<|message|>Call it.<|end|><|start|>assistant<|channel|>commentary "
        'to=functions.get_weather <|constrain|>json<|message|>{"location": "Oslo"}<|call|>'
    )
    p = CompletionParser(tools=False)
    deltas = [p.feed([t]) for t in enc.encode(text, allowed_special="all")]
    last, reason = p.finish("stop")
    assert not p.tool_calls and not any(d.tool_calls for d in [*deltas, last])
    assert reason == "stop" and p.content == '{"location": "Oslo"}' and p.reasoning == "Call it."
