"""Keep Serve's log handlers working across vLLM's logging setup.

vLLM 0.32 applies its logging config when an engine is created
(``AsyncEngineArgs.create_engine_config`` -> ``vllm.logger.configure_logging``
-> ``logging.config.dictConfig``). A non-incremental ``dictConfig`` first
closes every handler of the process (``logging._clearExistingHandlers``),
including the ``MemoryHandler`` that Ray Serve puts on the ``ray.serve``
logger of a replica, and closing a ``MemoryHandler`` drops its target. From
then on that handler keeps every record it is given and never writes one:
each request's access lines (Serve's and ours) stayed in the replica's memory
(+2.7 MiB per 1,000 requests in the LLMServer process, issue 35) and never
reached Serve's replica log file. Found with ``heap_diff`` (tracemalloc).

``keep_log_targets`` remembers each buffering handler's target before the
engine is made and gives it back afterwards; a closed file handler reopens
on its next record.
"""

from __future__ import annotations

import logging
import logging.handlers
from collections.abc import Iterator
from contextlib import contextmanager


def buffering_handlers() -> list[logging.handlers.MemoryHandler]:
    """Every MemoryHandler on a logger of this process (the root included)."""
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in logging.Logger.manager.loggerDict)]
    seen: dict[int, logging.handlers.MemoryHandler] = {}
    for lg in loggers:
        for h in lg.handlers:
            if isinstance(h, logging.handlers.MemoryHandler):
                seen[id(h)] = h
    return list(seen.values())


@contextmanager
def keep_log_targets() -> Iterator[None]:
    """Around code that may reconfigure logging: buffering handlers keep (or get back) their targets."""
    targets = [(h, h.target) for h in buffering_handlers() if h.target is not None]
    try:
        yield
    finally:
        for handler, target in targets:
            if handler.target is None:
                handler.setTarget(target)
