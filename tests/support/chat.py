"""Chat completions through the openai client, folded into one shape; forced-call checks."""

from __future__ import annotations

import json

BASE = "gpt-oss-20b"


def _chat(client, stream: bool, **kw):
    """One greedy completion; streamed ones are folded into the same shape."""
    kw = {"model": BASE, "temperature": 0, "max_tokens": 256} | kw
    if not stream:
        r = client.chat.completions.create(**kw)
        c = r.choices[0]
        m = c.message
        calls = [(t.id, t.function.name, t.function.arguments) for t in m.tool_calls or []]
        return {
            "reasoning": m.reasoning_content,
            "content": m.content,
            "calls": calls,
            "finish": c.finish_reason,
            "usage": r.usage,
            "model": r.model,
        }
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    reasoning, content, calls, finish = "", "", {}, None
    assert chunks[0].choices[0].delta.role == "assistant"
    for ch in chunks:
        for c in ch.choices:
            d = c.delta
            reasoning += getattr(d, "reasoning_content", None) or ""
            content += d.content or ""
            for t in d.tool_calls or []:
                if t.index not in calls:
                    assert t.id and t.type == "function" and t.function.name, "first tool-call delta names the call"
                    calls[t.index] = [t.id, t.function.name, ""]
                calls[t.index][2] += t.function.arguments or ""
            if c.finish_reason:
                assert finish is None, "one finish_reason per choice"
                finish = c.finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    return {
        "reasoning": reasoning or None,
        "content": content or None,
        "calls": [tuple(v) for v in calls.values()],
        "finish": finish,
        "usage": chunks[-1].usage,
        "model": chunks[0].model,
    }


# Prompts and a tool the dev model never saw (what instructor's TOOLS mode and
# pydantic-ai's structured output send): the call must hold whatever the weights say.
CITY_TOOL = {
    "type": "function",
    "function": {
        "name": "City",
        "description": "Correctly extracted `City` with all the required parameters",
        "parameters": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "country": {"type": "string"}},
            "required": ["name", "country"],
            "additionalProperties": False,
        },
    },
}
UNSEEN = [
    [{"role": "user", "content": "Extract the city: I flew from Lyon to Kyoto last spring."}],
    [
        {"role": "system", "content": "You extract structured data."},
        {"role": "user", "content": "Which city hosts the Sagrada Familia? Answer with the tool."},
    ],
]


def assert_forced_call(r: dict, name: str = "City") -> None:
    """A tool call to ``name`` and nothing else; its arguments schema-valid unless max_tokens cut them."""
    assert r["finish"] in ("tool_calls", "length"), r
    assert [c[1] for c in r["calls"]] == [name], r
    for marker in ("<|", "|>", "to=functions", "assistantcommentary"):
        assert marker not in (r["content"] or ""), f"header text in content: {r['content']!r}"
    if r["finish"] == "tool_calls":
        args = json.loads(r["calls"][0][2])
        assert set(args) == {"name", "country"} and all(isinstance(v, str) for v in args.values())
