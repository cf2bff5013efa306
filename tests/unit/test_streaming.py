from __future__ import annotations

import asyncio

import pytest

from serve_app.protocol.engine import TokenChunk
from serve_app.replica.streaming import coalesce


async def _source(n: int, delay: float, fail: bool = False, closed: list | None = None):
    try:
        for i in range(n):
            await asyncio.sleep(delay)
            yield TokenChunk(token_ids=[i], finish_reason="stop" if i == n - 1 else None, completion_tokens=i + 1)
        if fail:
            raise RuntimeError("engine failed")
    finally:
        if closed is not None:
            closed.append(True)


def test_coalesces_but_sends_first_chunk_alone():
    async def run():
        return [c async for c in coalesce(_source(20, 0.001), 0.02)]

    chunks = asyncio.run(run())
    assert chunks[0].token_ids == [0]
    assert [t for c in chunks for t in c.token_ids] == list(range(20))
    assert len(chunks) < 20
    assert chunks[-1].finish_reason == "stop" and chunks[-1].completion_tokens == 20


def test_error_propagates_after_tokens():
    async def run():
        got = []
        with pytest.raises(RuntimeError, match="engine failed"):
            async for c in coalesce(_source(3, 0, fail=True), 0.01):
                got.extend(c.token_ids)
        return got

    assert asyncio.run(run()) == [0, 1, 2]


def test_closing_the_stream_closes_the_source():
    closed: list = []

    async def run():
        gen = coalesce(_source(1000, 0.001, closed=closed), 0.005)
        await gen.__anext__()
        await gen.aclose()
        await asyncio.sleep(0.01)

    asyncio.run(run())
    assert closed == [True]


def test_zero_interval_passes_through():
    async def run():
        return [c async for c in coalesce(_source(5, 0), 0)]

    assert len(asyncio.run(run())) == 5
