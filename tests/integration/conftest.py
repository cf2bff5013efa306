"""Session fixtures: the dev model, one local Ray + Serve, the real engine.

Ray, Serve and each engine start once for the whole run. Serve binds to
127.0.0.1 on a free port. Only the processes started here are stopped here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

# The Serve settings `make serve` runs with (see the Makefile), for every Ray
# process this session starts (they inherit the environment): the suite tests
# what users run; RAY_SERVE_THROUGHPUT_OPTIMIZED=0 tests Serve's defaults.
# Not for this process: the tests call handles synchronously, which the
# optimized mode's handles (no router thread of their own) do not allow. Serve
# reads the setting when it is imported, so import it first.
import ray.serve._private.constants  # noqa: F401
import yaml

from tests.support.constants import (
    ADMIN_KEY,
    API_KEY,
    DEV_ADAPTERS,
    GPTOSS_DEV_ADAPTERS,
    GPTOSS_FETCH_TIMEOUT_S,
    GPTOSS_ONGOING,
    GPTOSS_QUEUED,
    METRICS_PORT,
    QUOTA_KEYS,
    QUOTAS,
    TENANT_ADAPTERS,
    TENANT_KEYS,
    free_port,
)

os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
# A Router (direct ingress) that stops drains for at least this long, 30 s by
# default, so that external load balancers see it go; none watches the tests,
# where it cost a minute (the tp2 app's delete and the session's end).
os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "1")
# Serve replaces a dead HTTP proxy after three failed health checks, 10 s apart
# by default: the proxy-kill test waited 30 s for that, here 6.
os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S", "2")

REPO = Path(__file__).resolve().parents[2]
DEV_CONFIG = REPO / "configs" / "dev-cpu.yaml"

pytestmark = pytest.mark.integration


# The fixtures the selected tests use (closures), so that `apps` deploys only what they need.
_USED: set[str] = set()


def pytest_collection_modifyitems(items):
    """Fault tests kill the dev app's actors: run them after everything else.

    The gang app's tests go just before them: its fixture deletes apps that no
    later test uses, to make room for it (``gang_app``).
    """

    def late(item) -> tuple[bool, bool]:
        return item.get_closest_marker("faults") is not None, "gang_app" in getattr(item, "fixturenames", ())

    items.sort(key=late)


def pytest_collection_finish(session):
    for item in session.items:  # after -k and -m have deselected
        _USED.update(getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session", autouse=True)
def conformance():
    """Every answer of ours that an httpx client reads (the openai SDK included) is checked against
    OpenAI's published schemas (tests/support/conformance.py): a shape regression fails the test
    that met it."""
    from tests.support import conformance as spec

    patch = pytest.MonkeyPatch()
    spec.watch_httpx(patch)
    yield spec.VALIDATED
    patch.undo()


def pytest_terminal_summary(terminalreporter):
    from tests.support.conformance import VALIDATED

    if VALIDATED:
        counts = ", ".join(f"{name} {n}" for name, n in sorted(VALIDATED.items()))
        terminalreporter.write_line(f"conformance: {sum(VALIDATED.values())} bodies and events valid ({counts})")


@pytest.fixture(scope="session")
def devmodel_dir() -> Path:
    from serve_app.devmodel.paths import default_dir

    subprocess.run([sys.executable, "-m", "serve_app.devmodel", "build"], check=True)
    return default_dir()


@pytest.fixture(scope="session")
def corpus(devmodel_dir) -> list[dict]:
    return json.loads((devmodel_dir / "corpus.json").read_text())


_HTTP = {"port": free_port()}


@pytest.fixture(scope="session")
def serve_url(serve_session) -> str:
    """Serve's HTTP proxy on 127.0.0.1."""
    return f"http://127.0.0.1:{_HTTP['port']}"


@pytest.fixture(scope="session")
def serve_session(devmodel_dir):
    import ray
    from ray import serve

    # Routers read the admin key from their environment, inherited from here.
    os.environ["SERVE_APP_ADMIN_KEY"] = ADMIN_KEY
    # Metrics are exported every second (Ray's default: 10 s) on a port of our own.
    # Logical CPUs: one per engine bundle of the apps (dev, gptoss and direct one
    # each, tp2 two; pair's two come after tp2 and direct are gone), the light
    # deployments take none; with fewer, the last app's
    # replica waits for a CPU forever and the deploy with it. "local": a Ray of
    # its own even where another runs on the machine (a `ray start` left behind
    # is otherwise joined, and its CPUs and Serve are not the suite's).
    ray.init(
        address="local",
        num_cpus=5,
        include_dashboard=False,
        log_to_driver=False,
        _metrics_export_port=METRICS_PORT,
        _system_config={"metrics_report_interval_ms": 1000},
    )
    serve.start(http_options={"host": "127.0.0.1", "port": _HTTP["port"]})
    yield serve
    # Ray's shutdown ends this session's actors, and vLLM's processes under them
    # go with their parents. Serve's own graceful shutdown first cost 25-30 s
    # (a replica still starting is waited for), and no test needs it.
    ray.shutdown()


