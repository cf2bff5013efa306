"""freeze_startup_heap: what the Router and LLMReplica call once they are built."""

from __future__ import annotations

import gc

from serve_app.heap import freeze_startup_heap


def test_startup_objects_are_frozen_and_later_garbage_still_collected():
    gc.unfreeze()
    try:
        startup = [object() for _ in range(100)]
        freeze_startup_heap()
        assert gc.get_freeze_count() >= len(startup)

        class Cycle:
            pass

        a, b = Cycle(), Cycle()
        a.other, b.other = b, a
        del a, b
        assert gc.collect() >= 2  # a cycle made after the freeze is still found
    finally:
        gc.unfreeze()


def test_heap_trace_names_the_site_that_grew(monkeypatch):
    import tracemalloc

    from serve_app.heap import HeapTrace

    monkeypatch.delenv(HeapTrace.ENV, raising=False)
    assert "tracing is off" in HeapTrace().diff()[0]
    monkeypatch.setenv(HeapTrace.ENV, "4")
    was_tracing = tracemalloc.is_tracing()
    trace = HeapTrace()
    try:
        assert trace.diff()[0].startswith("baseline taken")
        kept = [f"request-{i}" * 8 for i in range(20_000)]  # what a leak per request would look like
        report = "\n".join(trace.diff(top=3))
        assert "test_heap.py" in report and "KiB" in report
        assert len(kept) == 20_000
    finally:
        if not was_tracing:
            tracemalloc.stop()
