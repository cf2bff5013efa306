"""Completions: raw prompts -> one ``Job`` per prompt for the generation core."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from dataclasses import dataclass
from typing import Any

from serve_app.api.auth import ANONYMOUS, Principal
from serve_app.api.core import Job
from serve_app.api.models import ModelResolver
from serve_app.config import AppConfig
from serve_app.endpoints import limits
from serve_app.endpoints.common import completion_budget, request_sampling
from serve_app.endpoints.completions.models import CompletionRequest
from serve_app.endpoints.completions.text import TextParser
from serve_app.harmony.encoding import harmony_encoding
from serve_app.harmony.tokens import VOCAB_SIZE, encode_text
from serve_app.protocol.errors import InvalidRequest
from serve_app.protocol.wire import parse


@dataclass
class CompletionRun:
    id: str
    created: int
    model: str
    request: CompletionRequest
    # One job per prompt; choice ``i`` of prompt ``p`` is index ``p * n + i``.
    jobs: list[Job]
    # Each prompt's text, for ``echo``.
    prompt_texts: list[str]

    @property
    def prompt_tokens(self) -> int:
        return sum(j.prompt_tokens for j in self.jobs)


def _tokens(prompt: str | list[int], index: int | None) -> list[int]:
    param = "prompt" if index is None else f"prompt.{index}"
    ids = encode_text(prompt) if isinstance(prompt, str) else prompt
    if not ids:
        raise InvalidRequest(f"{param}: the prompt is empty", param=param)
    bad = next((t for t in ids if not 0 <= t < VOCAB_SIZE), None)
    if bad is not None:
        raise InvalidRequest(f"{param}: token id {bad} is outside the vocabulary (0..{VOCAB_SIZE - 1})", param=param)
    return ids


class CompletionsService:
    def __init__(self, cfg: AppConfig, resolver: ModelResolver):
        self._cfg = cfg
        self._resolver = resolver

    async def accept(self, body: Any, principal: Principal = ANONYMOUS, arrived: float | None = None) -> CompletionRun:
        request: CompletionRequest = parse(CompletionRequest, body)
        prompts = request.prompts()
        stop = request.stop
        limits.check(
            self._cfg.limits,
            limits.RequestShape(
                prompts=len(prompts),
                n=request.n,
                stop=[stop] if isinstance(stop, str) else list(stop or []),
                logit_bias=request.logit_bias,
            ),
        )
        ref = await self._resolver.resolve(request.model, principal)
        many = len(prompts) > 1
        ids = [await asyncio.to_thread(_tokens, p, i if many else None) for i, p in enumerate(prompts)]
        arrived = time.monotonic() if arrived is None else arrived
        run_id = f"cmpl-{uuid.uuid4().hex}"
        jobs = []
        for i, prompt_ids in enumerate(ids):
            budget = completion_budget(
                self._cfg.model.max_model_len, len(prompt_ids), request.max_tokens, "prompt", "max_tokens"
            )
            jobs.append(
                Job(
                    id=f"{run_id}-{i}",
                    prompt_token_ids=prompt_ids,
                    ref=ref,
                    sampling=request_sampling(
                        self._cfg.sampling_defaults,
                        request,
                        max_tokens=budget,
                        logprobs=request.logprobs,
                    ),
                    new_parser=functools.partial(TextParser, request.skip_special_tokens),
                    n=request.n,
                    stop=[stop] if isinstance(stop, str) else list(stop or []),
                    logprobs=request.logprobs is not None,
                    principal=principal,
                    arrived=arrived,
                )
            )
        texts = [p if isinstance(p, str) else harmony_encoding().decode(p) if request.echo else "" for p in prompts]
        return CompletionRun(run_id, int(time.time()), request.model, request, jobs, texts)