def dev_args() -> dict:
    """The dev config's args, with a stored-responses database of its own (not the user's)."""
    import tempfile

    args = yaml.safe_load(DEV_CONFIG.read_text())["applications"][0]["args"]
    args["responses"] = {"store_dir": tempfile.mkdtemp(prefix="serve-app-responses-")}
    return args


@pytest.fixture(scope="session")
def adapters_root(devmodel_dir, tmp_path_factory) -> Path:
    """The dev adapters plus malformed ones, in a root the replica is confined to."""
    root = tmp_path_factory.mktemp("adapters")
    for name in ("pirate", "terse"):
        shutil.copytree(devmodel_dir / "adapters" / name, root / name)
    # A third valid adapter, one more than the dev config's engine slots.
    shutil.copytree(devmodel_dir / "adapters" / "pirate", root / "pirate-copy")
    from tests.support import malformed

    malformed.populate(root, devmodel_dir / "adapters" / "pirate", tmp_path_factory.mktemp("outside"))
    return root


@pytest.fixture(scope="session")
def adapter_dirs(tmp_path_factory) -> dict[str, str]:
    """The manager's store and the replicas' cache, fresh for this run."""
    return {
        "store_dir": str(tmp_path_factory.mktemp("adapter-store")),
        "replica_cache_dir": str(tmp_path_factory.mktemp("adapter-cache")),
    }


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 in server mode on a free local port, started and stopped here."""
    import httpx

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(endpoint, timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.2)
    options = {"client_kwargs": {"endpoint_url": endpoint}, "key": "testing", "secret": "testing"}
    yield {"endpoint": endpoint, "options": options, "pid": proc.pid}
    proc.terminate()
    proc.wait(timeout=10)


def adapter_args(adapters_root: Path, adapter_dirs: dict[str, str], s3: dict | None = None) -> dict:
    args = dev_args()
    args["adapters"] = {**adapter_dirs, "source_roots": [str(adapters_root)], "refresh_s": 0.2}
    if s3:
        args["adapters"]["storage_options"] = {"s3": s3["options"]}
    return args


@pytest.fixture(scope="session")
def api_keys_file(tmp_path_factory) -> Path:
    entries = [{"key": API_KEY, "name": "ops"}] + [
        {"key": TENANT_KEYS[t], "name": t, "adapters": TENANT_ADAPTERS[t]} for t in TENANT_KEYS
    ]
    path = tmp_path_factory.mktemp("secrets") / "api-keys.yaml"
    path.write_text(yaml.safe_dump(entries))
    return path


@pytest.fixture(scope="session")
def quota_keys_file(tmp_path_factory) -> Path:
    """The gang app's keys: one without a quota, and the quota tenants."""
    entries = [{"key": API_KEY, "name": "calm"}] + [{"key": QUOTA_KEYS[t], "name": t, **QUOTAS[t]} for t in QUOTA_KEYS]
    path = tmp_path_factory.mktemp("quota-secrets") / "api-keys.yaml"
    path.write_text(yaml.safe_dump(entries))
    return path


def _llama_app(request) -> Any:
    from serve_app.app import build_app

    args = adapter_args(
        request.getfixturevalue("adapters_root"),
        request.getfixturevalue("adapter_dirs"),
        request.getfixturevalue("s3_server"),
    )
    args["auth"] = {"api_keys_file": str(request.getfixturevalue("api_keys_file"))}
    args["quotas"] = {"enabled": False}  # one actor less: no key here sets a quota
    return build_app(args)


def _gptoss_app(request, topology: str = "routed", replicas: int = 1, api_processes: int = 1) -> Any:
    """The gpt-oss dev model with LoRA on."""
    from serve_app.app import build_app

    tmp = request.getfixturevalue("tmp_path_factory")
    args = dev_args()
    args["topology"] = topology
    args["model"]["path"] = "devmodel:gptoss"
    args["adapters"] = {
        "store_dir": str(tmp.mktemp("gptoss-store")),
        "replica_cache_dir": str(tmp.mktemp("gptoss-cache")),
        "source_roots": [str(request.getfixturevalue("gptoss_source_root"))],
        "refresh_s": 0.2,
        "fetch_timeout_s": GPTOSS_FETCH_TIMEOUT_S,
        "fetch_attempts": 2,
    }
    # No keys configured: open, like `vllm serve` without --api-key.
    args["replica"].update(max_ongoing_requests=GPTOSS_ONGOING, max_queued_requests=GPTOSS_QUEUED)
    args["replica"]["autoscaling"].update(
        target_ongoing_requests=GPTOSS_ONGOING, min_replicas=replicas, max_replicas=replicas
    )
    # Serve's health checks every 2 s (10 by default): nothing here waits on them, they only cost less.
    args["replica"]["health_check_period_s"] = 2.0
    args["replica"]["api_processes"] = api_processes
    if api_processes > 1:
        # Quotas are counted over both API processes (tests/integration/test_quotas.py).
        args["auth"] = {"api_keys_file": str(request.getfixturevalue("quota_keys_file"))}
    else:
        args["quotas"] = {"enabled": False}  # one actor less: no key here sets a quota
    return build_app(args)


