"""``serve_app.cpu_placement``: vLLM's CPU worker alone on its cores, the rest on the reserved CPU (no Ray here)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from serve_app import cpu_placement
from serve_app.config import AppConfig

REPO = Path(__file__).resolve().parents[2]
DEV = REPO / "configs" / "dev-cpu-gptoss.yaml"


def dev_args() -> dict:
    return yaml.safe_load(DEV.read_text())["applications"][0]["args"]


def app(**changes) -> AppConfig:
    args = copy.deepcopy(dev_args())
    for dotted, value in changes.items():
        *path, key = dotted.split("__")
        node = args
        for part in path:
            node = node.setdefault(part, {})
        node[key] = value
    return AppConfig.model_validate(args)


def test_the_dev_config_on_two_cpus_gives_the_worker_one_and_the_rest_the_other():
    p = cpu_placement.plan([app()], {}, {0, 1})
    assert p == cpu_placement.CpuPlacement(frontend=frozenset({1}), engine=(0,))
    assert p.engine_bind == "0"


def test_reserved_cpus_are_the_last_ones_as_vllms_own_binding_reserves_them():
    p = cpu_placement.plan([app()], {cpu_placement.RESERVED_ENV: "2"}, [3, 0, 2, 1, 4, 5])
    assert p.frontend == {4, 5}
    assert p.engine_bind == "0,1,2,3"


@pytest.mark.parametrize(
    ("apps", "env", "allowed", "why"),
    [
        ([app(engine__device="gpu", engine__kv_cache_memory_bytes=None)], {}, {0, 1}, "CPU"),
        ([app(replica__autoscaling={"min_replicas": 1, "max_replicas": 2})], {}, {0, 1, 2, 3}, "replica"),
        ([app(), app()], {}, {0, 1, 2, 3}, "replica"),
        (
            [app(engine__tensor_parallel_size=2, replica__autoscaling={"max_replicas": 1})],
            {},
            {0, 1, 2, 3},
            "tensor-parallel",
        ),
        ([app()], {cpu_placement.BIND_ENV: "auto"}, {0, 1}, "user's"),
        ([app(replica__env_vars={cpu_placement.BIND_ENV: "0-1"})], {}, {0, 1}, "user's"),
        ([app()], {}, {0}, "none for the worker"),
        ([app()], {cpu_placement.RESERVED_ENV: "2"}, {0, 1}, "none for the worker"),
        ([], {}, {0, 1}, "CPU"),
    ],
    ids=[
        "gpu",
        "autoscaled",
        "two-apps",
        "tensor-parallel",
        "bind-in-env",
        "bind-in-config",
        "one-cpu",
        "all-reserved",
        "no-app",
    ],
)
def test_no_placement_where_it_would_be_ambiguous_or_not_ours_to_set(apps, env, allowed, why):
    skipped = cpu_placement.plan(apps, env, allowed)
    assert isinstance(skipped, cpu_placement.Skipped)
    assert why in skipped.reason


def test_a_serve_config_is_read_and_an_application_not_ours_is_left_alone(tmp_path):
    assert cpu_placement.for_serve_config(DEV, {}, {0, 1}) == cpu_placement.plan([app()], {}, {0, 1})
    doc = yaml.safe_load(DEV.read_text())
    doc["applications"].append({"name": "other", "import_path": "elsewhere:app", "route_prefix": "/x"})
    other = tmp_path / "serve.yaml"
    other.write_text(yaml.safe_dump(doc))
    skipped = cpu_placement.for_serve_config(other, {}, {0, 1})
    assert isinstance(skipped, cpu_placement.Skipped) and "'other'" in skipped.reason


def test_apply_places_this_process_and_tells_the_worker_where_to_go(monkeypatch):
    seen = {}
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: seen.update(pid=pid, cpus=set(cpus)))
    monkeypatch.delenv(cpu_placement.BIND_ENV, raising=False)
    cpu_placement.apply(cpu_placement.CpuPlacement(frontend=frozenset({1}), engine=(0,)))
    assert seen == {"pid": 0, "cpus": {1}}
    assert os.environ[cpu_placement.BIND_ENV] == "0"


@pytest.mark.parametrize(
    "text", ["applications: [", "applications:\n  - import_path: serve_app.app:build_app\n    args: {model: 3}\n"]
)
def test_a_config_serve_run_will_refuse_gets_no_placement_rather_than_an_error(tmp_path, text):
    # serve run reports the config's problem itself; the launcher must not crash before it.
    bad = tmp_path / "serve.yaml"
    bad.write_text(text)
    assert isinstance(cpu_placement.for_serve_config(bad, {}, {0, 1}), cpu_placement.Skipped)
    assert isinstance(cpu_placement.for_serve_config(tmp_path / "missing.yaml", {}, {0, 1}), cpu_placement.Skipped)


def test_no_cpus_reserved_is_refused_with_its_own_reason():
    skipped = cpu_placement.plan([app()], {cpu_placement.RESERVED_ENV: "0"}, {0, 1})
    assert isinstance(skipped, cpu_placement.Skipped) and cpu_placement.RESERVED_ENV in skipped.reason
