"""make bench's server start (benchmarks/compare.py), without Ray or vLLM."""

from __future__ import annotations

import os
import sys

import psutil
import pytest

from benchmarks.compare import (
    parse_autogroup,
    ray_worker_niceness,
    session_group_niceness,
    set_session_niceness,
    spawn_server,
)


def test_vllm_runs_at_the_niceness_ray_gives_our_processes():
    assert ray_worker_niceness({}) == 15
    assert ray_worker_niceness({"RAY_worker_niceness": "0"}) == 0


def test_a_server_starts_at_that_niceness_in_a_session_of_its_own(tmp_path):
    base = os.nice(0)
    with open(tmp_path / "log", "w") as log:
        proc = spawn_server([sys.executable, "-c", "import time; time.sleep(30)"], dict(os.environ), log, niceness=5)
    try:
        assert psutil.Process(proc.pid).nice() == min(base + 5, 19)
        assert os.getsid(proc.pid) == proc.pid
        assert os.nice(0) == base  # the benchmark itself keeps its priority
    finally:
        proc.kill()
        proc.wait()


def test_a_process_in_no_autogroup_is_told_apart():
    # In a container whose CPU controller groups its processes, the file reads empty.
    assert parse_autogroup("/autogroup-12 nice 5\n") == 5
    assert parse_autogroup("") is None
    assert session_group_niceness(2**22 + 12345) is None
    assert set_session_niceness(2**22 + 12345, 7) is False


@pytest.mark.skipif(
    session_group_niceness(os.getpid()) is None, reason="scheduled by a cgroup's group, not an autogroup"
)
def test_a_servers_session_yields_to_the_benchmark_as_a_group(tmp_path):
    # Processes of another session are another scheduling group: their own
    # niceness does not rank them against the load generator; the group's does.
    mine = session_group_niceness(os.getpid())
    with open(tmp_path / "log", "w") as log:
        proc = spawn_server(
            [sys.executable, "-c", "import time; time.sleep(30)"], dict(os.environ), log, session_niceness=7
        )
    try:
        assert session_group_niceness(proc.pid) == 7
        assert session_group_niceness(os.getpid()) == mine
    finally:
        proc.kill()
        proc.wait()


def test_a_server_given_cpus_starts_on_them_only(tmp_path):
    # vLLM's server gets the placement make serve gives ours: its processes on the reserved CPU.
    mine = os.sched_getaffinity(0)
    last = max(mine)
    with open(tmp_path / "log", "w") as log:
        proc = spawn_server(
            [sys.executable, "-c", "import time; time.sleep(30)"], dict(os.environ), log, cpus=frozenset({last})
        )
    try:
        assert psutil.Process(proc.pid).cpu_affinity() == [last]
        assert os.sched_getaffinity(0) == mine  # the benchmark itself (the load generator) is not placed
    finally:
        proc.kill()
        proc.wait()
