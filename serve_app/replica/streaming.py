"""Coalesce a token stream into fewer, larger chunks.

One Ray RPC per token costs more than the token; the replica instead sends what
accumulated over a short interval. The first chunk goes out at once (it sets
time to first token); the final one carries the finish reason and counts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from serve_app.protocol.engine import TokenChunk, merge_chunks

_END = object()


async def coalesce(source: AsyncIterator[TokenChunk], interval_s: float) -> AsyncIterator[TokenChunk]:
    """Yield merged chunks of ``source`` at most every ``interval_s`` seconds.

    Closing or cancelling this iterator cancels the task that reads ``source``,
    which closes it (and so aborts the engine request behind it).
    """
    if interval_s <= 0:
        async for chunk in source:
            yield chunk
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump() -> None:
        try:
            async for chunk in source:
                queue.put_nowait(chunk)
        except Exception as e:  # re-raised in the consumer
            queue.put_nowait(e)
        finally:
            queue.put_nowait(_END)

    task = asyncio.create_task(pump())
    first = True
    try:
        while True:
            item = await queue.get()
            if not first and item is not _END and not isinstance(item, Exception):
                await asyncio.sleep(interval_s)
            first = False
            pending = [item]
            while not queue.empty():
                pending.append(queue.get_nowait())
            chunks = [c for c in pending if isinstance(c, TokenChunk)]
            if chunks:
                yield merge_chunks(chunks)
            for c in pending:
                if isinstance(c, Exception):
                    raise c
            if pending[-1] is _END:
                return
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
