"""Router pieces without Ray: SSE encoding, stop sequences, request acceptance,
response shapes."""

from __future__ import annotations

import asyncio
import json

import pytest

from serve_app.api import sse
from serve_app.api.stops import StopMatcher
from serve_app.config import AppConfig
from serve_app.endpoints.chat.output import ChoiceState, ChunkWriter, completion
from serve_app.harmony.parse import Delta, ToolCallDelta
from serve_app.protocol.errors import InvalidRequest, ModelNotFound

CAPITALS = [{"role": "user", "content": "Name the european capitals"}]


def test_sse_event_and_done():
    assert sse.encode({"a": "é", "b": [1, None]}) == 'data: {"a":"é","b":[1,null]}\n\n'.encode()
    assert sse.DONE == b"data: [DONE]\n\n"
    assert sse.encode({"x": "line\nbreak"}).count(b"\n") == 2  # newlines stay escaped inside the JSON


@pytest.mark.parametrize(
    "pieces, stops, sent, stopped",
    [
        (["Hello wor", "ld"], ["world"], "Hello ", True),
        (["abc", "def"], ["xyz"], "abcdef", False),
        (["ab", "c"], ["bcd"], "abc", False),  # a partial match held back, released at the end
        (["one STOP two"], ["STOP", "one"], "", True),  # the earliest stop wins
        (["x", "y"], [], "xy", False),
    ],
    ids=["split-across-pieces", "no-match", "partial-then-end", "earliest", "none"],
)
def test_stop_matcher(pieces, stops, sent, stopped):
    m = StopMatcher(stops)
    out = "".join(m.push(p) for p in pieces) + m.flush()
    assert out == sent and m.stopped is stopped


def test_stop_matcher_holds_back_only_what_could_match():
    m = StopMatcher(["</end>"])
    assert m.push("text </e") == "text "
    assert m.push("xtra") == "</extra"


@pytest.fixture(scope="module")
def service(vocab_dir):
    from serve_app.api.models import ModelResolver
    from serve_app.endpoints.chat.service import ChatService

    cfg = AppConfig.model_validate(
        {
            "model": {"path": "devmodel:base", "served_name": "gpt-oss-20b", "max_model_len": 512},
            "engine": {"device": "cpu", "kv_cache_memory_bytes": 1 << 28},
        }
    )
    return ChatService(cfg, resolver=ModelResolver("gpt-oss-20b", None))


def _core(handle=None):
    from serve_app.api.core import GenerationCore

    return GenerationCore(handle, "gpt-oss-20b", "grpc")


def _accept(service, body):
    return asyncio.run(service.accept(body))


def test_accept_fills_the_completion_budget(service):
    run = _accept(service, {"model": "gpt-oss-20b", "messages": CAPITALS})
    assert run.job.sampling.max_tokens == 512 - run.prompt_tokens and run.id.startswith("chatcmpl-")
    assert (
        _accept(
            service, {"model": "gpt-oss-20b", "messages": CAPITALS, "max_completion_tokens": 7}
        ).job.sampling.max_tokens
        == 7
    )


def test_context_overflow_names_both_numbers(service):
    with pytest.raises(InvalidRequest) as e:
        _accept(service, {"model": "gpt-oss-20b", "messages": CAPITALS, "max_tokens": 600})
    assert "512" in e.value.message and "600" in e.value.message and e.value.code == "context_length_exceeded"
    with pytest.raises(InvalidRequest, match="leaving no room"):
        _accept(service, {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "word " * 600}]})


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "gpt-oss-20b", "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"model": "gpt-oss-20b", "messages": CAPITALS, "temperature": 9}, "temperature"),
        ({"model": "gpt-oss-20b", "messages": [{"role": "tool", "content": "x"}]}, "messages.0.tool_call_id"),
        ({"model": "gpt-oss-20b", "messages": [{"role": "assistant"}]}, "messages.0"),
        ({"messages": CAPITALS}, "model"),
    ],
    ids=["content-type", "range", "tool-id", "assistant-empty", "no-model"],
)
def test_schema_errors_name_the_json_path(service, body, param):
    with pytest.raises(InvalidRequest) as e:
        _accept(service, body)
    assert e.value.param == param and e.value.message.startswith(param)


