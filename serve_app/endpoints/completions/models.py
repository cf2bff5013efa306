"""``/v1/completions`` request model: raw text in, raw text out (no Harmony)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from serve_app.protocol.wire import LogitBias, WireModel


class StreamOptions(WireModel):
    include_usage: bool = False


class CompletionRequest(WireModel):
    model: str = Field(min_length=1)
    # A string, a list of strings, a list of token ids, or a list of those.
    prompt: str | list[str] | list[int] | list[list[int]]
    # OpenAI's default for this endpoint.
    max_tokens: int | None = Field(16, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    # Bounded by limits.max_n (serve_app.endpoints.limits), as the other costly fields.
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    stream: bool = False
    stream_options: StreamOptions | None = None
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)
    logit_bias: LogitBias | None = None
    user: str | None = None
    # vLLM's extensions, for clients written against `vllm serve`.
    top_k: int | None = Field(None, ge=-1, le=2**31 - 1)
    ignore_eos: bool = False
    skip_special_tokens: bool = True

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, v: str | None) -> str | None:
        if v:
            raise ValueError("insertion (fill-in-the-middle) is not supported by this model")
        return v

    @model_validator(mode="after")
    def _cross_field(self) -> CompletionRequest:
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of: only best_of equal to n is supported")
        if self.echo and self.logprobs is not None:
            raise ValueError("echo with logprobs is not supported (the engine returns no prompt logprobs)")
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt: must not be empty")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The prompts, one per entry of a batch request."""
        p: Any = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)
