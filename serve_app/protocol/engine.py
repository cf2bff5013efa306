"""Objects passed between the router and replicas over Ray handles.

Small, serializable pydantic models: token ids in, token-id chunks out. They
carry nothing of HTTP, OpenAI or Harmony.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SamplingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(-1)
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop_token_ids: list[int] = Field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = Field(None, ge=0)
    # An xgrammar structural tag (JSON) for vLLM's structured outputs.
    structural_tag: str | None = None


class GenerateRequest(BaseModel):
    """One completion to run on a replica."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1)
    prompt_token_ids: list[int] = Field(min_length=1)
    sampling: SamplingOptions = Field(default_factory=SamplingOptions)
    adapter: str | None = None


FinishReason = Literal["stop", "length", "abort", "error"]


class TokenChunk(BaseModel):
    """New token ids since the previous chunk; the last one carries the finish."""

    token_ids: list[int] = Field(default_factory=list)
    finish_reason: FinishReason | None = None
    # The stop token id (or string) that ended the sequence, if any.
    stop_reason: int | str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # With SamplingOptions.logprobs: per token, (sampled id, logprob) first,
    # then the top alternatives as (id, logprob), most likely first.
    logprobs: list[list[tuple[int, float]]] | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


def merge_chunks(chunks: list[TokenChunk]) -> TokenChunk:
    """Concatenate consecutive chunks of one stream into one."""
    last = chunks[-1]
    if len(chunks) == 1:
        return last
    ids = [t for c in chunks for t in c.token_ids]
    update: dict = {"token_ids": ids}
    if last.logprobs is not None:
        update["logprobs"] = [lp for c in chunks for lp in c.logprobs or []]
    return last.model_copy(update=update)
