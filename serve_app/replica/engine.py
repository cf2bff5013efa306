"""The vLLM engine: the only module of the serving path that imports vLLM.

Token ids in, token-id chunks out. It knows sampling and LoRA, nothing of HTTP,
OpenAI or Harmony.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator
from typing import Any, cast

from vllm import SamplingParams
from vllm.config import StructuredOutputsConfig
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.exceptions import VLLMClientError
from vllm.lora.request import LoRARequest
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError

from serve_app.adapters.validation import AdapterSpec
from serve_app.config import AppConfig
from serve_app.protocol.engine import FinishReason, GenerateRequest, SamplingOptions, TokenChunk
from serve_app.protocol.errors import EngineDead, InvalidAdapter, InvalidRequest
from serve_app.replica import gang
from serve_app.replica.adapter_cache import engine_lora_id
from serve_app.replica.gang import GangRole

logger = logging.getLogger(__name__)


def engine_args(cfg: AppConfig) -> AsyncEngineArgs:
    """AsyncEngineArgs from the typed config.

    Structured outputs use xgrammar only: our constraints are xgrammar
    structural tags, and with vLLM's default ("auto") a tag xgrammar refuses
    went on to guidance, which failed it inside the engine core (an aborted
    request: a 503 for the client's own bad schema) instead of refusing it.
    """
    return AsyncEngineArgs(**engine_kwargs(cfg), structured_outputs_config=StructuredOutputsConfig(backend="xgrammar"))


def engine_kwargs(cfg: AppConfig) -> dict:
    """vLLM engine arguments from the typed config (also the flags `make bench` gives vLLM's server)."""
    e, m, lora = cfg.engine, cfg.model, cfg.lora
    kwargs: dict = dict(
        model=m.resolved_path(),
        served_model_name=m.served_name,
        max_model_len=m.max_model_len,
        dtype=m.dtype,
        quantization=m.quantization,
        tensor_parallel_size=e.tensor_parallel_size,
        max_num_seqs=e.max_num_seqs,
        max_num_batched_tokens=e.max_num_batched_tokens,
        enable_prefix_caching=e.enable_prefix_caching,
        enforce_eager=e.enforce_eager,
        seed=e.seed,
        kv_cache_memory_bytes=e.kv_cache_memory_bytes,
        enable_log_requests=False,
        disable_log_stats=True,
    )
    if e.moe_backend != "auto":
        kwargs["moe_backend"] = e.moe_backend
    if e.device == "gpu" and cfg.replica.api_processes > 1:
        kwargs["gpu_memory_utilization"] = e.gpu_memory_utilization
        # A gang's rank 0 holds a share of the GPU (Serve's bundles): the engine
        # core uses it in its own process, which Ray's executor could not place.
        kwargs["distributed_executor_backend"] = "uni"
    elif e.device == "gpu":
        kwargs["gpu_memory_utilization"] = e.gpu_memory_utilization
        # Workers go into the replica's placement-group bundles, one GPU each.
        kwargs["distributed_executor_backend"] = "ray"
    elif e.tensor_parallel_size > 1:
        # vLLM's CPU backend runs tensor parallelism with local worker
        # processes and a shared-memory all-reduce; the replica's bundles
        # reserve their CPUs (see serve_app.app.replica_options).
        kwargs["distributed_executor_backend"] = "mp"
    if lora.enabled:
        kwargs.update(
            enable_lora=True,
            max_loras=lora.max_loras,
            max_lora_rank=lora.max_lora_rank,
            max_cpu_loras=lora.adapters_per_replica,
        )
    return kwargs


def _engine_processes_here(role: GangRole) -> list[Any]:
    """The engine core's processes, to watch from another rank of its gang on the same node (else none:
    the health check's round trip to the engine core is then the watch)."""
    import psutil

    engine = gang.engine_of(role, timeout_s=30)
    if engine is None or engine["node"] != gang.node_id():
        return []
    out = []
    for pid in engine["pids"]:
        try:
            out.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    return out


def _running(proc: Any) -> bool:
    """A process another process started: gone, or a zombie its parent has not reaped, is not running."""
    import psutil

    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def sampling_params(opts: SamplingOptions) -> SamplingParams:
    return SamplingParams(
        max_tokens=opts.max_tokens,
        temperature=opts.temperature,
        top_p=opts.top_p,
        top_k=opts.top_k,
        seed=opts.seed,
        presence_penalty=opts.presence_penalty,
        frequency_penalty=opts.frequency_penalty,
        stop_token_ids=list(opts.stop_token_ids),
        ignore_eos=opts.ignore_eos,
        logprobs=opts.logprobs,
        skip_special_tokens=False,
        detokenize=False,
        output_kind=RequestOutputKind.DELTA,
        structured_outputs=StructuredOutputsParams(structural_tag=opts.structural_tag) if opts.structural_tag else None,
        logit_bias=dict(opts.logit_bias) if opts.logit_bias else None,
    )


# xgrammar's messages start with "[hh:mm:ss] /project/cpp/<file>.cc:<line>: ".
_NATIVE_PREFIX = re.compile(r"^\[[0-9:]+\] \S+:\d+: ")


def client_error_message(e: BaseException) -> str:
    """vLLM's refusal of a request, with the grammar backend's reason and without its source paths.

    The message only: vLLM's ``str()`` appends the refused value, which may be
    the client's whole schema.
    """
    message = str(e.args[0]) if e.args else str(e)
    cause = e.__cause__
    if cause is not None and str(cause).strip():
        message = f"{message.rstrip('.')}: {_NATIVE_PREFIX.sub('', str(cause).strip())}"
    return message


def _logprobs(token_ids, positions, top: int | None) -> list[list[tuple[int, float]]] | None:
    """vLLM's per-position {id: Logprob} as [(sampled, lp), (top1, lp), ...]."""
    if positions is None or top is None:
        return None
    out = []
    for tok, pos in zip(token_ids, positions, strict=False):
        ranked = sorted((lp.rank, tid, lp.logprob) for tid, lp in (pos or {}).items() if lp.rank is not None)
        sampled = pos[tok].logprob if pos and tok in pos else float("nan")
        out.append([(tok, sampled)] + [(tid, lp) for rank, tid, lp in ranked if rank <= top][:top])
    return out


class Engine:
    """An AsyncLLM with the operations a replica needs.

    With a ``GangRole`` it is one of several clients of one engine core
    (``serve_app.replica.gang``); rank 0 starts the engine core.
    """

    def __init__(self, cfg: AppConfig, role: GangRole | None = None):
        self._cfg = cfg
        self._role = role
        self._engine_procs: Any = None  # rank 0 of a gang: the engine core processes it started
        self._watched: list[Any] = []  # another rank of a gang: those processes, when on this node
        self._llm = AsyncLLM.from_engine_args(engine_args(cfg)) if role is None else self._gang_client(role)
        if role is not None and not role.starts_engine:
            self._watched = _engine_processes_here(role)

    def _gang_client(self, role: GangRole) -> AsyncLLM:
        """An engine client of the gang's engine (vLLM's multi-API-server mode, with Ray as the meeting point)."""
        import zmq
        from vllm.usage.usage_lib import UsageContext
        from vllm.utils.network_utils import get_ip, make_zmq_listener
        from vllm.v1.engine.utils import EngineZmqAddresses, launch_core_engines
        from vllm.v1.executor import Executor

        args = engine_args(self._cfg)
        args._api_process_count = role.size
        args._api_process_rank = role.rank
        vllm_config = args.create_engine_config(UsageContext.OPENAI_API_SERVER)
        executor_class = Executor.get_class(vllm_config)
        # Bound now (TCP, so that a rank on another node works too), handed to the
        # client below: the engine core may connect before the client exists.
        ip = get_ip()
        inputs = make_zmq_listener(f"tcp://{ip}:0", zmq.ROUTER)
        outputs = make_zmq_listener(f"tcp://{ip}:0", zmq.PULL)
        gang.publish(role, {"input": inputs.address, "output": outputs.address})
        if role.starts_engine:
            peers = gang.gather(role, timeout_s=self._cfg.replica.engine_restart_timeout_s)
            addresses = EngineZmqAddresses(inputs=[p["input"] for p in peers], outputs=[p["output"] for p in peers])
            # The block's end waits for the engine core to start (vLLM's handshake).
            with launch_core_engines(vllm_config, executor_class, False, addresses) as launch:
                self._engine_procs = launch.engine_manager
            gang.publish_engine(role, [p.pid for p in self._engine_procs.processes])
        return AsyncLLM(
            vllm_config=vllm_config,
            executor_class=executor_class,
            log_stats=False,
            log_requests=False,
            client_addresses={
                "input_address": inputs.address,
                "output_address": outputs.address,
                "input_listener": inputs.socket,
                "output_listener": outputs.socket,
            },
            client_count=role.size,
            client_index=role.rank,
        )

    async def generate(self, req: GenerateRequest, lora: LoRARequest | None = None) -> AsyncGenerator[TokenChunk, None]:
        """Stream delta chunks; closing the iterator aborts the engine request."""
        prompt_len = len(req.prompt_token_ids)
        completion = 0
        try:
            stream = self._llm.generate(
                {"prompt_token_ids": req.prompt_token_ids},
                sampling_params(req.sampling),
                req.request_id,
                lora_request=lora,
            )
            async for out in stream:
                seq = out.outputs[0]
                completion += len(seq.token_ids)
                yield TokenChunk(
                    token_ids=list(seq.token_ids),
                    logprobs=_logprobs(seq.token_ids, seq.logprobs, req.sampling.logprobs),
                    finish_reason=cast(FinishReason | None, seq.finish_reason if out.finished else None),
                    stop_reason=seq.stop_reason if out.finished else None,
                    prompt_tokens=prompt_len,
                    completion_tokens=completion,
                )
        except EngineDeadError as e:
            raise EngineDead("The engine of this replica died; retry the request.") from e
        except (VLLMClientError, ValueError) as e:
            # vLLM's input validation, before the engine core sees the request
            # (a structural tag the grammar backend refuses, a token id outside
            # the vocabulary in logit_bias); not VLLMClientError's
            # VLLMServerError sibling, which is the server's fault.
            param = getattr(e, "parameter", None)
            if param is None and req.sampling.structural_tag:
                param = req.sampling.constraint_param
            raise InvalidRequest(client_error_message(e), param=param) from e

    async def abort(self, request_id: str) -> None:
        await self._llm.abort(request_id)

    def num_unfinished_requests(self) -> int:
        return self._llm.get_num_unfinished_requests()

    async def add_lora(self, spec: AdapterSpec) -> LoRARequest:
        """Load a checked adapter; a failure leaves the engine serving."""
        req = LoRARequest(lora_name=spec.name, lora_int_id=engine_lora_id(str(spec.path)), lora_path=spec.path)
        try:
            ok = await self._llm.add_lora(req)
        except EngineDeadError as e:
            raise EngineDead("The engine of this replica died while loading an adapter; retry the request.") from e
        except Exception as e:  # vLLM raises assorted errors for adapters it cannot load
            logger.warning("engine refused adapter %s: %s", spec.name, e)
            raise InvalidAdapter(f"adapter {spec.name!r} could not be loaded by the engine") from e
        if not ok:
            raise InvalidAdapter(f"adapter {spec.name!r} could not be loaded by the engine")
        return req

    async def remove_lora(self, lora_id: int) -> None:
        await self._llm.remove_lora(lora_id)

    async def list_loras(self) -> set[int]:
        return await self._llm.list_loras()

    async def check_health(self) -> None:
        await self._llm.check_health()
        if self._role is not None and not self._role.starts_engine:
            # A client of an engine another rank started has no process to watch:
            # a round trip to the engine core says it is there.
            await asyncio.wait_for(self._llm.is_sleeping(), self._cfg.replica.health_check_timeout_s / 2)

    @property
    def errored(self) -> bool:
        """The engine is gone: the client says so, or (a gang) an engine core process has exited."""
        if self._llm.errored:
            return True
        procs = getattr(self._engine_procs, "processes", None) or ()
        if any(not p.is_alive() for p in procs):
            return True
        return any(not _running(p) for p in self._watched)

    def fail_pending(self) -> None:
        """End every running request with EngineDeadError (a gang's client: nothing else will tell them)."""
        self._llm.output_processor.propagate_error(EngineDeadError())

    @property
    def role(self) -> dict | None:
        """This client's place in its gang (id, rank, size), or None."""
        r = self._role
        return None if r is None else {"id": r.gang_id, "rank": r.rank, "size": r.size}

    @property
    def shared(self) -> bool:
        """One of several clients of this engine (a gang): on its death, running requests must be ended here."""
        return self._role is not None

    def shutdown(self) -> None:
        self._llm.shutdown()
        if self._engine_procs is not None:
            self._engine_procs.shutdown()
        if self._role is not None:
            gang.forget(self._role)
