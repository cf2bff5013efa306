"""The engine worker's cores kept to the worker (serve_app.replica.cpu_cores), without Ray or vLLM."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from serve_app.replica.cpu_cores import bound_cores, front_end_cores, isolate_engine_workers

ALL = {0, 1, 2, 3}


def test_a_workers_cores_are_its_threads_narrower_masks():
    # OpenMP binds its threads; vLLM's other worker threads may keep every core.
    assert bound_cores([{0}, {1}, ALL], ALL) == {0, 1}
    assert bound_cores([{0, 1}, {0, 1}], ALL) == {0, 1}


def test_an_unbound_worker_has_no_cores():
    assert bound_cores([ALL, ALL], ALL) == set()
    assert bound_cores([], ALL) == set()


def test_the_front_end_gets_what_the_workers_leave():
    assert front_end_cores(ALL, [{0}]) == {1, 2, 3}
    assert front_end_cores(ALL, [{0}, {1}]) == {2, 3}


@pytest.mark.parametrize(
    "workers",
    [
        pytest.param([], id="no workers"),
        pytest.param([set()], id="an unbound worker"),
        pytest.param([{0}, set()], id="one of two unbound"),
        pytest.param([{0, 1}, {2, 3}], id="workers on every core"),
    ],
)
def test_nothing_confined_without_a_core_reserved(workers):
    assert front_end_cores(ALL, workers) == set()


def _child(title: str, core: int | None = None) -> subprocess.Popen:
    """A process whose command line carries ``title`` (as vLLM's process titles do), bound to ``core``."""
    bind = f"os.sched_setaffinity(0, {{{core}}}); " if core is not None else ""
    code = f"import os, sys, time; {bind}print('ready', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code, title], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_this_process_and_the_scheduler_leave_the_workers_core():
    allowed = os.sched_getaffinity(0)
    worker_core = min(allowed)
    worker = _child("VLLM::Worker", worker_core)
    scheduler = _child("VLLM::EngineCore")
    try:
        placement = isolate_engine_workers()
        rest = allowed - {worker_core}
        assert placement.worker_cores == (worker_core,)
        assert set(placement.front_end_cores) == rest
        assert set(placement.confined_pids) == {os.getpid(), scheduler.pid}
        for pid in (os.getpid(), scheduler.pid):
            for tid in os.listdir(f"/proc/{pid}/task"):
                assert os.sched_getaffinity(int(tid)) == rest
        assert os.sched_getaffinity(worker.pid) == {worker_core}  # the worker keeps vLLM's binding
        # Threads started afterwards inherit the confinement.
        seen: list[set[int]] = []
        t = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
        t.start()
        t.join()
        assert seen == [rest]
    finally:
        for tid in os.listdir(f"/proc/{os.getpid()}/task"):
            os.sched_setaffinity(int(tid), allowed)
        for p in (worker, scheduler):
            p.kill()
            p.wait()


def test_unbound_workers_leave_everything_where_it_was():
    allowed = os.sched_getaffinity(0)
    worker = _child("VLLM::Worker")
    try:
        placement = isolate_engine_workers()
        assert placement.front_end_cores == () and placement.confined_pids == ()
        assert os.sched_getaffinity(0) == allowed
    finally:
        worker.kill()
        worker.wait()
