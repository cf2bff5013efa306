"""LLMServer: one deployment that is both the OpenAI API and a vLLM engine replica.

The routed topology (proxy -> Router -> LLMReplica) pays Serve's per-message
cost on two hops for every streamed chunk: a gRPC stream send in the replica,
its receive and the ASGI messages in the router (measured: docs/benchmarks.md). Here
the router's Starlette application runs in the engine replica's own process,
as Serve's ingress of this deployment. With HAProxy (``RAY_SERVE_ENABLE_HA_PROXY``)
haproxy forwards each HTTP request straight to a replica's own port, so a
token goes from vLLM's output handler to the client's socket in one process,
as in vLLM's own API server; without it, Serve's Python proxy is the one hop.

What the routed topology guarantees holds here, with the same code: the
router's endpoints, auth and tenants, typed errors before the first token,
cancel on disconnect, per-adapter metrics; adapter affinity and 429 admission
are ``serve_app.server.local``'s. vLLM is still imported by one module only
(``serve_app.replica.engine``, through ``LLMReplica``).
"""

from __future__ import annotations

from typing import Any

from serve_app.api.liveness import ReplicaLiveness
from serve_app.config import AppConfig
from serve_app.replica.deployment import LLMReplica
from serve_app.router.ingress import Router
from serve_app.server.local import LocalReplica

DEPLOYMENT_NAME = "LLMServer"


def _own_handle() -> Any:
    """This deployment's handle (adapters held by another replica are placed through it)."""
    from ray import serve

    ctx = serve.get_replica_context()
    return serve.get_deployment_handle(ctx.deployment, ctx.app_name)


def haproxy_ingress() -> bool:
    """Whether Serve's HAProxy ingress runs instead of its Python proxy (read as Serve reads it)."""
    from ray.serve._private.constants import RAY_SERVE_ENABLE_HA_PROXY

    return bool(RAY_SERVE_ENABLE_HA_PROXY)


def _own_replicas(cfg: AppConfig) -> ReplicaLiveness:
    """Counts this deployment's running replicas (through Serve's controller, cached)."""
    from ray import serve

    ctx = serve.get_replica_context()
    r = cfg.router
    return ReplicaLiveness.of_deployment(
        ctx.app_name, ctx.deployment, r.unavailable_wait_s, r.unavailable_retry_after_s
    )


class LLMServer(LLMReplica):
    def __init__(self, config: dict | AppConfig, manager: Any = None, responses_store: Any = None, quotas: Any = None):
        super().__init__(config, manager)
        cfg = self._cfg
        # Behind Serve's Python proxy, a request that reaches a replica whose
        # engine died goes on through the deployment's own handle, whose router
        # (serve_app.replica.routing) places it on a live engine. Behind
        # HAProxy, Serve's default router would pick the dead replica again (it
        # has the shortest queue): the request fails with EngineDead at once,
        # and HAProxy sends it to another replica (retry-on 503).
        haproxy = haproxy_ingress()
        self.local = LocalReplica(self, cfg.direct_admission_limit(), _own_handle, forward_when_dead=not haproxy)
        self._router = Router(
            cfg,
            self.local,
            manager,
            responses_store,
            quotas,
            in_process=True,
            replicas=None if haproxy else _own_replicas(cfg),
        )

    def __serve_build_asgi_app__(self) -> Any:
        """Serve's late-bound ingress: the router's application, in this process."""
        return self._router.http

    async def stats(self) -> dict:
        """The engine replica's stats, and the background responses its API runs."""
        return {**await super().stats(), "background": self._router.background_stats()}
