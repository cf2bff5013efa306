"""The control flow every generating endpoint shares, written once.

Parse the body, accept (validate, resolve, render: typed 4xx), run the jobs on
the generation core, then either stream (the first event awaited before the
200, errors in-band, the engine requests aborted if the body stops early) or
collect a JSON body; every ending is recorded once (metrics and access line).
An endpoint says only what is its own: how it accepts, which jobs it runs, and
its output shapes.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from serve_app.api import sse
from serve_app.api.auth import Principal
from serve_app.api.context import Services
from serve_app.api.core import ChoiceEvent, Job
from serve_app.api.http import Outcome, json_response, peek, sse_response
from serve_app.protocol.errors import ServeAppError
from serve_app.quotas.gate import UNCOUNTED, Admission

RunT = TypeVar("RunT")


class GenerationEndpoint(ABC, Generic[RunT]):
    # The endpoint's name in the access log.
    name: str = ""
    # The stream's last event after its own (chat and completions: ``data: [DONE]``).
    done: bytes | None = sse.DONE

    def __init__(self, services: Services):
        self._s = services

    @abstractmethod
    async def accept(self, body: Any, principal: Principal, arrived: float, **context: Any) -> RunT:
        """The request validated, resolved and rendered (typed 4xx); ``context``: what a transport adds."""

    @abstractmethod
    def jobs(self, run: RunT) -> list[Job]: ...

    @abstractmethod
    def streamed(self, run: RunT) -> bool: ...

    @abstractmethod
    def stream(
        self, run: RunT, first: ChoiceEvent, events: AsyncIterator[ChoiceEvent], outcome: Outcome
    ) -> AsyncIterator[bytes]:
        """The SSE events of a stream whose first engine event is in hand; sets ``outcome.completion_tokens``."""

    @abstractmethod
    async def collect(self, run: RunT, events: AsyncIterator[ChoiceEvent]) -> tuple[dict, int]:
        """The whole JSON body and its completion tokens."""

    async def detach(self, run: RunT, events: AsyncIterator[ChoiceEvent], admission: Admission) -> Response | None:
        """Run it apart from this connection (and answer for it), or None: the request runs here."""
        return None

    def error_event(self, run: RunT, err: ServeAppError) -> bytes:
        """An error after the stream started, in-band."""
        return sse.encode(err.to_dict())

    async def begin(
        self, body: Any, principal: Principal, arrived: float, **context: Any
    ) -> tuple[RunT, AsyncIterator[ChoiceEvent], Admission]:
        """Accept, admit (the tenant's quota, before any engine work) and start the jobs.

        An error here is recorded as the request's ending; after it returns,
        the caller ends the request once with ``finished``.
        """
        run: RunT | None = None
        admission = UNCOUNTED
        try:
            run = accepted = await self.accept(body, principal, arrived, **context)
            jobs = self.jobs(accepted)
            if self._s.quotas is not None:
                # A tenant over its quota gets its 429 here.
                admission = await self._s.quotas.admit(principal, sum(j.prompt_tokens for j in jobs))
            return accepted, self._s.core.events_of(jobs), admission
        except BaseException as e:
            self._ended_by(e, run, arrived, admission)
            raise

    async def create(self, request: Request) -> Response:
        arrived = time.monotonic()
        principal = self._s.principal(request)
        try:
            body = await self._s.body(request)
        except ServeAppError as e:
            self.finished(None, e.status, arrived=arrived)
            raise
        run, events, admission = await self.begin(body, principal, arrived)
        try:
            detached = await self.detach(run, events, admission)
            if detached is not None:
                return detached
            if self.streamed(run):
                first = await peek(events)
                outcome = Outcome()
                return sse_response(
                    self.stream(run, first, events, outcome),
                    events,
                    outcome,
                    lambda e: self.error_event(run, e),
                    lambda o: self.finished(run, o.status, o.completion_tokens, admission=admission),
                    done=self.done,
                    what=f"{self.name} {self.jobs(run)[0].id}",
                    headers=admission.headers,
                )
            body, tokens = await self.collect(run, events)
        except BaseException as e:
            self._ended_by(e, run, arrived, admission)
            raise
        self.finished(run, 200, tokens, admission=admission)
        return json_response(body, headers=admission.headers)

    def _ended_by(self, e: BaseException, run: RunT | None, arrived: float, admission: Admission) -> None:
        """A request that ends with ``e``: a typed error is its status; anything else only frees its slot."""
        if isinstance(e, ServeAppError):
            self.finished(run, e.status, arrived=arrived, admission=admission)
        else:
            self._release(admission, 0)

    def _release(self, admission: Admission, completion_tokens: int) -> None:
        if self._s.quotas is not None:
            self._s.quotas.release(admission, completion_tokens)

    def finished(
        self,
        run: RunT | None,
        status: int,
        tokens: int = 0,
        arrived: float | None = None,
        admission: Admission = UNCOUNTED,
    ) -> None:
        self._release(admission, tokens)
        jobs = self.jobs(run) if run is not None else []
        self._s.core.finished(
            self.name,
            jobs[0] if jobs else None,
            status,
            tokens,
            arrived,
            prompt_tokens=sum(j.prompt_tokens for j in jobs) if jobs else None,
        )
