"""Builder: config -> bound Serve application.

The only place that applies ``serve.deployment``/``.options``/``.bind``; the
deployment classes stay plain so unit tests can call them directly.

    serve run configs/dev-cpu.yaml          # import_path: serve_app.app:build_app
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from serve_app.adapters.manager import AdapterManager
from serve_app.config import AppConfig, AutoscalingConfig
from serve_app.endpoints.responses.store import ResponseStore
from serve_app.quotas.keeper import QuotaKeeper
from serve_app.replica.deployment import LLMReplica
from serve_app.replica.routing import ROUTER_CLASS
from serve_app.router.ingress import Router
from serve_app.server.deployment import DEPLOYMENT_NAME, LLMServer, haproxy_ingress


def _scaling(a: AutoscalingConfig, per_unit: int = 1) -> dict[str, Any]:
    """Deployment options for a replica count: fixed when min == max, else autoscaled.

    A fixed count spares the controller the metrics every handle and replica
    would otherwise report for autoscaling (measured: about a tenth of a core
    under load, on 2 cores). ``per_unit``: Serve replicas per configured
    replica (an engine's API processes), so that config counts engines.
    """
    if a.min_replicas == a.max_replicas:
        return {"num_replicas": a.max_replicas * per_unit}
    out: dict[str, Any] = {
        "min_replicas": a.min_replicas * per_unit,
        "max_replicas": a.max_replicas * per_unit,
        # Serve counts ongoing requests per replica: per API process here.
        "target_ongoing_requests": a.target_ongoing_requests / per_unit,
        "upscale_delay_s": a.upscale_delay_s,
        "downscale_delay_s": a.downscale_delay_s,
    }
    if a.initial_replicas is not None:
        out["initial_replicas"] = a.initial_replicas * per_unit
    return {"autoscaling_config": out}


def replica_options(cfg: AppConfig) -> dict[str, Any]:
    """Deployment options of the LLMReplica, derived from config only."""
    r = cfg.replica
    env = dict(r.env_vars)
    if cfg.engine.device == "cpu" and cfg.engine.tensor_parallel_size > 1:
        # vLLM's automatic binding wants one NUMA node per CPU worker and
        # refuses to start on a single-node host; leave placement to the OS.
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    return {
        "name": "LLMReplica",
        # Counts in config are per engine; an engine is api_processes Serve replicas
        # (more than one only in the direct topology: serve_app.replica.gang).
        **_scaling(r.autoscaling, per_unit=r.api_processes),
        "max_ongoing_requests": r.max_ongoing_requests,
        # Bounded: beyond it the router gets BackPressureError and answers 429.
        "max_queued_requests": r.max_queued_requests,
        "graceful_shutdown_timeout_s": r.graceful_shutdown_timeout_s,
        "health_check_period_s": r.health_check_period_s,
        "health_check_timeout_s": r.health_check_timeout_s,
        "request_router_config": request_router_config(cfg),
        # The actor itself takes its CPUs from the first bundle; the engine's
        # workers (one per tensor-parallel rank) take the bundles' GPUs.
        "ray_actor_options": {"num_cpus": r.num_cpus, "runtime_env": {"env_vars": env}}
        if env
        else {"num_cpus": r.num_cpus},
        "placement_group_bundles": cfg.placement_group_bundles(),
        "placement_group_strategy": "STRICT_PACK",
    }


def request_router_config(cfg: AppConfig, ingress: bool = False) -> dict[str, Any]:
    """Serve's request router for an engine deployment: power of two choices among live engines.

    Not for an ingress deployment behind HAProxy: HAProxy balances those
    itself (least connections) and Serve refuses a custom router there; a
    dead engine's 503 is retried by HAProxy instead (``retry-on 503``, set by
    ``make serve``). The routing stats are still collected for operators.
    """
    stats = {
        "request_routing_stats_period_s": cfg.replica.routing_stats_period_s,
        "request_routing_stats_timeout_s": max(cfg.replica.routing_stats_period_s, 5.0),
    }
    if ingress and haproxy_ingress():
        return stats
    return {"request_router_class": ROUTER_CLASS, **stats}


def router_options(cfg: AppConfig) -> dict[str, Any]:
    # Serve's default of 5 ongoing requests would queue the 6th stream at the
    # proxy; the router only waits on replicas, which bound the real work.
    scale: dict[str, Any] = (
        _scaling(cfg.router.autoscaling)
        if cfg.router.autoscaling is not None
        else {"num_replicas": cfg.router.num_replicas}
    )
    return {
        "name": "Router",
        **scale,
        "max_ongoing_requests": cfg.router.max_ongoing_requests,
        "max_queued_requests": cfg.router.max_queued_requests,
        "graceful_shutdown_timeout_s": cfg.router.graceful_shutdown_timeout_s,
        "ray_actor_options": _actor_options(0, cfg.router.resources),
    }


def server_options(cfg: AppConfig) -> dict[str, Any]:
    """Deployment options of the LLMServer (direct topology): the replica's, with room for the API.

    Serve counts every HTTP request a replica serves against its
    ``max_ongoing_requests`` and refuses the rest in plain text; the server's
    own admission (``AppConfig.direct_admission_limit``) answers a 429 in our
    error shape first, and the headroom is for requests that generate nothing
    (models, health, adapters) and for streams placed here by other replicas.
    """
    out = {
        **replica_options(cfg),
        "name": DEPLOYMENT_NAME,
        "request_router_config": request_router_config(cfg, ingress=True),
        "max_ongoing_requests": cfg.direct_admission_limit() + cfg.router.max_ongoing_requests,
        "max_queued_requests": cfg.router.max_queued_requests,
    }
    k = cfg.replica.api_processes
    if k > 1:
        # A gang per engine (serve_app.replica.gang): its replicas start, fail
        # and scale together; rank 0 runs the engine core, every rank is a client.
        out.pop("placement_group_strategy")  # the gang's own strategy places the replicas
        out["gang_scheduling_config"] = {
            "gang_size": k,
            "gang_placement_strategy": "PACK",
            "runtime_failure_policy": "RESTART_GANG",
        }
    return out


def _single(name: str, max_ongoing: int, num_cpus: float, resources: dict[str, float]) -> dict[str, Any]:
    """Options of a control-plane deployment that runs as one replica."""
    return {
        "name": name,
        "num_replicas": 1,
        "max_ongoing_requests": max_ongoing,
        "ray_actor_options": _actor_options(num_cpus, resources),
    }


def manager_options(cfg: AppConfig) -> dict[str, Any]:
    # One manager: SQLite serializes writers anyway, and every read it serves
    # (version, view, fetch) is small or rare.
    return _single("AdapterManager", 256, cfg.adapters.num_cpus, cfg.adapters.resources)


def store_options(cfg: AppConfig) -> dict[str, Any]:
    # One store: every router replica must see every response, and SQLite has one writer.
    return _single("ResponseStore", 256, cfg.responses.num_cpus, cfg.responses.resources)


def quota_keeper_options(cfg: AppConfig) -> dict[str, Any]:
    # One keeper: a tenant's requests are counted once, over every HTTP process.
    return _single("QuotaKeeper", 1024, cfg.quotas.num_cpus, cfg.quotas.resources)


def _actor_options(num_cpus: float, resources: dict[str, float]) -> dict[str, Any]:
    return {"num_cpus": num_cpus, "resources": dict(resources)} if resources else {"num_cpus": num_cpus}


def _deployment(cls: type) -> Any:
    """``serve.deployment`` on a plain class (its type stubs promise a decorator factory)."""
    return serve.deployment(cls)


def build_app(args: dict[str, Any]) -> Application:
    """Serve's application builder: validate ``args`` first, then bind the graph."""
    cfg = AppConfig.model_validate(args)
    config = cfg.model_dump(mode="json")
    manager = None
    if cfg.lora.enabled:
        manager = _deployment(AdapterManager).options(**manager_options(cfg)).bind(config)
    store = None
    if cfg.responses.enabled:
        store = _deployment(ResponseStore).options(**store_options(cfg)).bind(config)
    quotas = None
    if cfg.quotas.enabled:
        quotas = _deployment(QuotaKeeper).options(**quota_keeper_options(cfg)).bind(config)
    if cfg.topology == "direct":
        server = _deployment(serve.ingress()(LLMServer)).options(**server_options(cfg))
        return server.bind(config, manager, store, quotas)
    replica = _deployment(LLMReplica).options(**replica_options(cfg)).bind(config, manager)
    # The router is a Starlette application (``Router.__serve_build_asgi_app__``).
    router = _deployment(serve.ingress()(Router)).options(**router_options(cfg))
    return router.bind(config, replica, manager, store, quotas)
