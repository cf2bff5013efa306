"""The vLLM engine: the only module of the serving path that imports vLLM.

Token ids in, token-id chunks out. It knows sampling and LoRA, nothing of HTTP,
OpenAI or Harmony.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import AsyncGenerator
from typing import cast

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
    if e.device == "gpu":
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
    """An AsyncLLM with the operations a replica needs."""

    def __init__(self, cfg: AppConfig):
        self._cfg = cfg
        self._llm = AsyncLLM.from_engine_args(engine_args(cfg))
        self._lora_ids = itertools.count(1)

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
        req = LoRARequest(lora_name=spec.name, lora_int_id=next(self._lora_ids), lora_path=spec.path)
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

    @property
    def errored(self) -> bool:
        return self._llm.errored

    def shutdown(self) -> None:
        self._llm.shutdown()
