"""Scale-up and scale-down on a real multi-node Ray cluster, with nothing lost.

The cluster (tests/support/fake_cluster.py): a head that runs no engine and
holds the adapter manager and the response store (``serve_app_head``), and
engine worker nodes that Ray's autoscaler adds and removes. The app is the
gpt-oss dev app of ``make serve`` (direct topology) with autoscaling on,
1 to 2 engine replicas. Load rises until Serve runs a second replica (on a
node the autoscaler added for it), holds, then falls until the replica is
drained away and its node removed. Every request must get a 200 with a whole
stream, or a clean 429/503 with Retry-After.

    make test-cluster      # prints the timeline (load, replicas, nodes, TTFT per 10 s)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.constants import free_port
from tests.support.fake_cluster import FakeCluster, NodeType
from tests.support.scale_load import Phase, drive, format_timeline, timeline

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]
APP = "gpt-oss"
DEPLOYMENT = "LLMServer"
MODELS = ["gpt-oss-20b", "gpt-oss-20b:pirate", "gpt-oss-20b:terse"]
HEAD_ONLY = {"serve_app_head": 1}

# The Serve settings `make serve` runs with, for every process of the cluster
# (the head's, and the nodes the autoscaler starts from it). A draining replica
# of the direct ingress stays listed for RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S
# (30 s by default, for outside load balancers); none watches here.
CLUSTER_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def app_args(tmp: Path) -> dict[str, Any]:
    """configs/dev-cpu-gptoss.yaml's app, autoscaled 1-2, its control plane pinned to the head."""
    doc = yaml.safe_load((REPO / "configs" / "dev-cpu-gptoss.yaml").read_text())
    args = doc["applications"][0]["args"]
    args["replica"]["autoscaling"] = {
        "min_replicas": 1,
        "max_replicas": 2,
        "target_ongoing_requests": 3,
        "upscale_delay_s": 2,
        "downscale_delay_s": 10,
    }
    args["replica"]["graceful_shutdown_timeout_s"] = 120
    args["adapters"]["store_dir"] = str(tmp / "adapter-store")
    args["adapters"]["resources"] = HEAD_ONLY
    args["responses"] = {"store_dir": str(tmp / "responses"), "resources": HEAD_ONLY}
    args["quotas"] = {"resources": HEAD_ONLY}
    return args


@pytest.fixture(scope="module")
def cluster():
    # The head: no CPU for an engine bundle (engines go to workers, as GPUs do in
    # cluster.yaml); workers: one engine each, up to two.
    c = FakeCluster(
        head_resources={"CPU": 0, "serve_app_head": 100},
        worker_types={"cpu_engine": NodeType({"CPU": 1}, max_workers=2)},
        idle_timeout_s=10,
        env=CLUSTER_ENV,
    )
    import ray

    try:
        ray.init(address=c.start(), log_to_driver=False)
        yield c
    finally:
        ray.shutdown()
        c.stop()


@pytest.fixture(scope="module")
def deployed(cluster):
    from ray import serve

    from serve_app.app import build_app

    port = free_port()
    # Serve's proxy on the head only: every fake node shares this machine's address and port.
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    tmp = Path(tempfile.mkdtemp(prefix="serve-app-cluster-"))
    started = time.monotonic()
    serve.run(build_app(app_args(tmp)), name=APP, route_prefix="/")
    print(f"\napp running {time.monotonic() - started:.0f} s after deploy (a node added for the first engine)")
    return f"http://127.0.0.1:{port}"


def replica_counts() -> tuple[int, int]:
    """(running, starting) engine replicas, as Serve's controller reports them."""
    from ray import serve

    status = serve.status().applications.get(APP)
    if status is None or DEPLOYMENT not in status.deployments:
        return 0, 0
    states = status.deployments[DEPLOYMENT].replica_states
    return int(states.get("RUNNING", 0)), int(states.get("STARTING", 0))


def actor_on(deployment: str) -> tuple[str, str, int]:
    """(actor id, node id, restarts) of a deployment's one alive replica actor, from the GCS.

    Ray's state API would ask the dashboard, which this cluster runs without.
    """
    from ray._private.state import actors

    alive = [a for a in actors(actor_state_name="ALIVE").values() if a["ActorClassName"].endswith(f":{deployment}")]
    assert len(alive) == 1, [a["ActorClassName"] for a in alive]
    return alive[0]["ActorID"], alive[0]["Address"]["NodeID"], alive[0]["NumRestarts"]


