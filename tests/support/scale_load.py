"""Load in phases against a live server, with a timeline of what the cluster did meanwhile.

Each phase holds a number of concurrent streaming chat requests (the base
model and its adapters in turn) until its condition holds (e.g. "two engine
replicas are running") or its time runs out. A sampler records, every
second, the replicas Serve runs and the worker nodes Ray has; every request
records its status, ``Retry-After``, time to first token and whether its
stream ended properly. ``timeline`` folds both into 10-second windows.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import openai

PROMPTS = (
    "What is the capital of France?",
    "Name three colours of the rainbow.",
    "Describe a lighthouse keeper's morning in two sentences.",
    "Which planet is closest to the sun?",
    "Write a haiku about a quiet harbour.",
    "List two uses of copper wire.",
)


@dataclass
class Phase:
    name: str
    concurrency: int
    min_s: float
    max_s: float
    # Ends the phase once it holds (after min_s); a phase whose max_s passes first is reported as timed out.
    until: Callable[[Sample], bool] | None = None
    # Called once when the phase ends (a snapshot of the cluster, say).
    on_end: Callable[[], None] | None = None


@dataclass
class Sample:
    t: float
    replicas: int  # running
    starting: int  # asked for by Serve, not running yet (waiting for a node, or its engine starting)
    nodes: int
    load: int


@dataclass
class Outcome:
    model: str
    start: float
    end: float = 0.0
    status: int = 200
    ttft: float | None = None
    retry_after: str | None = None
    cut: bool = False
    error: str = ""


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    phases: list[tuple[str, float, float, bool]] = field(default_factory=list)  # name, start, end, condition met


async def _one(client: openai.AsyncOpenAI, model: str, prompt: str, t0: float, max_tokens: int) -> Outcome:
    out = Outcome(model=model, start=time.monotonic() - t0)
    finished = False
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            stream=True,
        )
        async for chunk in stream:
            if out.ttft is None and chunk.choices:  # the first chunk with choices, as vLLM's benchmark counts
                out.ttft = time.monotonic() - t0 - out.start
            if chunk.choices and chunk.choices[0].finish_reason:
                finished = True
        out.cut = not finished
    except openai.APIStatusError as e:
        out.status = e.status_code
        out.retry_after = e.response.headers.get("retry-after")
        out.error = str(e)[:200]
    except (openai.APIConnectionError, openai.APIError, httpx.HTTPError) as e:
        # A stream that broke after its 200 (a connection cut, an error event in-band), or a
        # connection that failed before one: either counts against the server.
        out.cut = True
        out.error = f"{type(e).__name__}: {str(e)[:200]}"
    out.end = time.monotonic() - t0
    return out


async def drive(
    base_url: str,
    models: list[str],
    phases: list[Phase],
    observe: Callable[[], tuple[int, int, int]],
    max_tokens: int = 48,
    api_key: str = "unused",
) -> Run:
    """Run ``phases`` one after another; ``observe()`` returns (running, starting replicas, nodes), each second."""
    run = Run()
    t0 = time.monotonic()
    target = {"c": 0}
    state = {"stop": False}
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=300)
    counter = {"n": 0}

    async def worker(slot: int) -> None:
        while not state["stop"]:
            if slot >= target["c"]:
                await asyncio.sleep(0.2)
                continue
            n = counter["n"]
            counter["n"] += 1
            out = await _one(client, models[n % len(models)], PROMPTS[n % len(PROMPTS)], t0, max_tokens)
            run.outcomes.append(out)
            if out.status != 200:
                await asyncio.sleep(min(float(out.retry_after or 1), 5.0))

    async def sampler() -> None:
        while not state["stop"]:
            replicas, starting, nodes = await asyncio.to_thread(observe)
            run.samples.append(Sample(time.monotonic() - t0, replicas, starting, nodes, target["c"]))
            await asyncio.sleep(1.0)

    width = max(p.concurrency for p in phases)
    tasks = [asyncio.create_task(worker(i)) for i in range(width)] + [asyncio.create_task(sampler())]
    try:
        for phase in phases:
            target["c"] = phase.concurrency
            start = time.monotonic() - t0
            met = phase.until is None
            while True:
                await asyncio.sleep(1.0)
                now = time.monotonic() - t0
                last = run.samples[-1] if run.samples else None
                if phase.until is not None and last is not None and now - start >= phase.min_s:
                    if phase.until(last):
                        met = True
                        break
                if phase.until is None and now - start >= phase.min_s:
                    break
                if now - start >= phase.max_s:
                    break
            run.phases.append((phase.name, start, time.monotonic() - t0, met))
            if phase.on_end is not None:
                await asyncio.to_thread(phase.on_end)
            if not met:
                break
    finally:
        target["c"] = 0
        state["stop"] = True
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
    return run


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def timeline(run: Run, window_s: float = 10.0) -> list[dict]:
    """Per window: load, replicas and nodes (last sample; replicas starting: most seen), requests by result,
    TTFT p50/p99 (ms)."""
    if not run.samples:
        return []
    end = max([s.t for s in run.samples] + [o.end for o in run.outcomes])
    rows = []
    w = 0.0
    while w < end:
        samples = [s for s in run.samples if w <= s.t < w + window_s]
        started = [o for o in run.outcomes if w <= o.start < w + window_s]
        ttfts = [o.ttft * 1000 for o in started if o.ttft is not None]
        last = samples[-1] if samples else None
        rows.append(
            {
                "t_s": int(w),
                "load": last.load if last else None,
                "replicas": last.replicas if last else None,
                "starting": max((x.starting for x in samples), default=None),
                "nodes": last.nodes if last else None,
                "requests": len(started),
                "ok": sum(o.status == 200 and not o.cut for o in started),
                "refused": sum(o.status in (429, 503) for o in started),
                "cut": sum(o.cut for o in started),
                "ttft_p50_ms": _pct(ttfts, 50),
                "ttft_p99_ms": _pct(ttfts, 99),
            }
        )
        w += window_s
    return rows


COLUMNS = (  # (title, width, row key)
    ("t (s)", 6, "t_s"),
    ("load", 4, "load"),
    ("repl", 4, "replicas"),
    ("+start", 6, "starting"),
    ("nodes", 5, "nodes"),
    ("req", 4, "requests"),
    ("ok", 4, "ok"),
    ("429/503", 7, "refused"),
    ("cut", 3, "cut"),
    ("TTFT p50", 9, "ttft_p50_ms"),
    ("p99", 7, "ttft_p99_ms"),
)


def format_timeline(rows: list[dict], phases: list[tuple[str, float, float, bool]]) -> str:
    """The timeline as a table, each window named by the phase it is mostly in (TTFT in ms)."""

    def phase_at(t: float) -> str:
        return next((name for name, start, end, _ in phases if start <= t < end), "")

    def cell(v: object, width: int) -> str:
        text = "-" if v is None else f"{v:.0f}" if isinstance(v, float) else str(v)
        return text.rjust(width)

    lines = [" ".join([COLUMNS[0][0].rjust(6), "phase".ljust(8)] + [t.rjust(w) for t, w, _ in COLUMNS[1:]])]
    for r in rows:
        cells = [cell(r[key], w) for _, w, key in COLUMNS]
        lines.append(" ".join([cells[0], phase_at(r["t_s"] + 5).ljust(8), *cells[1:]]))
    return "\n".join(lines)
