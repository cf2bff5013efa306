"""Chat completions: request -> Harmony prompt -> a ``Job`` for the generation core.

Validates, resolves the model for this caller, renders through the Harmony
package and checks the context length; every refusal is a typed 4xx. Running
it and the output shapes are the core's and ``output``'s.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from dataclasses import dataclass
from typing import Any

from serve_app.api.auth import ANONYMOUS, Principal
from serve_app.api.core import Job
from serve_app.api.models import ModelRef, ModelResolver
from serve_app.config import AppConfig
from serve_app.endpoints import limits
from serve_app.endpoints.chat.models import ChatCompletionRequest
from serve_app.endpoints.chat.render import prepare
from serve_app.endpoints.common import completion_budget, request_sampling
from serve_app.harmony.chat import HarmonyPrompt
from serve_app.harmony.parse import CompletionParser
from serve_app.protocol.wire import parse


@dataclass
class ChatRun:
    """One accepted chat request, ready to run."""

    created: int
    model: str
    request: ChatCompletionRequest
    prompt: HarmonyPrompt
    job: Job

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def ref(self) -> ModelRef:
        return self.job.ref

    @property
    def prompt_tokens(self) -> int:
        return self.job.prompt_tokens

    @property
    def principal(self) -> Principal:
        return self.job.principal

    @property
    def arrived(self) -> float:
        return self.job.arrived


def shape(request: ChatCompletionRequest) -> limits.RequestShape:
    """What the request's costly fields come to, for ``limits.check``."""
    fmt = request.response_format
    schemas = limits.tool_schemas(
        (f"tools.{i}.function.parameters", t.function.parameters) for i, t in enumerate(request.tools or [])
    )
    if fmt is not None and fmt.json_schema is not None and fmt.json_schema.get("schema") is not None:
        schemas.append(limits.Schema("response_format.json_schema.schema", fmt.json_schema["schema"]))
    stop = request.stop
    return limits.RequestShape(
        messages=len(request.messages),
        n=request.n,
        stop=[stop] if isinstance(stop, str) else list(stop or []),
        tools=[t.model_dump(exclude_none=True) for t in request.tools or []],
        schemas=schemas,
        logit_bias=request.logit_bias,
    )


class ChatService:
    def __init__(self, cfg: AppConfig, resolver: ModelResolver):
        self._cfg = cfg
        self._resolver = resolver

    async def accept(self, body: Any, principal: Principal = ANONYMOUS, arrived: float | None = None) -> ChatRun:
        """Validate, resolve (for this caller) and render; every refusal is a typed 4xx."""
        request: ChatCompletionRequest = parse(ChatCompletionRequest, body)
        limits.check(self._cfg.limits, shape(request))
        ref = await self._resolver.resolve(request.model, principal)
        prompt = await asyncio.to_thread(prepare, request, self._cfg.sampling_defaults.reasoning_effort)
        prompt_tokens = len(prompt.prompt_token_ids)
        budget = completion_budget(
            self._cfg.model.max_model_len, prompt_tokens, request.completion_limit, "messages", "max_tokens"
        )
        stop = request.stop
        job = Job(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            prompt_token_ids=prompt.prompt_token_ids,
            ref=ref,
            sampling=request_sampling(
                self._cfg.sampling_defaults,
                request,
                max_tokens=budget,
                stop_token_ids=prompt.stop_token_ids,
                structural_tag=prompt.structural_tag,
                constraint_param=prompt.constraint_param,
                logprobs=(request.top_logprobs or 0) if request.logprobs else None,
            ),
            new_parser=functools.partial(CompletionParser, tools=prompt.tools_offered),
            n=request.n,
            stop=[stop] if isinstance(stop, str) else list(stop or []),
            logprobs=request.logprobs,
            principal=principal,
            arrived=time.monotonic() if arrived is None else arrived,
        )
        return ChatRun(created=int(time.time()), model=request.model, request=request, prompt=prompt, job=job)
