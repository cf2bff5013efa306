"""Prometheus metrics, labelled by adapter, through Ray's metrics pipeline.

Ray exports them from every node's metrics agent (``ray start
--metrics-export-port``; Ray prefixes each name with ``ray_``), next to Serve's
own ``ray_serve_*`` metrics, so one scrape config covers every router and
replica wherever they run. ``adapter`` is the adapter's name, empty for the
base model. Outside a Ray worker (unit tests) recording does nothing.
"""

from __future__ import annotations

from typing import Any

# Seconds: from a few ms (TTFT of a warm short prompt) to minutes (long generations).
LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
TOKEN_GAP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5]
LOAD_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]

_REQUEST_TAGS = ("model", "adapter")


def _in_ray() -> bool:
    import ray

    return ray.is_initialized()


class _Metrics:
    """Creates Ray metric objects once per process, when running under Ray."""

    def __init__(self) -> None:
        self._on = _in_ray()

    def _counter(self, name: str, description: str, tags: tuple[str, ...]) -> Any:
        from ray.util.metrics import Counter

        return Counter(name, description=description, tag_keys=tags) if self._on else None

    def _histogram(self, name: str, description: str, buckets: list[float], tags: tuple[str, ...]) -> Any:
        from ray.util.metrics import Histogram

        return Histogram(name, description=description, boundaries=buckets, tag_keys=tags) if self._on else None


class RequestMetrics(_Metrics):
    """What the router sees of each request, whatever its endpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = self._counter(
            "serve_app_requests_total",
            "Requests (chat, responses, completions) by final HTTP status.",
            _REQUEST_TAGS + ("status",),
        )
        self.prompt_tokens = self._counter("serve_app_prompt_tokens_total", "Prompt tokens.", _REQUEST_TAGS)
        self.completion_tokens = self._counter("serve_app_completion_tokens_total", "Completion tokens.", _REQUEST_TAGS)
        self.ttft = self._histogram(
            "serve_app_time_to_first_token_seconds",
            "From the request's arrival to its first output token.",
            LATENCY_BUCKETS,
            _REQUEST_TAGS,
        )
        self.itl = self._histogram(
            "serve_app_inter_token_latency_seconds",
            "Mean gap between output tokens after the first, one sample per choice.",
            TOKEN_GAP_BUCKETS,
            _REQUEST_TAGS,
        )
        self.e2e = self._histogram(
            "serve_app_e2e_request_latency_seconds",
            "From the request's arrival to its last byte.",
            LATENCY_BUCKETS,
            _REQUEST_TAGS,
        )

    def finished(self, model: str, adapter: str | None, status: int, prompt_tokens: int, e2e_s: float) -> None:
        if not self._on:
            return
        tags = {"model": model, "adapter": adapter or ""}
        self.requests.inc(1, tags={**tags, "status": str(status)})
        if prompt_tokens:
            self.prompt_tokens.inc(prompt_tokens, tags=tags)
        self.e2e.observe(e2e_s, tags=tags)

    def choice(self, model: str, adapter: str | None, ttft_s: float | None, last_s: float | None, tokens: int) -> None:
        """One choice (engine request) ended: its TTFT, token gaps and tokens."""
        if not self._on:
            return
        tags = {"model": model, "adapter": adapter or ""}
        if tokens:
            self.completion_tokens.inc(tokens, tags=tags)
        if ttft_s is not None:
            self.ttft.observe(ttft_s, tags=tags)
            if last_s is not None and tokens > 1:
                self.itl.observe(max(last_s - ttft_s, 0.0) / (tokens - 1), tags=tags)


class AdapterMetrics(_Metrics):
    """Adapter loads and evictions on a replica."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = self._counter(
            "serve_app_adapter_loads_total", "Adapter loads into a replica, by result.", ("adapter", "result")
        )
        self.load_time = self._histogram(
            "serve_app_adapter_load_seconds", "Time to fetch, check and load an adapter.", LOAD_BUCKETS, ("adapter",)
        )
        self.evictions = self._counter(
            "serve_app_adapter_evictions_total", "Adapters unloaded from a replica.", ("adapter",)
        )

    def loaded(self, adapter: str, seconds: float, ok: bool) -> None:
        if self._on:
            self.loads.inc(1, tags={"adapter": adapter, "result": "ok" if ok else "error"})
            if ok:
                self.load_time.observe(seconds, tags={"adapter": adapter})

    def evicted(self, adapter: str) -> None:
        if self._on:
            self.evictions.inc(1, tags={"adapter": adapter})
