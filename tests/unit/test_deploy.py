"""The launch paths, checked offline: cluster.yaml against Ray's own autoscaler
schema and the Serve config it deploys; the KubeRay manifest against the same config."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from serve_app.config import load_config_file

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster.yaml"
RAYSERVICE = REPO / "deploy" / "kuberay" / "rayservice.yaml"
SECRET_PORTS = ("8265", "6379", "10001")


def _cluster() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def _deployed_config(cluster: dict) -> Path:
    cmd = next(c for c in cluster["head_start_ray_commands"] if "serve deploy" in c)
    return REPO / re.search(r"serve deploy (\S+)", cmd).group(1)


def _ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_cluster_yaml_passes_rays_schema():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    cluster = _cluster()
    jsonschema.validate(cluster, _ray_schema())
    # What `ray up` does before launching: the provider's defaults merged in,
    # then Ray's own check (schema plus its cross-field rules).
    validate_config(prepare_config(copy.deepcopy(cluster)))


@pytest.mark.parametrize(
    "path, value",
    [
        (("available_node_types", "gpu_h100", "min_workers"), "one"),
        (("provider", "region"), None),
        (("setup_commands",), "pip install"),
        (("unknown_field",), 1),
    ],
    ids=["type", "required", "list", "extra"],
)
def test_a_broken_cluster_yaml_fails_the_same_check(path, value):
    import jsonschema

    bad = _cluster()
    node = bad
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
        bad["provider"] = {"region": "x"}  # no provider type: required
    else:
        node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, _ray_schema())


def test_cluster_workers_match_the_serve_autoscaling_bounds():
    cluster = _cluster()
    cfg = load_config_file(_deployed_config(cluster))
    tp = cfg.engine.tensor_parallel_size
    gpu_types = {k: v for k, v in cluster["available_node_types"].items() if k.startswith("gpu_")}
    assert {"gpu_h100", "gpu_l40s"} <= set(gpu_types)
    # One GPU per worker node of either type: replicas == GPU nodes / tp.
    assert sum(t["max_workers"] for t in gpu_types.values()) == cfg.replica.autoscaling.max_replicas * tp
    assert sum(t["min_workers"] for t in gpu_types.values()) >= cfg.replica.autoscaling.min_replicas * tp
    assert cluster["max_workers"] >= sum(t["max_workers"] for t in gpu_types.values())
    # The router and the manager are pinned to the head by a resource only the head has.
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert "GPU" not in head["resources"]
    for pinned in (cfg.router.resources, cfg.adapters.resources):
        ((name, amount),) = pinned.items()
        assert head["resources"][name] >= amount * max(cfg.router.num_replicas, 1)
        assert all(name not in t["resources"] for t in gpu_types.values())
    start = " ".join(cluster["head_start_ray_commands"])
    assert "serve_app_head" in start and "--dashboard-host=127.0.0.1" in start


def test_cluster_installs_the_gpu_extra_and_mounts_configs_and_adapters():
    cluster = _cluster()
    setup = " ".join(cluster["setup_commands"])
    assert "[gpu]" in setup and "[cpu" not in setup
    mounted = set(cluster["file_mounts"].values()) - {RAY_TOKEN}
    assert {"./configs", "./adapters", "./serve_app", "./pyproject.toml"} <= mounted
    assert all((REPO / local).exists() for local in mounted)


RAY_TOKEN = "~/.ray/auth_token"


def test_ray_runs_with_token_auth_and_the_token_is_in_no_file():
    """Every node starts Ray with RAY_AUTH_MODE=token and serve deploy sends it; the token comes from a secret."""
    import re

    cluster = _cluster()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cluster[key] if "ray start" in c or "serve deploy" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), key
    # The launcher's token file, copied to Ray's default path on every node.
    assert cluster["file_mounts"][RAY_TOKEN] == RAY_TOKEN
    docs = list(yaml.safe_load_all(RAYSERVICE.read_text()))
    service = next(d for d in docs if d["kind"] == "RayService")
    auth = service["spec"]["rayClusterConfig"]["authOptions"]
    assert auth["mode"] == "token" and auth["secretName"]
    for text in (CLUSTER.read_text(), RAYSERVICE.read_text()):
        assert "RAY_AUTH_TOKEN:" not in text and not re.search(r"RAY_AUTH_TOKEN=\S", text)
        assert "RAY_AUTH_MODE=disabled" not in text and "mode: disabled" not in text


def test_rayservice_embeds_the_cluster_serve_config():
    docs = list(yaml.safe_load_all(RAYSERVICE.read_text()))
    service = next(d for d in docs if d["kind"] == "RayService")
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load(_deployed_config(_cluster()).read_text())
    cluster = service["spec"]["rayClusterConfig"]
    assert "serve_app_head" in cluster["headGroupSpec"]["rayStartParams"]["resources"]
    (gpu,) = cluster["workerGroupSpecs"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    cfg = load_config_file(_deployed_config(_cluster()))
    assert int(limits["nvidia.com/gpu"]) == cfg.engine.tensor_parallel_size
    assert gpu["maxReplicas"] == cfg.replica.autoscaling.max_replicas
    # Secrets come from a Kubernetes secret, never from the manifest itself.
    env = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert any(e["name"] == "SERVE_APP_ADMIN_KEY" and "secretKeyRef" in e.get("valueFrom", {}) for e in env)
    assert not any(e["name"] in ("SERVE_APP_ADMIN_KEY", "SERVE_APP_API_KEYS") and "value" in e for e in env)