def _direct_app(request) -> Any:
    """The gptoss app's config in the direct topology: one LLMServer deployment."""
    return _gptoss_app(request, "direct")


def _pair_app(request) -> Any:
    """The direct topology on two replicas (the engine-kill test takes one's engine down)."""
    return _gptoss_app(request, "direct", replicas=2)


def _gang_app(request) -> Any:
    """The direct topology with two API processes around its one engine (a Serve gang)."""
    return _gptoss_app(request, "direct", api_processes=2)


def _tp2_app(request) -> Any:
    """The dev model with tensor-parallel size 2 on CPU (two worker bundles)."""
    from serve_app.app import build_app

    # Shares the dev app's store (SQLite in WAL mode: two managers may use it).
    args = adapter_args(request.getfixturevalue("adapters_root"), request.getfixturevalue("adapter_dirs"))
    args["engine"]["tensor_parallel_size"] = 2
    return build_app(args)


# fixture -> (app name, its builder); route prefix /<name>.
_APPS = {
    "llama_app": ("dev", _llama_app),
    "gptoss_app": ("gptoss", _gptoss_app),
    "tp2_app": ("tp2", _tp2_app),
    "direct_app": ("direct", _direct_app),
    "pair_app": ("pair", _pair_app),
    "gang_app": ("gang", _gang_app),
}
# Deployed when first asked for, not with the others: two more engines at the
# session's start took the box past its memory (Ray's OOM killer ended the run).
_LATE = {"pair_app", "gang_app"}
# The engine deployment of each app (its handle is what the app fixtures give).
_ENGINE = {"direct": "LLMServer", "pair": "LLMServer", "gang": "LLMServer"}


def _engine_handle(serve_session, name: str) -> Any:
    return serve_session.get_deployment_handle(_ENGINE.get(name, "LLMReplica"), app_name=name)


@pytest.fixture(scope="session")
def apps(request, serve_session) -> dict[str, Any]:
    """Every app the collected tests use, deployed in one call: their engines start together.

    An engine's start is mostly single-threaded imports, in its replica, then
    its EngineCore, then its worker process: started one after another, the
    three apps' engines took about 4 minutes and left a core idle. The peft
    reference (its own process) runs meanwhile too.
    """
    from ray.serve import RunTarget

    if "peft_reference" in _USED:
        request.getfixturevalue("_peft_run")
    wanted = [spec for fixture, spec in _APPS.items() if fixture in _USED and fixture not in _LATE]
    targets = [RunTarget(target=build(request), name=name, route_prefix=f"/{name}") for name, build in wanted]
    if targets:  # none when only late apps are used (one module run alone)
        serve_session.run_many(targets)
    return {name: _engine_handle(serve_session, name) for name, _ in wanted}


def _app(request, serve_session, name: str) -> Any:
    deployed = request.getfixturevalue("apps")
    if name not in deployed:  # in no collected test's closure: asked for at run time
        build = next(b for n, b in _APPS.values() if n == name)
        serve_session.run(build(request), name=name, route_prefix=f"/{name}")
        deployed[name] = _engine_handle(serve_session, name)
    return deployed[name]


@pytest.fixture(scope="session")
def llama_app(request, serve_session, adapters_root) -> Any:
    handle = _app(request, serve_session, "dev")
    manager = serve_session.get_deployment_handle("AdapterManager", app_name="dev")
    for name in DEV_ADAPTERS:
        manager.register.remote(name, str(adapters_root / name)).result()
    return handle


@pytest.fixture(scope="session")
def url(serve_url, llama_app) -> str:
    """The dev application's HTTP root."""
    return f"{serve_url}/dev"


@pytest.fixture(scope="session")
def client(url):
    """The official openai client on the dev application."""
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def refs(llama_app, serve_session) -> dict[str, str]:
    """Registered adapter name -> the ref replicas load it by (name@sha256-prefix)."""
    manager = serve_session.get_deployment_handle("AdapterManager", app_name="dev")
    return {name: a["ref"] for name, a in manager.view.remote().result()["adapters"].items()}


