"""Objects passed between the router and replicas over Ray handles.

Small and serializable: pydantic models in (once per request), token-id chunks
out (per engine step, as plain lists). They carry nothing of HTTP, OpenAI or Harmony.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    # An xgrammar structural tag (JSON) for vLLM's structured outputs, and the
    # request field it comes from (named in the 400 if the backend refuses it).
    structural_tag: str | None = None
    constraint_param: str | None = None
    # Token id -> bias (-100..100), as OpenAI's logit_bias.
    logit_bias: dict[int, float] | None = None


class GenerateRequest(BaseModel):
    """One completion to run on a replica."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1)
    prompt_token_ids: list[int] = Field(min_length=1)
    sampling: SamplingOptions = Field(default_factory=SamplingOptions)
    adapter: str | None = None


FinishReason = Literal["stop", "length", "abort", "error"]


@dataclass(slots=True)
class TokenChunk:
    """New token ids since the previous chunk; the last one carries the finish.

    Sent once per engine step per request: the hottest object of the token
    path. A slotted dataclass (cheap to build) that crosses the handle as a
    plain list (``to_wire``/``from_wire``), which pickle encodes in a
    microsecond, where a pydantic model costs tens of them through cloudpickle.
    """

    token_ids: list[int] = field(default_factory=list)
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

    def to_wire(self) -> list:
        return [
            self.token_ids,
            self.finish_reason,
            self.stop_reason,
            self.prompt_tokens,
            self.completion_tokens,
            self.logprobs,
        ]

    @classmethod
    def from_wire(cls, data: list | TokenChunk) -> TokenChunk:
        """A chunk from its wire form (a TokenChunk passes through: in-process callers and tests)."""
        if isinstance(data, TokenChunk):
            return data
        ids, finish, stop, prompt, completion, logprobs = data
        return cls(list(ids), finish, stop, prompt, completion, logprobs)
