"""``serve_app.launch``: serve run after a Ray of our own starting, dashboard off unless asked (no Ray here)."""

from __future__ import annotations

import os

import pytest
import ray
from ray.serve import scripts

from serve_app import cpu_placement, launch


@pytest.fixture
def calls(monkeypatch):
    seen: dict = {}
    monkeypatch.setattr(ray, "init", lambda **kw: seen.setdefault("init", kw))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv(cpu_placement.BIND_ENV, raising=False)

    def place(p):
        # Before Ray starts, or its processes would not inherit it.
        assert "init" not in seen
        seen["placement"] = p

    monkeypatch.setattr(cpu_placement, "apply", place)

    def serve_cli(args, **kw):
        # serve run skips its own ray.init only when Ray is already up: ours must come first.
        assert "init" in seen
        seen["cli"] = (args, kw)

    monkeypatch.setattr(scripts.cli, "main", serve_cli)
    return seen


@pytest.mark.parametrize(
    ("argv", "dashboard"),
    [(["configs/dev-cpu-gptoss.yaml"], False), (["configs/dev-cpu-gptoss.yaml", "--dashboard"], True)],
    ids=["default-without-dashboard", "dashboard-on-request"],
)
def test_serve_run_of_the_config_on_a_ray_started_first(calls, argv, dashboard):
    launch.main(argv)
    assert calls["init"] == {"namespace": "serve", "include_dashboard": dashboard}
    assert calls["placement"] == cpu_placement.CpuPlacement(frontend=frozenset({1}), engine=(0,))
    args, kw = calls["cli"]
    assert args == ["run", "configs/dev-cpu-gptoss.yaml"]
    # Errors and Ctrl-C come back to us (and our exit ends the local Ray) rather than sys.exit inside click.
    assert kw["standalone_mode"] is False


def test_a_config_is_required(calls):
    with pytest.raises(SystemExit):
        launch.main([])
    assert calls == {}


def test_cpu_placement_can_be_left_to_the_os(calls):
    launch.main(["configs/dev-cpu-gptoss.yaml", "--no-cpu-placement"])
    assert "placement" not in calls
    assert calls["cli"][0] == ["run", "configs/dev-cpu-gptoss.yaml"]


def test_a_gpu_config_starts_with_no_placement(calls, capsys):
    launch.main(["configs/gpt-oss-20b.yaml"])
    assert "placement" not in calls
    assert calls["cli"][0] == ["run", "configs/gpt-oss-20b.yaml"]
    assert "no CPU placement" in capsys.readouterr().err