def test_unknown_models(service):
    for model in ("gpt-oss-20b:pirate", "other", "gpt-oss-20b:"):  # no adapters served here
        with pytest.raises(ModelNotFound):
            _accept(service, {"model": model, "messages": CAPITALS})
    with pytest.raises(InvalidRequest, match="JSON object"):
        _accept(service, ["not", "an", "object"])


def _call_pieces():
    return [ToolCallDelta(0, '{"loc', id="chatcmpl-tool-1", name="get_weather"), ToolCallDelta(0, 'ation": "X"}')]


def test_completion_shape_matches_the_card():
    text, call = ChoiceState(), ChoiceState()
    text.add(Delta(reasoning="Think.", content="Answer."))
    text.finish_reason, text.completion_tokens = "stop", 5
    for piece in _call_pieces():
        call.add(Delta(tool_calls=[piece]))
    call.finish_reason, call.completion_tokens, call.stop_reason = "tool_calls", 7, 200012
    out = completion("chatcmpl-1", 1, "gpt-oss-20b", [text, call], prompt_tokens=9)
    assert set(out) == {"id", "object", "created", "model", "choices", "usage", "prompt_logprobs"}
    m0, m1 = out["choices"][0]["message"], out["choices"][1]["message"]
    assert m0 == {
        "role": "assistant",
        "reasoning_content": "Think.",
        "reasoning": "Think.",
        "content": "Answer.",
        "refusal": None,
        "tool_calls": [],
    }
    assert m1["content"] is None and m1["reasoning_content"] is None
    assert m1["tool_calls"] == [
        {
            "id": "chatcmpl-tool-1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location": "X"}'},
        }
    ]
    assert out["usage"] == {
        "prompt_tokens": 9,
        "total_tokens": 21,
        "completion_tokens": 12,
    }
    assert out["choices"][1]["finish_reason"] == "tool_calls" and out["choices"][1]["stop_reason"] == 200012


def test_stream_chunks():
    w = ChunkWriter("chatcmpl-1", 1, "m", include_usage=True)
    role = w.role(0)
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""} and role["usage"] is None
    first, rest = (w.delta(0, Delta(tool_calls=[p]))["choices"][0]["delta"]["tool_calls"][0] for p in _call_pieces())
    assert first == {
        "index": 0,
        "id": "chatcmpl-tool-1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"loc'},
    }
    assert rest == {"index": 0, "function": {"arguments": 'ation": "X"}'}}
    assert w.delta(0, Delta(reasoning="r"))["choices"][0]["delta"] == {"reasoning_content": "r", "reasoning": "r"}
    fin = w.finish(0, "stop", None)["choices"][0]
    assert fin["delta"] == {} and fin["finish_reason"] == "stop"
    usage = w.usage(3, 4)
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 7
    assert json.loads(sse.encode(usage)[6:]) == usage


def test_content_logprobs_pick_the_content_positions(service):
    from serve_app.api.core import ChoiceRun
    from serve_app.endpoints.chat.output import content_logprobs
    from serve_app.harmony.encoding import harmony_encoding
    from serve_app.protocol.engine import TokenChunk

    ids = harmony_encoding().encode("<|channel|>final<|message|>Hi there", allowed_special="all")
    run = _accept(service, {"model": "gpt-oss-20b", "messages": CAPITALS, "logprobs": True, "top_logprobs": 1})
    choice = ChoiceRun(run.job, 0)
    chunk = TokenChunk(
        token_ids=ids, logprobs=[[(t, -0.5), (t, -0.5), (0, -3.0)] for t in ids], completion_tokens=len(ids)
    )
    event = choice.step(chunk)
    entries = content_logprobs(event.logprobs)
    assert "".join(e["token"] for e in entries) == "Hi there" == event.delta.content
    assert entries[0]["top_logprobs"][1] == {"token": "!", "logprob": -3.0, "bytes": [33]}


