"""make bench's server start (benchmarks/compare.py), without Ray or vLLM."""

from __future__ import annotations

import os
import sys

import psutil

from benchmarks.compare import ray_worker_niceness, spawn_server


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
