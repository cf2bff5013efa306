"""Background responses (``background: true``): run detached from the client, seen from any replica.

The run is two tasks in the API process that accepted it: the pump drives the
engine's events through the response writer (the same events a stream
carries) into a pending list; the sync loop sends what is pending to the
response store every ``FLUSH_S`` with the response as it stands (``runs``):
that is its heartbeat, and the store's answer says whether to stop (a cancel,
from any replica). The client's connection plays no part: it may close, and
polls or resumes through any replica read the store.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from serve_app.api.core import ChoiceEvent
from serve_app.api.http import Outcome, peek
from serve_app.endpoints.responses.service import ResponseRun
from serve_app.protocol.errors import ServeAppError

logger = logging.getLogger("ray.serve")

# How often a run's new events reach the store (and it beats).
FLUSH_S = 0.2
CANCELLED_MESSAGE = "The response was cancelled."

EventObjects = Callable[[ResponseRun, ChoiceEvent, AsyncIterator[ChoiceEvent], Outcome], AsyncIterator[dict[str, Any]]]


class BackgroundRuns:
    """This process's background runs (kept referenced while they run)."""

    def __init__(self, store: Any):
        self._store = store
        self._running: dict[str, asyncio.Task] = {}

    def ids(self) -> list[str]:
        """The responses running here now."""
        return sorted(self._running)

    async def start(
        self,
        run: ResponseRun,
        events: AsyncIterator[ChoiceEvent],
        event_objects: EventObjects,
        on_end: Callable[[Outcome], None],
    ) -> dict[str, Any]:
        """Store the queued response, start the run; the response as the client first sees it."""
        owner = run.job.principal.name
        run.writer.status = "queued"
        first = run.writer.response()
        await self._store.run_start.remote(owner, first, run.input_items)
        task = asyncio.create_task(self._run(run, events, event_objects, on_end))
        logger.info("responses %s runs in the background in pid %d", run.writer.id, os.getpid())
        self._running[run.writer.id] = task
        task.add_done_callback(lambda _: self._running.pop(run.writer.id, None))
        return first

    async def _run(
        self,
        run: ResponseRun,
        events: AsyncIterator[ChoiceEvent],
        event_objects: EventObjects,
        on_end: Callable[[Outcome], None],
    ) -> None:
        owner, id, w = run.job.principal.name, run.writer.id, run.writer
        pending: list[dict[str, Any]] = []
        outcome = Outcome()
        cancelled = False

        async def pump() -> None:
            w.status = "in_progress"
            try:
                first = await peek(events)
                async for event in event_objects(run, first, events, outcome):
                    pending.append(event)
                outcome.status = 200
            except ServeAppError as e:
                outcome.status = e.status
                pending.extend(w.failed_with(e.status, e.message))
            except asyncio.CancelledError:
                outcome.status = 499
                if cancelled:
                    pending.extend(w.cancelled())
                else:
                    raise
            except Exception:
                outcome.status = 500
                logger.exception("background response %s failed", id)
                pending.extend(w.failed("server_error", "The server had an error while running this response."))
            finally:
                await events.aclose()  # type: ignore[attr-defined]

        pumping = asyncio.create_task(pump())
        try:
            while True:
                finished = pumping.done()
                batch, pending[:] = pending[:], []
                answer = await _retrying(functools.partial(self._append, owner, id, batch, w.response()))
                if finished:
                    break
                if answer["cancel"] and not pumping.done():
                    cancelled = not answer["lost"]
                    pumping.cancel()
                    # The cancelled response goes out on the next round.
                    await asyncio.wait([pumping])
                    continue
                await asyncio.wait([pumping], timeout=FLUSH_S)
        except BaseException:
            pumping.cancel()
            raise
        finally:
            on_end(outcome)

    def _append(self, owner: str, id: str, events: list[dict[str, Any]], response: dict[str, Any]) -> Any:
        return self._store.run_append.remote(owner, id, events, response)


async def _retrying(call: Callable[[], Awaitable[dict[str, bool]]], attempts: int = 30) -> dict[str, bool]:
    """A store call, retried for a while (the store's actor restarting): then the run gives up."""
    for attempt in range(attempts):
        try:
            return await call()
        except Exception:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(1.0)
    raise AssertionError("unreachable")
