"""Replica throughput on the dev model: tokens/s at a given concurrency, base vs. adapter.

    .venv/bin/python benchmarks/diagnostics/replica_throughput.py [--concurrency 8] [--tokens 256] [--rounds 3]

Starts a local Ray Serve with configs/dev-cpu.yaml, sends `concurrency`
simultaneous streams straight to the LLMReplica handle (no HTTP), each forced
to `tokens` output tokens with ignore_eos, and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


async def _one(handle, prompt, adapter, tokens):
    from serve_app.protocol.engine import GenerateRequest, SamplingOptions

    req = GenerateRequest(
        request_id=uuid.uuid4().hex,
        prompt_token_ids=prompt,
        sampling=SamplingOptions(temperature=0.0, max_tokens=tokens, ignore_eos=True),
        adapter=adapter,
    )
    start = time.perf_counter()
    ttft, n, chunks = None, 0, 0
    async for chunk in handle.options(stream=True, multiplexed_model_id=adapter or "").generate.remote(req):
        if ttft is None:
            ttft = time.perf_counter() - start
        n += len(chunk.token_ids)
        chunks += 1
    return ttft, n, chunks


async def _round(handle, prompt, adapter, concurrency, tokens):
    start = time.perf_counter()
    results = await asyncio.gather(*[_one(handle, prompt, adapter, tokens) for _ in range(concurrency)])
    wall = time.perf_counter() - start
    total = sum(n for _, n, _ in results)
    return total / wall, [t for t, _, _ in results], sum(c for _, _, c in results) / len(results)


async def main_async(args) -> list[dict]:
    import ray
    from ray import serve

    from serve_app.app import build_app
    from serve_app.devmodel.paths import default_dir

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    corpus = json.loads((default_dir() / "corpus.json").read_text())
    prompt = next(r for r in corpus if r["id"] == "count" and r["adapter"] is None)["prompt"]
    cfg = yaml.safe_load((REPO / "configs" / "dev-cpu.yaml").read_text())["applications"][0]["args"]
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": 0})
    serve.run(build_app(cfg), name="bench", route_prefix="/bench")
    handle = serve.get_deployment_handle("LLMReplica", app_name="bench")
    rows = []
    try:
        for label, adapter in (("base", None), ("adapter pirate", "pirate")):
            await _round(handle, prompt, adapter, args.concurrency, 32)  # warm-up (loads the adapter)
            tps, ttfts, chunks = [], [], []
            for _ in range(args.rounds):
                t, tt, c = await _round(handle, prompt, adapter, args.concurrency, args.tokens)
                tps.append(t)
                ttfts += tt
                chunks.append(c)
            rows.append(
                {
                    "mode": label,
                    "concurrency": args.concurrency,
                    "tokens_per_s": statistics.median(tps),
                    "ttft_p50_ms": 1000 * statistics.median(ttfts),
                    "chunks_per_stream": statistics.mean(chunks),
                }
            )
    finally:
        serve.shutdown()
        ray.shutdown()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = asyncio.run(main_async(args))
    print(f"\n{'mode':<16}{'conc':>6}{'out tok/s':>12}{'TTFT p50 ms':>14}{'chunks/stream':>16}")
    for r in rows:
        print(
            f"{r['mode']:<16}{r['concurrency']:>6}{r['tokens_per_s']:>12.1f}{r['ttft_p50_ms']:>14.1f}"
            f"{r['chunks_per_stream']:>16.1f}"
        )
    base = rows[0]["tokens_per_s"]
    print(f"adapter / base throughput: {rows[1]['tokens_per_s'] / base:.2f}")


if __name__ == "__main__":
    main()
