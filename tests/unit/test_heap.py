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
