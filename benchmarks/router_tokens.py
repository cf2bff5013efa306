"""The router's own work per streamed token, in one process (no Ray, no engine).

    .venv/bin/python benchmarks/router_tokens.py [--tokens 600] [--repeat 5]

What the Router does for each token chunk that reaches it: the chunk from its
wire form, the Harmony parser, stop matching, the chat.completion.chunk dict
and its SSE encoding, for a reasoning stream of single-token chunks (as at
high concurrency, where every engine step brings one token per request).
Prints microseconds per token.
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
    from serve_app.harmony.encoding import harmony_encoding
    from serve_app.harmony.parse import CompletionParser
    from serve_app.protocol.engine import TokenChunk
    from serve_app.router import sse
    from serve_app.endpoints.chat.output import ChunkWriter
    from serve_app.router.stops import StopMatcher

    enc = harmony_encoding()
    text = "<|channel|>analysis<|message|>" + "one two three four five six seven " * (args.tokens // 7 + 1)
    ids = enc.encode(text, allowed_special="all")[: args.tokens]
    to_wire = getattr(TokenChunk, "to_wire", None)
    from_wire = getattr(TokenChunk, "from_wire", None)
    started = time.perf_counter()
    for _ in range(args.repeat):
        parser, stops, writer = CompletionParser(), StopMatcher([]), ChunkWriter("id", 0, "gpt-oss-20b", True)
        for i, tok in enumerate(ids):
            chunk = TokenChunk(token_ids=[tok], prompt_tokens=85, completion_tokens=i + 1)
            # what crosses the handle, both ways
            wire = pickle.loads(pickle.dumps(to_wire(chunk) if to_wire else chunk))
            chunk = from_wire(wire) if from_wire else wire
            delta = parser.feed(chunk.token_ids)
            delta.content = stops.push(delta.content)
            if delta:
                sse.encode(writer.delta(0, delta, None))
    per_token = (time.perf_counter() - started) / (args.repeat * len(ids))
    print(f"router work per token: {per_token * 1e6:.1f} us ({len(ids)} tokens x {args.repeat})")


if __name__ == "__main__":
    main()
