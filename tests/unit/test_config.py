from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from serve_app.app import replica_options, router_options
from serve_app.config import AppConfig, load_config_file

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
DEV = {
    "model": {"path": "devmodel:base"},
    "engine": {"device": "cpu", "kv_cache_memory_bytes": 1 << 28},
}


def _with(path: str, value) -> dict:
    cfg = copy.deepcopy(DEV)
    *parents, leaf = path.split(".")
    node = cfg
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return cfg


@pytest.mark.parametrize(
    "path, value, field",
    [
        ("model.bogus", 1, "bogus"),
        ("engine.tensor_parallel_size", 0, "tensor_parallel_size"),
        ("engine.gpu_memory_utilization", 1.5, "gpu_memory_utilization"),
        ("engine.device", "tpu", "device"),
        ("engine.kv_cache_memory_bytes", None, "kv_cache_memory_bytes"),
        ("engine.max_num_batched_tokens", 8, "max_num_batched_tokens"),
        ("lora.max_lora_rank", 7, "max_lora_rank"),
        ("lora.max_cpu_loras", 1, "max_cpu_loras"),
        ("lora.max_loras", 1000, "max_loras"),
        ("replica.autoscaling.min_replicas", 5, "min_replicas"),
        ("replica.autoscaling.initial_replicas", 9, "initial_replicas"),
        ("replica.max_ongoing_requests", 0, "max_ongoing_requests"),
        ("router.extra", True, "extra"),
        ("router.retry_after_s", -1, "retry_after_s"),
        ("router", {"num_replicas": 2, "autoscaling": {"max_replicas": 2}}, "num_replicas"),
        ("router.cors_allow_origins", ["example.com"], "cors_allow_origins"),
        ("replica.max_queued_requests", -1, "max_queued_requests"),
        ("replica.autoscaling.target_ongoing_requests", 1000, "target_ongoing_requests"),
        ("auth.api_keys", "k", "api_keys"),
        ("auth.api_keys_file", 3, "api_keys_file"),
    ],
    ids=lambda v: str(v),
)
def test_invalid_config_names_the_field(path, value, field):
    with pytest.raises(ValidationError) as err:
        AppConfig.model_validate(_with(path, value))
    assert field in str(err.value)


def test_model_is_required():
    with pytest.raises(ValidationError) as err:
        AppConfig.model_validate({"engine": DEV["engine"]})
    assert "model" in str(err.value)


def _deployments(app) -> dict:
    """The deployments of a built application graph, by name."""
    from ray.serve import Application

    found, todo = {}, [app]
    while todo:
        d = todo.pop()._bound_deployment
        found[d.name] = d
        todo += [a for a in d.init_args if isinstance(a, Application)]
    return found


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_builds(path):
    from serve_app.app import build_app

    cfg = load_config_file(path)
    args = yaml.safe_load(path.read_text())["applications"][0]["args"]
    deployments = _deployments(build_app(args))
    engine = {"routed": {"Router", "LLMReplica"}, "direct": {"LLMServer"}}[cfg.topology]
    assert set(deployments) == engine | ({"AdapterManager"} if cfg.lora.enabled else set()) | (
        {"ResponseStore"} if cfg.responses.enabled else set()
    ) | ({"QuotaKeeper"} if cfg.quotas.enabled else set())
    if cfg.topology == "direct":
        # One deployment is both: the engine replica's bundles and bounds, the router's room for requests.
        replica = router = deployments["LLMServer"]
    else:
        replica, router = deployments["LLMReplica"], deployments["Router"]
    bundles = replica._replica_config.placement_group_bundles
    assert len(bundles) == cfg.engine.tensor_parallel_size
    assert sum(b.get("GPU", 0) for b in bundles) == (
        cfg.engine.tensor_parallel_size if cfg.engine.device == "gpu" else 0
    )
    assert replica.ray_actor_options["num_cpus"] == bundles[0]["CPU"]
    scaling, bounds = replica._deployment_config.autoscaling_config, cfg.replica.autoscaling
    if bounds.min_replicas == bounds.max_replicas:  # a fixed count: no autoscaling metrics to collect
        assert scaling is None and replica.num_replicas == bounds.max_replicas
    else:
        assert (scaling.min_replicas, scaling.max_replicas) == (bounds.min_replicas, bounds.max_replicas)
        assert scaling.target_ongoing_requests == bounds.target_ongoing_requests
    if cfg.topology == "direct":
        # Our admission (a 429 in our shape) comes before Serve's plain-text refusal.
        assert replica.max_ongoing_requests > cfg.direct_admission_limit() + 64
    else:
        assert replica.max_ongoing_requests == cfg.replica.max_ongoing_requests
        # Bounded queues (429 beyond them) and time for running streams on shutdown.
        assert 0 <= replica.max_queued_requests == cfg.replica.max_queued_requests
        assert router.ray_actor_options["num_cpus"] == 0
    assert replica._deployment_config.graceful_shutdown_timeout_s >= 60
    assert router.max_ongoing_requests >= 1000  # Serve's default (5) would queue streams at the proxy
    assert router.max_queued_requests >= 0