def test_sampling_defaults_fill_what_the_request_leaves_out(service):
    run = _accept(service, {"model": "gpt-oss-20b", "messages": CAPITALS, "seed": 7, "n": 2})
    s0, s1 = _core()._sampling(run.job, 0), _core()._sampling(run.job, 1)
    assert (s0.temperature, s0.top_p, s0.top_k) == (1.0, 1.0, -1)  # OpenAI's defaults
    assert (s0.seed, s1.seed) == (7, 8) and s0.stop_token_ids and not s0.ignore_eos
    run = _accept(service, {"model": "gpt-oss-20b", "messages": CAPITALS, "temperature": 0, "ignore_eos": True})
    s = _core()._sampling(run.job, 0)
    assert s.temperature == 0 and s.stop_token_ids == [] and s.ignore_eos


def _sse_events(body: bytes) -> list:
    out = []
    for block in body.decode().split("\n\n"):
        if block:
            assert block.startswith("data: ")
            out.append(block[6:] if block == "data: [DONE]" else json.loads(block[6:]))
    return out


def _collect_sse(run, events):
    from serve_app.api import sse
    from serve_app.api.http import Outcome, sse_response
    from serve_app.endpoints.chat.handler import chunks

    async def go():
        it = events()
        first = await anext(it)
        outcome = Outcome()
        response = sse_response(
            chunks(run, first, it, outcome), it, outcome, lambda e: sse.encode(e.to_dict()), lambda o: None, sse.DONE
        )
        return b"".join([part async for part in response.body_iterator])

    return _sse_events(asyncio.run(go()))


