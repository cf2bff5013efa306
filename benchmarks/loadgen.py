"""Load generator for any OpenAI-compatible chat endpoint (ours, `vllm serve`, ...).

    .venv/bin/python benchmarks/loadgen.py --url http://127.0.0.1:8000 --model gpt-oss-20b \\
        [--adapters pirate terse] [--adapter-model '{base}:{adapter}'] [--mix base uniform skewed] \\
        [--concurrency 1 8 32] [--output-tokens 64] [--requests 0] [--api-key KEY] [--json out.json]

Streaming chat completions with a fixed prompt (fixed input length) and a
forced output length (``ignore_eos`` in the body, which both vLLM and this
project accept). For each mix and concurrency: a warm-up round (one request
per adapter of the mix, plus ``concurrency`` requests), then ``--requests``
requests (default: max(4 * concurrency, 16)) kept ``concurrency`` in flight.

Mixes: ``base`` (the base model only), ``uniform`` (round robin over the
adapters), ``skewed`` (80% to the first adapter, the rest spread over the others).
``--adapter-model`` says how a server names an adapter (this project:
``{base}:{adapter}``; vLLM's ``--lora-modules``: ``{adapter}``).

Per request: TTFT (to the first chunk with choices, the role chunk included:
the definition of vLLM's own ``vllm bench serve``; vLLM and this project both
send that chunk once the engine's first token is out), inter-token latency
((last - first chunk) / (completion tokens - 1), tokens from the usage chunk),
end-to-end latency. Per level: p50/p99 of each,
output tokens/s (all completion tokens over the level's wall time), errors.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Count from one to twenty"},
]


@dataclass
class Sample:
    ttft_s: float | None = None
    itl_s: float | None = None
    e2e_s: float = 0.0
    tokens: int = 0
    error: str | None = None


@dataclass
class Level:
    target: str
    mix: str
    concurrency: int
    requests: int
    errors: int
    tok_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    itl_p99_ms: float
    e2e_p50_ms: float
    e2e_p99_ms: float
    # With a CPU probe (compare.py): CPU per output token by role over the level.
    cpu: Any = None


def _pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0] * 1000
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def models_for(mix: str, base: str, adapters: list[str], template: str, n: int, seed: int = 0) -> list[str]:
    """The model names of ``n`` requests of a mix."""
    named = [template.format(base=base, adapter=a) for a in adapters]
    if mix == "base" or not named:
        return [base] * n
    if mix == "uniform":
        return list(itertools.islice(itertools.cycle(named), n))
    if mix == "skewed":
        rng = random.Random(seed)
        rest = named[1:] or named
        return [named[0] if rng.random() < 0.8 else rng.choice(rest) for _ in range(n)]
    raise ValueError(f"unknown mix {mix!r}")


async def one(session, url: str, model: str, tokens: int, headers: dict) -> Sample:
    body = {
        "model": model,
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": tokens,
        "ignore_eos": True,
        "temperature": 0,
    }
    s = Sample()
    t0 = time.perf_counter()
    first = last = None
    try:
        async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
            if r.status != 200:
                s.error = f"http {r.status}"
                await r.read()
                return s
            async for raw in r.content:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    s.error = f"in-band {chunk['error'].get('code')}"
                    continue
                if chunk.get("usage"):
                    s.tokens = chunk["usage"].get("completion_tokens", 0)
                if chunk.get("choices"):
                    # TTFT as vLLM's own `vllm bench serve` counts it: the first
                    # chunk with choices, the role chunk included (both servers
                    # send it when the engine's first token is out).
                    last = time.perf_counter()
                    first = first or last
    except Exception as e:  # a benchmark counts failures instead of stopping on them
        s.error = type(e).__name__
    s.e2e_s = time.perf_counter() - t0
    if first is not None:
        s.ttft_s = first - t0
        if s.tokens > 1 and last is not None:
            s.itl_s = (last - first) / (s.tokens - 1)
    if s.error is None and s.tokens != tokens:
        s.error = f"tokens {s.tokens} != {tokens}"
    return s


async def run_level(session, url, models: list[str], concurrency: int, tokens: int, headers: dict, bar=None):
    queue: asyncio.Queue = asyncio.Queue()
    for m in models:
        queue.put_nowait(m)
    samples: list[Sample] = []

    async def worker():
        while not queue.empty():
            m = queue.get_nowait()
            samples.append(await one(session, url, m, tokens, headers))
            if bar is not None:
                bar.update(1)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - t0


def summarize(target: str, mix: str, concurrency: int, samples: list[Sample], wall_s: float) -> Level:
    ok = [s for s in samples if s.error is None]
    return Level(
        target=target,
        mix=mix,
        concurrency=concurrency,
        requests=len(samples),
        errors=len(samples) - len(ok),
        tok_s=round(sum(s.tokens for s in ok) / wall_s, 1),
        ttft_p50_ms=round(_pct([s.ttft_s for s in ok if s.ttft_s is not None], 50), 1),
        ttft_p99_ms=round(_pct([s.ttft_s for s in ok if s.ttft_s is not None], 99), 1),
        itl_p50_ms=round(_pct([s.itl_s for s in ok if s.itl_s is not None], 50), 2),
        itl_p99_ms=round(_pct([s.itl_s for s in ok if s.itl_s is not None], 99), 2),
        e2e_p50_ms=round(_pct([s.e2e_s for s in ok], 50), 1),
        e2e_p99_ms=round(_pct([s.e2e_s for s in ok], 99), 1),
    )


async def sweep(
    url: str,
    base: str,
    adapters: list[str],
    template: str,
    mixes: list[str],
    concurrencies: list[int],
    tokens: int,
    requests: int = 0,
    api_key: str | None = None,
    target: str = "target",
    progress: bool = True,
    measure: Callable[[], Callable[[int], Any]] | None = None,
) -> list[Level]:
    """Each mix at each concurrency, after a warm-up round.

    ``measure()``, if given, is called as a level's measured requests start
    and returns ``end(tokens)``, called when they are done; what it returns
    goes into ``Level.cpu``.
    """
    import aiohttp

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    plan = [(mix, c, requests or max(4 * c, 16)) for mix in mixes for c in concurrencies]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(n for _, _, n in plan), desc=target, unit="req", file=sys.stderr)
    levels = []
    # aiohttp, as vLLM's own benchmark uses: httpx's connection pool was seen
    # to hold requests on reused keep-alive connections for seconds (against
    # both servers), which measured the client, not the server.
    connector = aiohttp.TCPConnector(limit=max(concurrencies) + 8)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for mix, c, n in plan:
            warm = models_for(mix, base, adapters, template, len(adapters) + c)
            await run_level(session, url, sorted(set(warm)) + warm[:c], c, tokens, headers)
            end = measure() if measure is not None else None
            samples, wall = await run_level(
                session, url, models_for(mix, base, adapters, template, n), c, tokens, headers, bar
            )
            level = summarize(target, mix, c, samples, wall)
            if end is not None:
                level.cpu = end(sum(s.tokens for s in samples if s.error is None))
            levels.append(level)
    if bar is not None:
        bar.close()
    return levels


COLUMNS = [
    "target",
    "mix",
    "concurrency",
    "requests",
    "errors",
    "tok_s",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "itl_p50_ms",
    "itl_p99_ms",
    "e2e_p50_ms",
    "e2e_p99_ms",
]


def table(levels: list[Level], extra: dict[str, dict] | None = None) -> str:
    """A markdown table of the levels; ``extra`` adds per-target columns (e.g. memory)."""
    extra = extra or {}
    more = sorted({k for cols in extra.values() for k in cols})
    lines = ["| " + " | ".join(COLUMNS + more) + " |", "|" + "---|" * len(COLUMNS + more)]
    for lv in levels:
        row = {**asdict(lv), **extra.get(lv.target, {})}
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in COLUMNS + more) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="server root, without /v1")
    p.add_argument("--model", default="gpt-oss-20b")
    p.add_argument("--adapters", nargs="*", default=[])
    p.add_argument("--adapter-model", default="{base}:{adapter}")
    p.add_argument("--mix", nargs="+", default=["base"], choices=["base", "uniform", "skewed"])
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--requests", type=int, default=0)
    p.add_argument("--api-key")
    p.add_argument("--target", default="target")
    p.add_argument("--json")
    a = p.parse_args()
    levels = asyncio.run(
        sweep(
            a.url,
            a.model,
            a.adapters,
            a.adapter_model,
            a.mix,
            a.concurrency,
            a.output_tokens,
            a.requests,
            a.api_key,
            a.target,
        )
    )
    print(table(levels))
    if a.json:
        with open(a.json, "w") as f:
            json.dump([asdict(lv) for lv in levels], f, indent=1)


if __name__ == "__main__":
    main()
