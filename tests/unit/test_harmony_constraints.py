"""The decoding constraints, run through xgrammar's matcher on the dev model's tokenizer (as vLLM compiles them).

A tool call forced by ``tool_choice`` must be a real Harmony message, written
with Harmony's special tokens: the same header spelled in plain-text tokens
(what the dev model produced on prompts it never saw) must be refused by the
grammar, token by token, before the engine can sample it.
"""

from __future__ import annotations

import pytest

CITY = {
    "name": "City",
    "parameters": {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
        "additionalProperties": False,
    },
}
CALL = 200012  # <|call|>
RETURN = 200002  # <|return|>


@pytest.fixture(scope="module")
def xg(vocab_dir, tmp_path_factory):
    xgr = pytest.importorskip("xgrammar")
    from transformers import AutoTokenizer

    from serve_app.devmodel.tokenizer import build_tokenizer
    from serve_app.devmodel.vocab import VOCAB_NAME
    from serve_app.harmony.encoding import harmony_encoding

    # The dev models' tokenizer, built from the vocabulary alone (no training).
    folder = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(vocab_dir / VOCAB_NAME, folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=201088, stop_token_ids=[RETURN, CALL])
    compiler = xgr.GrammarCompiler(info)
    enc = harmony_encoding()

    def run(tag: str, ids: list[int], stop: int) -> tuple[int | None, bool]:
        """(index of the first refused token or None, whether the stop token may follow)."""
        matcher = xgr.GrammarMatcher(compiler.compile_structural_tag(tag))
        for i, t in enumerate(ids):
            if not matcher.accept_token(t):
                return i, False
        return None, matcher.accept_token(stop)

    def special(text: str) -> list[int]:
        return enc.encode(text, allowed_special="all")

    def plain(text: str) -> list[int]:
        return enc.encode(text, allowed_special=set(), disallowed_special=())

    return run, special, plain


def _forced(*tools):
    from serve_app.harmony import constraints

    return constraints.forced_tool_call(list(tools))


@pytest.mark.parametrize(
    "completion",
    [
        '<|channel|>commentary to=functions.City <|constrain|>json<|message|>{"name": "Oslo"}',
        '<|channel|>commentary to=functions.City json<|message|>{"name":"Oslo"}',
        "<|channel|>analysis<|message|>Need a city.<|end|><|start|>assistant"
        '<|channel|>commentary to=functions.City <|constrain|>json<|message|>{"name": "Oslo"}',
        "<|channel|>analysis<|message|>a<|end|><|start|>assistant<|channel|>commentary<|message|>Let me look."
        '<|end|><|start|>assistant<|channel|>commentary to=functions.City json<|message|>{"name": "Oslo"}',
    ],
    ids=["constrain", "json", "after-analysis", "after-preamble"],
)
def test_a_real_harmony_call_is_accepted_and_ends_with_call(xg, completion):
    run, special, _ = xg
    assert run(_forced(CITY), special(completion), CALL) == (None, True)


@pytest.mark.parametrize(
    "completion",
    [
        '<|channel|>commentary to=functions.City json<|message|>{"name": "Oslo"}',
        'commentary to=functions.City json<|message|>{"name": "Oslo"}',
    ],
    ids=["header-spelled-in-text", "no-channel-token"],
)
def test_a_header_spelled_in_plain_text_is_refused(xg, completion):
    run, _, plain = xg
    refused, _ = run(_forced(CITY), plain(completion), CALL)
    assert refused == 0


def test_text_inside_analysis_cannot_end_it_and_markup_tokens_are_refused(xg):
    run, special, plain = xg
    ids = special("<|channel|>analysis<|message|>") + plain("a <|end|> b")
    assert run(_forced(CITY), ids, CALL) == (None, False)  # still inside the analysis message
    ids = special("<|channel|>analysis<|message|>think") + special("<|channel|>")
    assert run(_forced(CITY), ids, CALL)[0] == len(ids) - 1


def test_only_the_named_functions_and_schema_valid_arguments(xg):
    run, special, _ = xg
    other = {"name": "Weather", "parameters": {"type": "object"}}
    bad_name = special("<|channel|>commentary to=functions.Weather json<|message|>{}")
    refused, _ = run(_forced(CITY), bad_name, CALL)
    assert refused is not None
    assert run(_forced(CITY, other), bad_name, CALL) == (None, True)
    refused, _ = run(_forced(CITY), special('<|channel|>commentary to=functions.City json<|message|>{"nom": 1}'), CALL)
    assert refused is not None


def test_final_json_needs_the_final_channel_token(xg):
    from serve_app.harmony import constraints

    run, special, plain = xg
    tag = constraints.final_json({"type": "object", "properties": {"a": {"type": "integer"}}})
    assert run(tag, special('<|channel|>final<|message|>{"a": 1}'), RETURN) == (None, True)
    assert run(tag, plain('<|channel|>final<|message|>{"a": 1}'), RETURN)[0] == 0


def test_special_tokens_cannot_enter_json_strings(xg):
    """Harmony's special tokens decode to "<|...|>", valid bytes inside a JSON string: the grammar excludes them."""
    run, special, _ = xg
    ids = special('<|channel|>commentary to=functions.City json<|message|>{"name": "Os') + special("<|end|>")
    assert run(_forced(CITY), ids, CALL)[0] == len(ids) - 1