def test_sse_body_order_usage_and_done(service):
    from serve_app.api.core import ChoiceEvent

    run = _accept(
        service,
        {
            "model": "gpt-oss-20b",
            "messages": CAPITALS,
            "n": 2,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )

    async def events():
        yield ChoiceEvent(0, Delta(reasoning="Hm."), completion_tokens=2)
        yield ChoiceEvent(1, Delta(content="A"), "stop", None, 3)
        yield ChoiceEvent(0, Delta(content="B"), "length", None, 4)

    out = _collect_sse(run, events)
    assert [o["choices"][0]["delta"].get("role") for o in out[:2]] == ["assistant", "assistant"]
    finishes = [(c["index"], c["finish_reason"]) for o in out[2:-2] for c in o["choices"] if c["finish_reason"]]
    assert finishes == [(1, "stop"), (0, "length")]
    assert out[-2]["choices"] == [] and out[-2]["usage"]["completion_tokens"] == 7
    assert out[-1] == "[DONE]" and out.count("[DONE]") == 1


def test_sse_error_after_first_token_is_in_band_then_done(service):
    from serve_app.api.core import ChoiceEvent
    from serve_app.protocol.errors import EngineUnavailable

    run = _accept(service, {"model": "gpt-oss-20b", "messages": CAPITALS, "stream": True})
    closed = []

    async def events():
        try:
            yield ChoiceEvent(0, Delta(content="Par"))
            raise EngineUnavailable("replica died")
        finally:
            closed.append(True)

    out = _collect_sse(run, events)
    assert out[1]["choices"][0]["delta"] == {"content": "Par"}
    assert out[2] == {
        "error": {"message": "replica died", "type": "service_unavailable", "param": None, "code": "engine_unavailable"}
    }
    assert out[3:] == ["[DONE]"] and closed == [True]


class _Call:
    def __init__(self, fn):
        self._fn = fn

    async def remote(self):
        return self._fn()


class _FlakyManager:
    """Answers like the manager's handle until ``down``; then fails like a dead actor."""

    def __init__(self):
        self.down = False
        self.version = _Call(self._version)
        self.view = _Call(self._view)

    def _check(self):
        if self.down:
            raise RuntimeError("actor died")

    def _version(self):
        self._check()
        return 1

    def _view(self):
        self._check()
        return {"version": 1, "adapters": {"pirate": {"ref": "pirate@abc", "created": 0}}}


def test_adapter_view_outlives_a_manager_restart():
    import asyncio

    from serve_app.api.models import AdapterView
    from serve_app.protocol.errors import EngineUnavailable

    async def go():
        manager = _FlakyManager()
        view = AdapterView(manager, refresh_s=0.0)
        manager.down = True
        with pytest.raises(EngineUnavailable):  # never seen the registry: cannot answer
            await view.adapters()
        manager.down = False
        assert "pirate" in await view.adapters()
        manager.down = True
        assert "pirate" in await view.adapters()  # the last view, while the manager is away

    asyncio.run(go())


@pytest.mark.parametrize(
    "field, value", [("seed", 10**30), ("seed", -(2**63) - 1), ("top_k", 2**63)], ids=["seed-big", "seed-neg", "top_k"]
)
def test_numbers_beyond_what_the_engine_takes_are_400(service, field, value):
    # Found by the hostile-input volume test: seed 10**30 reached the engine and failed there (503).
    with pytest.raises(InvalidRequest) as e:
        _accept(service, {"model": "gpt-oss-20b", "messages": CAPITALS, field: value})
    assert e.value.param == field


def test_seeds_of_n_choices_stay_int64(service):
    run = _accept(service, {"model": "gpt-oss-20b", "messages": CAPITALS, "n": 3, "seed": 2**63 - 2})
    seeds = [_core()._sampling(run.job, i).seed for i in range(3)]
    assert len(set(seeds)) == 3 and all(-(2**63) <= s < 2**63 for s in seeds)


class _ReplicaStream:
    """A replica's streamed reply: yields the chunks and counts how many were taken."""

    def __init__(self, chunks):
        self._chunks = list(chunks)
        self.taken = 0

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.taken == len(self._chunks):
            raise StopAsyncIteration
        self.taken += 1
        return self._chunks[self.taken - 1]

    def cancel(self):
        pass


class _ReplicaHandle:
    def __init__(self, stream):
        self.stream = stream
        self.generate = self

    def options(self, **_):
        return self

    def remote(self, _request):
        return self.stream


def test_the_stream_opens_on_the_engines_first_token(service):
    """Harmony headers carry no text, yet the first event (and so the 200 and
    the role chunk) goes out with them, not 3-4 decode steps later."""
    from serve_app.harmony.encoding import harmony_encoding
    from serve_app.protocol.engine import TokenChunk

    enc = harmony_encoding()
    headers = enc.encode("<|channel|>analysis<|message|>", allowed_special="all")
    text = enc.encode("Paris", allowed_special="all")
    stream = _ReplicaStream(
        [
            TokenChunk(token_ids=headers[:1], completion_tokens=1),
            TokenChunk(token_ids=headers[1:], completion_tokens=len(headers)),
            TokenChunk(token_ids=text, completion_tokens=len(headers) + len(text), finish_reason="length"),
        ]
    )
    core = _core(_ReplicaHandle(stream))
    run = _accept(service, {"model": "gpt-oss-20b", "messages": CAPITALS, "stream": True})

    async def go():
        events = core.events(run.job)
        first = await anext(events)
        taken_for_first = stream.taken
        rest = [e async for e in events]
        return first, taken_for_first, rest

    first, taken_for_first, rest = asyncio.run(go())
    assert taken_for_first == 1 and not first.delta and first.finish_reason is None
    # Later header-only chunks stay silent; the text and the finish follow.
    assert len(rest) == 1 and rest[0].delta.reasoning == "Paris" and rest[0].finish_reason == "length"