def requests_by_node(cluster: FakeCluster) -> dict[str, dict[str, int]]:
    """Per worker node (one engine replica each): 200s by adapter, from the node's own metrics."""
    out: dict[str, dict[str, int]] = {}
    for node in cluster.worker_nodes():
        text = httpx.get(f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics", timeout=10).text
        counts: dict[str, int] = {}
        for line in text.splitlines():
            if line.startswith("ray_serve_app_requests_total{") and 'status="200"' in line:
                adapter = re.search(r'adapter="([^"]*)"', line)
                name = (adapter.group(1) if adapter else "") or "base"
                counts[name] = counts.get(name, 0) + int(float(line.rsplit(" ", 1)[1]))
        out[node["NodeID"][-5:]] = counts
    return out


def test_scale_up_and_down_with_nothing_lost(cluster, deployed):
    import ray

    url = deployed
    # Something stored before the scale-up must be there after the scale-down.
    stored = httpx.post(
        f"{url}/v1/responses", json={"model": "gpt-oss-20b", "input": "What is the capital of France?"}, timeout=120
    )
    assert stored.status_code == 200, stored.text
    manager = actor_on("AdapterManager")
    store = actor_on("ResponseStore")
    head = next(n["NodeID"] for n in ray.nodes() if n["Resources"].get("node:__internal_head__"))
    assert manager[1] == head and store[1] == head, "the control plane must live on the head"

    def observe() -> tuple[int, int, int]:
        return *replica_counts(), len(cluster.worker_nodes())

    per_node: dict[str, dict[str, int]] = {}

    def snapshot() -> None:
        per_node.clear()
        per_node.update(requests_by_node(cluster))

    def both_serving(s) -> bool:
        # Two replicas on two nodes, and each node's engine has served requests.
        if s.replicas < 2 or s.nodes < 2:
            return False
        snapshot()
        return len(per_node) == 2 and all(sum(c.values()) >= 5 for c in per_node.values())

    phases = [
        Phase("steady", concurrency=1, min_s=15, max_s=15),
        Phase("rise", concurrency=12, min_s=20, max_s=420, until=both_serving),
        Phase("hold", concurrency=12, min_s=30, max_s=30, on_end=snapshot),
        Phase("fall", concurrency=2, min_s=10, max_s=300, until=lambda s: s.replicas == 1),
        Phase("idle", concurrency=0, min_s=5, max_s=180, until=lambda s: s.nodes == 1),
    ]
    run = asyncio.run(drive(f"{url}/v1", MODELS, phases, observe))
    rows = timeline(run)
    print()
    print(format_timeline(rows, run.phases))
    print("phases:", ", ".join(f"{n} {s:.0f}-{e:.0f} s{'' if met else ' (timed out)'}" for n, s, e, met in run.phases))
    print("200s per worker node (one engine each) at the end of the hold:", json.dumps(per_node))
    outcomes = run.outcomes
    print(
        f"requests {len(outcomes)}: 200 {sum(o.status == 200 for o in outcomes)}, "
        f"429/503 {sum(o.status in (429, 503) for o in outcomes)}, cut {sum(o.cut for o in outcomes)}"
    )
    out_dir = os.environ.get("CLUSTER_OUT")
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        saved = {"rows": rows, "phases": run.phases, "per_node": per_node}
        Path(out_dir, "timeline.json").write_text(json.dumps(saved))

    assert all(met for *_, met in run.phases), run.phases
    bad = [o for o in outcomes if o.status != 200 and not (o.status in (429, 503) and o.retry_after)]
    assert not bad, bad[:5]
    cut = [o for o in outcomes if o.cut]
    assert not cut, cut[:5]
    assert max(s.replicas for s in run.samples) == 2
    assert max(s.nodes for s in run.samples) == 2
    # Traffic spread over both engines, the new one included.
    assert len(per_node) == 2 and all(sum(c.values()) >= 20 for c in per_node.values()), per_node
    for model in MODELS:
        assert any(o.model == model and o.status == 200 for o in outcomes), model
    # Nothing lost: the control plane never moved or restarted, and what it holds is there.
    assert actor_on("AdapterManager") == manager
    assert actor_on("ResponseStore") == store
    got = httpx.get(f"{url}/v1/responses/{stored.json()['id']}", timeout=30)
    assert got.status_code == 200 and got.json()["id"] == stored.json()["id"]
    names = {m["id"] for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"]}
    assert {"gpt-oss-20b:pirate", "gpt-oss-20b:terse"} <= names, names
