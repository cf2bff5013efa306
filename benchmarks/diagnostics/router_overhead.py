"""What the router costs: streaming through HTTP + router vs. straight to the replica.

    .venv/bin/python benchmarks/diagnostics/router_overhead.py [--concurrency 1 8 32] [--tokens 128] [--rounds 3]

Starts a local Ray Serve with configs/dev-cpu.yaml on a free 127.0.0.1 port.
For each concurrency it alternates two kinds of round with the same prompt
(the dev model's "count" example) and the same forced output length
(``ignore_eos``, greedy):

- replica: ``GenerateRequest`` token ids straight to the LLMReplica handle;
- router: ``POST /v1/chat/completions`` with ``stream: true`` over HTTP
  (httpx, SSE parsed minimally so the client costs little CPU), through
  Serve's proxy, the router's validation, Harmony rendering and parsing;
- responses: ``POST /v1/responses``, the same conversation (``instructions``
  and ``input``), streamed, ``store: false`` (what is measured is the event
  stream, not the store).

TTFT is the time to the first visible token: the first reasoning or content
text (the replica's token ids are parsed with the same Harmony parser; the
router's first SSE chunk with reasoning or content). tok/s is output tokens of the
whole round over its wall time. Prints a table and, with --json, the rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import time
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Count from one to twenty"},
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _replica_stream(handle, prompt, tokens):
    from serve_app.harmony.parse import CompletionParser
    from serve_app.protocol.engine import GenerateRequest, SamplingOptions, TokenChunk

    req = GenerateRequest(
        request_id=uuid.uuid4().hex,
        prompt_token_ids=prompt,
        sampling=SamplingOptions(temperature=0.0, max_tokens=tokens, ignore_eos=True),
    )
    parser = CompletionParser()
    start = time.perf_counter()
    ttft, n = None, 0
    async for wire in handle.options(stream=True).generate.remote(req):
        chunk = TokenChunk.from_wire(wire)
        # Like the router's, the first *visible* token: the Harmony header
        # tokens before it are generated but not shown.
        if ttft is None and parser.feed(chunk.token_ids):
            ttft = time.perf_counter() - start
        n += len(chunk.token_ids)
    return ttft, n


async def _router_stream(client, url, tokens):
    body = {
        "model": "gpt-oss-20b",
        "messages": MESSAGES,
        "stream": True,
        "temperature": 0,
        "max_tokens": tokens,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    ttft, n = None, 0
    async with client.stream("POST", url, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if ttft is None and (
                ('"content":"' in line[:400] and '"content":""' not in line[:400]) or '"reasoning' in line[:400]
            ):
                ttft = time.perf_counter() - start
            if '"usage":{' in line:
                n = json.loads(line[6:])["usage"]["completion_tokens"]
    return ttft, n


async def _responses_stream(client, url, tokens):
    body = {
        "model": "gpt-oss-20b",
        "instructions": MESSAGES[0]["content"],
        "input": MESSAGES[1]["content"],
        "stream": True,
        "temperature": 0,
        "max_output_tokens": tokens,
        "ignore_eos": True,
        "store": False,
    }
    start = time.perf_counter()
    ttft, n = None, 0
    async with client.stream("POST", url, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if ttft is None and line.startswith("event: ") and line.endswith("_text.delta"):
                ttft = time.perf_counter() - start
            if line.startswith("data: ") and '"usage":{' in line:
                n = json.loads(line[6:])["response"]["usage"]["output_tokens"]
    return ttft, n


async def _round(make_one, concurrency):
    start = time.perf_counter()
    results = await asyncio.gather(*[make_one() for _ in range(concurrency)])
    wall = time.perf_counter() - start
    return sum(n for _, n in results) / wall, [t for t, _ in results]


async def main_async(args) -> list[dict]:
    import httpx
    import ray
    from ray import serve

    from serve_app.app import build_app
    from serve_app.config import AppConfig
    from serve_app.endpoints.chat.models import ChatCompletionRequest
    from serve_app.endpoints.chat.render import prepare
    from serve_app.harmony.encoding import use_vocab_dir

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cfg = yaml.safe_load((REPO / "configs" / "dev-cpu.yaml").read_text())["applications"][0]["args"]
    use_vocab_dir(AppConfig.model_validate(cfg).model.resolved_vocab_dir())
    # The very prompt the router renders, so both paths do the same engine work.
    prompt = prepare(
        ChatCompletionRequest.model_validate({"model": "gpt-oss-20b", "messages": MESSAGES})
    ).prompt_token_ids
    port = _free_port()
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(cfg), name="bench", route_prefix="/bench")
    handle = serve.get_deployment_handle("LLMReplica", app_name="bench")
    url = f"http://127.0.0.1:{port}/bench/v1/chat/completions"
    responses_url = f"http://127.0.0.1:{port}/bench/v1/responses"
    rows = []
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    try:
        async with httpx.AsyncClient(timeout=600, limits=limits) as client:
            paths = {
                "replica": lambda: _replica_stream(handle, prompt, args.tokens),
                "router": lambda: _router_stream(client, url, args.tokens),
                "responses": lambda: _responses_stream(client, responses_url, args.tokens),
            }
            paths = {p: one for p, one in paths.items() if p in args.paths}
            for c in args.concurrency:
                stats: dict[str, tuple[list[float], list[float]]] = {p: ([], []) for p in paths}
                for one in paths.values():  # warm-up
                    await _round(one, c)
                for _ in range(args.rounds):
                    for p, one in paths.items():
                        tps, ttfts = await _round(one, c)
                        stats[p][0].append(tps)
                        stats[p][1].extend(ttfts)
                for p, (tps, ttfts) in stats.items():
                    q = statistics.quantiles(ttfts, n=100) if len(ttfts) > 1 else ttfts * 99
                    rows.append(
                        {
                            "path": p,
                            "concurrency": c,
                            "tokens_per_s": statistics.median(tps),
                            "ttft_p50_ms": 1000 * statistics.median(ttfts),
                            "ttft_p99_ms": 1000 * q[98],
                        }
                    )
                print(f"done c={c}", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--paths", nargs="+", default=["replica", "router", "responses"], choices=["replica", "router", "responses"]
    )
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = parser.parse_args()
    rows = asyncio.run(main_async(args))
    by = {(r["path"], r["concurrency"]): r for r in rows}
    print("\n| conc | path | out tok/s | TTFT p50 ms | TTFT p99 ms | router/replica tok/s |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        ratio = r["tokens_per_s"] / by[("replica", r["concurrency"])]["tokens_per_s"]
        print(
            f"| {r['concurrency']} | {r['path']} | {r['tokens_per_s']:.1f} | {r['ttft_p50_ms']:.1f} | "
            f"{r['ttft_p99_ms']:.1f} | {ratio:.2f} |"
        )
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
