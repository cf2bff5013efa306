"""What every endpoint decides the same way: the completion budget and sampling."""

from __future__ import annotations

from serve_app.config import SamplingDefaults
from serve_app.protocol.engine import SamplingOptions
from serve_app.protocol.errors import InvalidRequest


def completion_budget(context: int, prompt_tokens: int, asked: int | None, prompt_param: str, limit_param: str) -> int:
    """Tokens the completion may take: what was asked, or the rest of the context.

    A prompt that leaves no room, or a request beyond the context, is a 400
    with code ``context_length_exceeded``, as OpenAI's API answers.
    """
    if asked is None:
        if prompt_tokens >= context:
            raise InvalidRequest(
                f"This model's maximum context length is {context} tokens, and the {prompt_param} "
                f"take {prompt_tokens} tokens, leaving no room for a completion.",
                param=prompt_param,
                code="context_length_exceeded",
            )
        return context - prompt_tokens
    if prompt_tokens + asked > context:
        raise InvalidRequest(
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt_tokens + asked} tokens ({prompt_tokens} in the {prompt_param}, {asked} in the completion). "
            f"Please reduce the length of the {prompt_param} or the completion.",
            param=limit_param,
            code="context_length_exceeded",
        )
    return asked


# Sampling fields that chat, responses and completions requests spell the same way.
_REQUEST_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "ignore_eos",
    "logit_bias",
)


def request_sampling(defaults: SamplingDefaults, request: object, **engine) -> SamplingOptions:
    """``sampling`` with every shared field the request model has; ``engine``: the rest (budget, stops, grammar)."""
    fields = {f: getattr(request, f) for f in _REQUEST_FIELDS if hasattr(request, f)}
    return sampling(defaults, **fields, **engine)


def sampling(
    defaults: SamplingDefaults,
    *,
    max_tokens: int,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    seed: int | None = None,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    stop_token_ids: list[int] | None = None,
    ignore_eos: bool = False,
    structural_tag: str | None = None,
    constraint_param: str | None = None,
    logprobs: int | None = None,
    logit_bias: dict[int, float] | None = None,
) -> SamplingOptions:
    """Engine sampling from a request's fields, the config's defaults filling what it left out."""
    k = defaults.top_k if top_k is None else top_k
    return SamplingOptions(
        max_tokens=max_tokens,
        temperature=defaults.temperature if temperature is None else temperature,
        top_p=max(defaults.top_p if top_p is None else top_p, 1e-6),  # vLLM refuses 0
        top_k=-1 if k == 0 else k,
        seed=seed,
        presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty,
        # ignore_eos asks for exactly max_tokens (benchmarks): the end of the
        # assistant's turn must not stop it either.
        stop_token_ids=[] if ignore_eos else list(stop_token_ids or []),
        ignore_eos=ignore_eos,
        structural_tag=structural_tag,
        constraint_param=constraint_param,
        logprobs=logprobs,
        logit_bias=logit_bias or None,
    )