@pytest.fixture(scope="session")
def _peft_run(devmodel_dir, tmp_path_factory):
    """Started early (see `apps`): gpt-oss adapters made with peft, and their transformers outputs."""
    out = tmp_path_factory.mktemp("peft-made")
    script = REPO / "tests/integration/peft_reference.py"
    proc = subprocess.Popen([sys.executable, str(script), str(devmodel_dir / "gptoss"), str(out)])
    yield out, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def peft_reference(_peft_run) -> dict:
    """gpt-oss adapters made with peft now, and transformers + peft greedy outputs (own process)."""
    out, proc = _peft_run
    assert proc.wait(timeout=600) == 0, "tests/integration/peft_reference.py failed"
    return {"dir": out, **json.loads((out / "reference.json").read_text())}


@pytest.fixture(scope="session")
def gptoss_source_root(devmodel_dir, tmp_path_factory) -> Path:
    """The gpt-oss app's source root: its dev adapters and adapters vLLM cannot serve."""
    from tests.support import malformed

    root = tmp_path_factory.mktemp("gptoss-adapters")
    for name in GPTOSS_DEV_ADAPTERS.values():
        shutil.copytree(devmodel_dir / "adapters" / name, root / name)
    # The same weights as pirate under another name: a cold adapter for the fetch-timeout test.
    shutil.copytree(devmodel_dir / "adapters" / "gptoss-pirate", root / "cold")
    cfg = json.loads((devmodel_dir / "gptoss" / "config.json").read_text())
    malformed.populate_gptoss(
        root, devmodel_dir / "adapters" / "gptoss-pirate", cfg["hidden_size"], cfg["num_local_experts"]
    )
    return root


@pytest.fixture(scope="session")
def gptoss_adapters_root(gptoss_source_root, peft_reference) -> Path:
    """The same root, with the peft-made adapters in it too."""
    for name in ("attn", "full"):
        shutil.copytree(peft_reference["dir"] / name, gptoss_source_root / name)
    return gptoss_source_root


@pytest.fixture(scope="session")
def gptoss_app(request, serve_session) -> Any:
    """The gpt-oss dev model with LoRA on and its two adapters registered."""
    return _with_gptoss_adapters(request, serve_session, "gptoss")


def _with_gptoss_adapters(request, serve_session, name: str) -> Any:
    """App ``name`` deployed, with the gpt-oss dev adapters registered; its engine handle."""
    handle = _app(request, serve_session, name)
    root = request.getfixturevalue("gptoss_source_root")
    manager = serve_session.get_deployment_handle("AdapterManager", app_name=name)
    for adapter, folder in GPTOSS_DEV_ADAPTERS.items():
        manager.register.remote(adapter, str(root / folder)).result()
    return handle


@pytest.fixture(scope="session")
def gptoss_refs(gptoss_app, serve_session) -> dict[str, str]:
    manager = serve_session.get_deployment_handle("AdapterManager", app_name="gptoss")
    return {name: a["ref"] for name, a in manager.view.remote().result()["adapters"].items()}


@pytest.fixture(scope="session")
def direct_app(request, serve_session) -> Any:
    """The gpt-oss dev model in the direct topology, its two adapters registered (the LLMServer handle)."""
    return _with_gptoss_adapters(request, serve_session, "direct")


@pytest.fixture(scope="session")
def pair_app(request, serve_session) -> Any:
    """The direct topology on two replicas, the gpt-oss dev adapters registered (the LLMServer handle).

    Only fault tests use it, and they run last: the apps no fault test uses
    go first, so that its two engines fit beside the others (three engines
    fewer: ~9 GiB on this box).
    """
    _make_room(request, serve_session, ("tp2", "direct", "gang"))
    return _with_gptoss_adapters(request, serve_session, "pair")


def _make_room(request, serve_session, names: tuple[str, ...]) -> None:
    """Delete these apps (their engines' memory and CPUs) if they run."""
    deployed = request.getfixturevalue("apps")
    for name in names:
        if name in deployed:
            serve_session.delete(name)
            del deployed[name]


@pytest.fixture(scope="session")
def gang_app(request, serve_session) -> Any:
    """The direct topology with two API processes per engine, the gpt-oss dev adapters registered.

    Its tests run after the other tests of their tier (the fault test among the
    fault tests), so the apps only earlier tests use make room for it (two
    more processes: ~4 GiB on this box).
    """
    _make_room(request, serve_session, ("tp2", "direct", "pair"))
    return _with_gptoss_adapters(request, serve_session, "gang")


@pytest.fixture(scope="session")
def tp2_app(request, serve_session, refs) -> Any:
    """The dev model with tensor-parallel size 2 on CPU (two worker bundles)."""
    return _app(request, serve_session, "tp2")
