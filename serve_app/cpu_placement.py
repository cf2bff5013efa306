"""Where a one-machine CPU deployment's processes run.

vLLM's CPU worker binds its OpenMP threads to cores and, by default, leaves
one CPU per worker out of them "for the scheduler process" (its EngineCore),
but nothing keeps the other processes off the worker's cores: the API
server, the EngineCore (which busy-waits on the worker) and, for us, Ray's
and Serve's processes land there whenever the OS puts them there, and each
time the worker, which makes the tokens, waits. On the 2-core dev box that
cost ours 5-25% of its throughput (14% on average) at 32 concurrent streams (docs/benchmarks.md).

``plan`` gives the placement that finishes vLLM's own intent: the worker's
OpenMP threads on every allowed CPU but the reserved ones
(``VLLM_CPU_OMP_THREADS_BIND``), everything else (this process and all it
starts: Ray, Serve, the replica actor, vLLM's EngineCore) on the reserved
ones. It applies only where it is unambiguous: every engine on CPU, one
engine replica of one worker (tensor-parallel CPU workers keep vLLM's own
binding, see ``app.replica_options``), no binding set by the user, and a
CPU left for the worker. GPU deployments and clusters are not touched.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from serve_app.config import AppConfig, serve_config_applications

BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"
RESERVED_ENV = "VLLM_CPU_NUM_OF_RESERVED_CPU"


@dataclass(frozen=True)
class CpuPlacement:
    frontend: frozenset[int]  # every process but vLLM's CPU worker
    engine: tuple[int, ...]  # the worker's OpenMP threads

    @property
    def engine_bind(self) -> str:
        """The value of ``VLLM_CPU_OMP_THREADS_BIND`` for the worker."""
        return ",".join(map(str, self.engine))

    def describe(self) -> str:
        return f"vLLM's CPU worker on CPUs {self.engine_bind}; every other process on {sorted(self.frontend)}"


@dataclass(frozen=True)
class Skipped:
    reason: str

    def describe(self) -> str:
        return f"no CPU placement ({self.reason})"


def plan(apps: Iterable[AppConfig], env: Mapping[str, str], allowed: Iterable[int]) -> CpuPlacement | Skipped:
    """The placement for these applications on these CPUs, or why there is none."""
    apps = list(apps)
    if not apps or any(a.engine.device != "cpu" for a in apps):
        return Skipped("not every engine runs on CPU")
    if sum(a.replica.autoscaling.max_replicas for a in apps) != 1:
        return Skipped("more than one engine replica (each would bind the same cores)")
    (app,) = apps
    if app.engine.tensor_parallel_size != 1:
        return Skipped("tensor-parallel CPU workers keep vLLM's own binding")
    if BIND_ENV in env or BIND_ENV in app.replica.env_vars:
        return Skipped(f"{BIND_ENV} is set: the binding is the user's")
    reserved = int(env.get(RESERVED_ENV) or app.replica.env_vars.get(RESERVED_ENV) or 1)
    if reserved < 1:
        return Skipped(f"{RESERVED_ENV}={reserved}: no CPU left for the other processes")
    cpus = sorted(set(allowed))
    if len(cpus) <= reserved:
        return Skipped(f"{len(cpus)} CPU(s) leave none for the worker beside {reserved} reserved")
    # vLLM's automatic binding reserves the last CPUs too.
    return CpuPlacement(frontend=frozenset(cpus[-reserved:]), engine=tuple(cpus[:-reserved]))


def for_serve_config(path: str | Path, env: Mapping[str, str], allowed: Iterable[int]) -> CpuPlacement | Skipped:
    """``plan`` for the applications of a Serve config file (``serve run``'s argument).

    A file that cannot be read or validated gets no placement, not an error:
    ``serve run`` reports what is wrong with it in its own words.
    """
    try:
        apps = []
        for app in serve_config_applications(path):
            if not str(app.get("import_path", "")).startswith("serve_app."):
                return Skipped(f"application {app.get('name')!r} is not this project's")
            apps.append(AppConfig.model_validate(app.get("args") or {}))
        return plan(apps, env, allowed)
    except (OSError, ValueError, yaml.YAMLError) as e:  # pydantic's ValidationError is a ValueError
        return Skipped(f"the config was not read: {type(e).__name__}")


def apply(placement: CpuPlacement) -> None:
    """Place this process (and what it starts from now on) and tell vLLM's worker where to go.

    Children inherit the affinity mask; vLLM's worker sets its own from the
    environment variable, which Ray's processes inherit from this one.
    """
    os.environ[BIND_ENV] = placement.engine_bind
    os.sched_setaffinity(0, placement.frontend)
