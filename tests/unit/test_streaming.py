from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from serve_app.protocol.engine import TokenChunk
from serve_app.replica.streaming import paced


async def _source(n: int, delay: float, fail: bool = False, closed: list | None = None, pulls: list | None = None):
    try:
        for i in range(n):
            if pulls is not None:
                pulls.append(time.monotonic())
            await asyncio.sleep(delay)
            yield TokenChunk(token_ids=[i], finish_reason="stop" if i == n - 1 else None, completion_tokens=i + 1)
        if fail:
            raise RuntimeError("engine failed")
    finally:
        if closed is not None:
            closed.append(True)


def test_first_chunk_at_once_then_at_most_every_interval():
    pulls: list[float] = []

    async def run():
        start = time.monotonic()
        out = []
        async for c in paced(_source(5, 0, pulls=pulls), 0.02):
            out.append((time.monotonic() - start, c))
        return out

    out = asyncio.run(run())
    assert out[0][0] < 0.015 and out[0][1].token_ids == [0]
    gaps = [b - a for a, b in itertools.pairwise(pulls)]
    assert min(gaps) >= 0.018
    assert out[-1][1].finish_reason == "stop" and out[-1][1].completion_tokens == 5


def test_error_propagates_after_tokens():
    async def run():
        got = []
        with pytest.raises(RuntimeError, match="engine failed"):
            async for c in paced(_source(3, 0, fail=True), 0.001):
                got.extend(c.token_ids)
        return got

    assert asyncio.run(run()) == [0, 1, 2]


@pytest.mark.parametrize("interval", [0, 0.005], ids=["unpaced", "paced"])
def test_closing_the_stream_closes_the_source(interval):
    closed: list = []

    async def run():
        gen = paced(_source(1000, 0.001, closed=closed), interval)
        await gen.__anext__()
        await gen.aclose()

    asyncio.run(run())
    assert closed == [True]


def test_zero_interval_passes_through():
    async def run():
        return [c async for c in paced(_source(5, 0), 0)]

    assert len(asyncio.run(run())) == 5


def test_wire_form_round_trips():
    chunk = TokenChunk([1, 2], "stop", 200012, 85, 2, [[(1, -0.5), (3, -1.0)], [(2, -0.1)]])
    wire = chunk.to_wire()
    assert isinstance(wire, list)
    assert TokenChunk.from_wire(wire) == chunk
    assert TokenChunk.from_wire(chunk) is chunk


@pytest.mark.parametrize("asgi", ["2.4", "2.3"])
def test_a_client_gone_before_the_first_byte_still_ends_the_stream(asgi):
    """The response start fails (ASGI 2.4: send raises) or the disconnect wins the race
    (older servers): the body never runs, yet the engine requests are aborted and the
    request ends once (499), which frees the tenant's quota slot."""
    from serve_app.api.http import Outcome, sse_response

    closed: list = []
    ended: list[int] = []

    async def body():
        yield b"data: never\n\n"

    async def run():
        events = _source(3, 0, closed=closed)
        await anext(events)  # the first engine event, taken before the response (``peek``)
        outcome = Outcome()
        response = sse_response(body(), events, outcome, lambda e: b"", lambda o: ended.append(o.status))

        async def receive():
            return {"type": "http.disconnect"}

        async def send(message):
            if asgi == "2.4":
                raise OSError("client gone")
            await asyncio.Event().wait()  # never written: the disconnect wins

        scope = {"type": "http", "asgi": {"spec_version": asgi}}
        try:
            await response(scope, receive, send)
        except Exception:
            pass  # ClientDisconnect, as Starlette raises it

    asyncio.run(run())
    assert closed == [True] and ended == [499]
