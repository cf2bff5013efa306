"""The router's own work per streamed token, in one process (no Ray, no engine).

    .venv/bin/python benchmarks/diagnostics/router_tokens.py [--tokens 600] [--repeat 5]

What the Router does for each token chunk that reaches it: the chunk from its
wire form, the generation core's per-choice step (Harmony parser, stop
matching, counters), then the endpoint's output: the ``chat.completion.chunk``
dict or the Responses API's events, and their SSE encoding. A reasoning
stream of single-token chunks (as at high concurrency, where every engine step
brings one token per request). Prints microseconds per token per endpoint.
"""

from __future__ import annotations

import argparse
import pickle
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=600)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()

    from serve_app.devmodel.paths import default_dir
    from serve_app.devmodel.vocab import use_vocab

    use_vocab(default_dir() / "tiktoken")
    from serve_app.api import sse
    from serve_app.api.core import ChoiceRun, Job
    from serve_app.api.models import ModelRef
    from serve_app.endpoints.chat.output import ChunkWriter
    from serve_app.endpoints.responses.output import ResponseWriter
    from serve_app.harmony.encoding import harmony_encoding
    from serve_app.harmony.parse import CompletionParser
    from serve_app.protocol.engine import SamplingOptions, TokenChunk

    enc = harmony_encoding()
    text = "<|channel|>analysis<|message|>" + "one two three four five six seven " * (args.tokens // 7 + 1)
    ids = enc.encode(text, allowed_special="all")[: args.tokens]
    job = Job(
        id="bench",
        prompt_token_ids=[1] * 85,
        ref=ModelRef("gpt-oss-20b", None, None),
        sampling=SamplingOptions(),
        new_parser=CompletionParser,
    )

    def chat_out():
        writer = ChunkWriter("id", 0, "gpt-oss-20b", True)
        return lambda event: sse.encode(writer.delta(0, event.delta, None))

    def responses_out():
        writer = ResponseWriter({"id": "resp_bench"})
        writer.start()
        return lambda event: [sse.event(e["type"], e) for e in writer.delta(event.delta)]

    for name, make_out in (("chat", chat_out), ("responses", responses_out)):
        started = time.perf_counter()
        for _ in range(args.repeat):
            run, out = ChoiceRun(job, 0), make_out()
            for i, tok in enumerate(ids):
                chunk = TokenChunk(token_ids=[tok], prompt_tokens=85, completion_tokens=i + 1)
                # what crosses the handle, both ways
                chunk = TokenChunk.from_wire(pickle.loads(pickle.dumps(chunk.to_wire())))
                event = run.step(chunk)
                if event is not None and event.delta:
                    out(event)
        per_token = (time.perf_counter() - started) / (args.repeat * len(ids))
        print(f"router work per token, {name}: {per_token * 1e6:.1f} us ({len(ids)} tokens x {args.repeat})")


if __name__ == "__main__":
    main()
