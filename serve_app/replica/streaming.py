"""Pace a replica's token stream: fewer, larger chunks when the engine is fast.

vLLM already merges a request's delta outputs while nobody reads them (its
per-request ``RequestOutputCollector``). So pacing is only a matter of not
reading too often: after each chunk, wait ``interval_s`` before asking for the
next, and whatever the engine produced meanwhile comes as one chunk. No task
or queue per request: one timer per chunk, and none at all with an interval
of 0 (the default: on CPU and on a busy GPU each step is longer than any
useful interval, and the timer would be pure cost).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from serve_app.protocol.engine import TokenChunk


async def paced(source: AsyncGenerator[TokenChunk, None], interval_s: float) -> AsyncGenerator[TokenChunk, None]:
    """Yield ``source``'s chunks, reading it at most every ``interval_s`` after the first.

    The first chunk goes out as soon as it exists (it sets time to first
    token). Closing this iterator closes ``source`` (which aborts the engine
    request behind it).
    """
    try:
        async for chunk in source:
            yield chunk
            if interval_s > 0 and not chunk.finished:
                await asyncio.sleep(interval_s)
    finally:
        await source.aclose()
