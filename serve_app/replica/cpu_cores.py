"""On vLLM's CPU platform, keep the engine worker's cores to the worker.

vLLM's CPU backend binds each worker's OpenMP threads to cores of their own
(``VLLM_CPU_OMP_THREADS_BIND``, default ``auto``) and leaves the other allowed
cores (``VLLM_CPU_NUM_OF_RESERVED_CPU``, at least one per worker) to the
engine's scheduler process and the serving front end. Nothing keeps those
off the worker's cores, though: the kernel runs them wherever it likes, and a
time slice one of them takes on a worker core is one the model's forward pass
waits for. vLLM's own server, whose front end is one process, mostly fits on
the reserved cores; a Ray node has more processes (this replica, Ray's
control processes, the HTTP ingress), and on the 2-core dev box the worker got
0.83-0.89 of its core instead of 0.98-1.00 (README, Benchmarks).

So once the engine is up, ``isolate_engine_workers`` confines every thread of
this replica's process and of the engine's scheduler process (EngineCore) to
the allowed cores no worker is bound to: the cores vLLM reserved for them.
Workers keep vLLM's binding; threads started later inherit the confinement.
Nothing is changed when the workers are not bound (``nobind``), when they are
bound to every allowed core (nothing reserved), or off the CPU platform (GPU
workers do their compute on the GPU: the config leaves this to CPU engines).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

logger = logging.getLogger("ray.serve")

WORKER_TITLES = ("VLLM::Worker", "VllmWorker")
SCHEDULER_TITLE = "EngineCore"


@dataclass(frozen=True)
class CorePlacement:
    """Where this replica's processes run: the workers' cores and the rest (empty: nothing confined)."""

    worker_cores: tuple[int, ...] = ()
    front_end_cores: tuple[int, ...] = ()
    confined_pids: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return {
            "worker_cores": list(self.worker_cores),
            "front_end_cores": list(self.front_end_cores),
            "confined_pids": list(self.confined_pids),
        }


def bound_cores(thread_masks: list[set[int]], allowed: set[int]) -> set[int]:
    """The cores a worker's threads are bound to: the union of the masks narrower than ``allowed``."""
    return set().union(*(m for m in thread_masks if m < allowed))


def front_end_cores(allowed: set[int], workers: list[set[int]]) -> set[int]:
    """The allowed cores no worker is bound to; empty when a worker is unbound or the workers take them all."""
    if not workers or any(not cores for cores in workers):
        return set()
    return allowed - set().union(*workers)


def _thread_masks(pid: int) -> list[set[int]]:
    masks = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            masks.append(os.sched_getaffinity(int(tid)))
        except OSError:  # the thread ended meanwhile
            pass
    return masks


def confine(pid: int, cores: set[int]) -> None:
    """Every thread of ``pid`` to ``cores`` (a process's affinity is per thread on Linux)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
        except OSError:  # the thread ended meanwhile
            pass


def isolate_engine_workers(pid: int | None = None) -> CorePlacement:
    """Confine ``pid`` (this process) and its engine's scheduler to the cores its engine's workers leave free."""
    import psutil

    me = psutil.Process(pid)
    allowed = os.sched_getaffinity(me.pid)
    workers: list[set[int]] = []
    schedulers: list[int] = []
    for child in me.children(recursive=True):
        try:
            title = " ".join(child.cmdline()) or child.name()
            if any(t in title for t in WORKER_TITLES):
                workers.append(bound_cores(_thread_masks(child.pid), allowed))
            elif SCHEDULER_TITLE in title:
                schedulers.append(child.pid)
        except (psutil.Error, OSError):  # gone meanwhile
            continue
    taken = tuple(sorted(set().union(*workers))) if workers else ()
    cores = front_end_cores(allowed, workers)
    if not cores:
        logger.info("engine workers on cores %s of %s: no core left to confine the front end to", taken, allowed)
        return CorePlacement(taken)
    pids = (me.pid, *schedulers)
    for p in pids:
        confine(p, cores)
    logger.info("engine workers keep cores %s; this replica and the engine scheduler run on %s", taken, cores)
    return CorePlacement(taken, tuple(sorted(cores)), pids)