def test_routers_autoscale_when_asked():
    cfg = AppConfig.model_validate(_with("router.autoscaling", {"min_replicas": 1, "max_replicas": 3}))
    opts = router_options(cfg)
    assert "num_replicas" not in opts and opts["autoscaling_config"]["max_replicas"] == 3
    assert router_options(AppConfig.model_validate(DEV))["num_replicas"] == 1


@pytest.mark.parametrize("device, tp", [("gpu", 1), ("gpu", 2), ("cpu", 2)])
def test_bundles_follow_tensor_parallel_size(device, tp):
    cfg = AppConfig.model_validate(_with("engine.tensor_parallel_size", tp) | {})
    cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"device": device})})
    bundles = cfg.placement_group_bundles()
    assert len(bundles) == tp
    if device == "gpu":
        assert all(b["GPU"] == 1 for b in bundles)
    else:
        assert all("GPU" not in b for b in bundles)


def test_devmodel_paths_resolve(monkeypatch, tmp_path):
    from serve_app.devmodel import paths

    monkeypatch.setenv(paths.ENV_DIR, str(tmp_path))
    assert paths.resolve("devmodel:base") == str(tmp_path / "base")
    assert paths.resolve("devmodel:adapters/pirate") == str(tmp_path / "adapters" / "pirate")
    with pytest.raises(ValueError):
        paths.resolve("devmodel:../etc")
    assert paths.resolve("openai/gpt-oss-20b") == "openai/gpt-oss-20b"


def test_gpt_oss_configs_place_one_or_two_gpus_per_replica():
    root = Path(__file__).resolve().parents[2] / "configs"
    for name, gpus in (("gpt-oss-20b.yaml", 1), ("gpt-oss-20b-tp2.yaml", 2)):
        cfg = load_config_file(root / name)
        opts = replica_options(cfg)
        assert [b.get("GPU") for b in opts["placement_group_bundles"]] == [1] * gpus
        assert opts["placement_group_strategy"] == "STRICT_PACK" and cfg.model.max_model_len == 131072
        assert opts["autoscaling_config"]["min_replicas"] >= 1


def test_every_config_field_is_described():
    import inspect

    from pydantic import BaseModel

    from serve_app import config

    missing = [
        f"{name}.{field}"
        for name, cls in inspect.getmembers(config, inspect.isclass)
        if issubclass(cls, BaseModel) and cls.__module__ == config.__name__
        for field, info in cls.model_fields.items()
        if not info.description
    ]
    assert not missing


def test_engine_deployments_route_among_live_engines_except_an_haproxy_ingress(monkeypatch):
    from ray.serve.config import RequestRouterConfig

    from serve_app import app
    from serve_app.replica.routing import ROUTER_CLASS

    cfg = AppConfig.model_validate(DEV)
    monkeypatch.setattr(app, "haproxy_ingress", lambda: False)
    for opts in (app.replica_options(cfg), app.server_options(cfg)):
        router = opts["request_router_config"]
        assert router["request_router_class"] == ROUTER_CLASS
        assert router["request_routing_stats_period_s"] == cfg.replica.routing_stats_period_s
        RequestRouterConfig(**router)  # what Serve will accept
    # Behind HAProxy the direct topology's ingress keeps Serve's balancing (Serve refuses a custom
    # router there); the routed topology's engines are no ingress and keep ours.
    monkeypatch.setattr(app, "haproxy_ingress", lambda: True)
    assert "request_router_class" not in app.server_options(cfg)["request_router_config"]
    assert app.replica_options(cfg)["request_router_config"]["request_router_class"] == ROUTER_CLASS
