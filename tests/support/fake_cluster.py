"""A multi-node Ray cluster on one machine, scaled by Ray's own autoscaler.

Ray ships a node provider for exactly this, ``fake_multinode``: the head's
autoscaler (the real one, ``ray start --head --autoscaling-config``) launches
and terminates "nodes" that are raylets on this machine, each with the
resources of its node type. ``ray.cluster_utils.AutoscalingCluster`` wraps
it, but it begins and ends with ``ray stop --force`` (every Ray on the
machine) and reads an example config the wheel does not ship; this starts the
same head with a config of ours, in a temp dir of its own, and stops only the
processes of its own session.

The node types mirror ``cluster.yaml``: a head that runs no engine (no CPU
for an engine bundle; the ``serve_app_head`` resource for the adapter manager
and the response store) and an engine worker type the autoscaler adds and
removes as Serve asks for replicas.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.support.constants import free_port


@dataclass
class NodeType:
    """An autoscaler node type: its resources and how many workers of it may run."""

    resources: dict[str, float]
    max_workers: int
    min_workers: int = 0
    # Each fake node has an object store of its own in /dev/shm; the default (30% of RAM) is far too much.
    object_store_bytes: int = 100 << 20

    def as_config(self) -> dict[str, Any]:
        return {
            "resources": {**self.resources, "object_store_memory": self.object_store_bytes},
            "node_config": {},
            "min_workers": self.min_workers,
            "max_workers": self.max_workers,
        }


HEAD_TYPE = "ray.head.default"


@dataclass
class FakeCluster:
    """A head (started here) and worker nodes (started by Ray's autoscaler on demand)."""

    head_resources: dict[str, float]
    worker_types: dict[str, NodeType]
    idle_timeout_s: float = 15.0
    head_object_store_bytes: int = 150 << 20
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sac-", dir="/tmp")))
    session: str = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def autoscaling_config(self) -> dict[str, Any]:
        """What ``ray up`` would give the head's autoscaler, for the fake_multinode provider."""
        types = {name: t.as_config() for name, t in self.worker_types.items()}
        types[HEAD_TYPE] = {"resources": dict(self.head_resources), "node_config": {}, "max_workers": 0}
        return {
            "cluster_name": "serve-app-local",
            "max_workers": sum(t.max_workers for t in self.worker_types.values()),
            "upscaling_speed": 1.0,
            "idle_timeout_minutes": self.idle_timeout_s / 60,
            "provider": {
                "type": "fake_multinode",
                # New nodes join this head (the provider's default is port 6379).
                "gcs_address": self.address,
                # The autoscaler tells the nodes apart by their ids, since they share this machine's IP.
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
            },
            "auth": {},
            "head_node_type": HEAD_TYPE,
            "available_node_types": types,
            "docker": {},
            "file_mounts": {},
            "cluster_synced_files": [],
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
        }

    def start(self) -> str:
        """Start the head and its autoscaler; returns the GCS address to ``ray.init``."""
        config = self.temp_dir / "autoscaling.json"
        config.write_text(json.dumps(self.autoscaling_config()))
        resources = {k: v for k, v in self.head_resources.items() if k not in ("CPU", "GPU")}
        cmd = [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            f"--port={self.port}",
            f"--num-cpus={self.head_resources.get('CPU', 0)}",
            f"--num-gpus={self.head_resources.get('GPU', 0)}",
            f"--resources={json.dumps(resources)}",
            f"--object-store-memory={self.head_object_store_bytes}",
            f"--temp-dir={self.temp_dir}",
            f"--autoscaling-config={config}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            # Metrics every second (Ray's default: 10 s), for the per-node request counts.
            "--system-config=" + json.dumps({"metrics_report_interval_ms": 1000}),
        ]
        env = {
            **os.environ,
            "RAY_FAKE_CLUSTER": "1",
            # The autoscaler's loop every second (its default: 5 s).
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            **self.env,
        }
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        self.session = os.path.basename(os.path.realpath(self.temp_dir / "session_latest"))
        return self.address

    def processes(self) -> list[psutil.Process]:
        """This cluster's processes (their command lines name its session) and everything under them."""
        if not self.session:
            return []
        marked: list[psutil.Process] = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if any(self.session in part for part in proc.info["cmdline"] or ()):
                    marked.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        seen = {p.pid: p for p in marked}
        for proc in marked:
            try:
                for child in proc.children(recursive=True):
                    seen.setdefault(child.pid, child)
            except psutil.NoSuchProcess:
                continue
        return [p for pid, p in seen.items() if pid != os.getpid()]

    def stop(self) -> None:
        """Kill this cluster's processes (never ``ray stop``: other Rays on the machine are not ours).

        Its temp dir (logs included) goes too, unless ``CLUSTER_KEEP_LOGS`` is set.
        """
        procs = self.processes()
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(procs, timeout=10)
        if not os.environ.get("CLUSTER_KEEP_LOGS"):
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def worker_nodes(self) -> list[dict[str, Any]]:
        """The alive nodes the autoscaler started (the head excluded), from the GCS."""
        import ray

        return [n for n in ray.nodes() if n["Alive"] and not n["Resources"].get("node:__internal_head__")]

    def wait_for(self, predicate: Any, timeout_s: float, what: str, interval_s: float = 1.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
            time.sleep(interval_s)
