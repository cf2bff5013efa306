"""The small response bodies of our own routes, as models (for ``/openapi.json``, and what the handlers build).

Chat, completions and responses bodies are OpenAI's (the ``openai`` SDK's
models describe them in the document); these are the rest: models, the
adapter admin API, deletions, health, and the one error shape.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from serve_app.adapters.registry import AdapterRecord
from serve_app.protocol.wire import WireModel


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """Every error of ours: ``{"error": {...}}`` with the HTTP status (OpenAI's shape)."""

    error: ErrorDetail


class Status(BaseModel):
    status: Literal["ok", "ready"]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    # The base model of an adapter ("gpt-oss-20b:<adapter>"); null for the base model.
    parent: str | None
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class CompletionChunkChoice(BaseModel):
    index: int
    text: str
    logprobs: dict[str, Any] | None = None
    # null until the choice's last chunk (the SDK's Completion model has no null here).
    finish_reason: Literal["stop", "length", "content_filter"] | None


class CompletionChunk(BaseModel):
    """One streamed event of ``/v1/completions`` (a usage-only last chunk has no choices)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    usage: dict[str, Any] | None = None


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response.deleted"]
    deleted: Literal[True]


class AdapterRegistration(WireModel):
    """``POST /v1/adapters``: a name, where its files are, and optionally the weights' expected sha256."""

    name: str = Field(min_length=1, description="The adapter's name; clients ask for gpt-oss-20b:<name>.")
    source: str = Field(
        min_length=1,
        description="A folder under an allowed root, s3://, gs://, hf://<org>/<repo> (if allowed), "
        "or devmodel:adapters/<name> on the dev model.",
    )
    sha256: str | None = Field(
        None, pattern=r"^[0-9a-fA-F]{64}$", description="Refuse the weights unless they hash to this."
    )


def _adapter_model() -> type[BaseModel]:
    """One registered adapter as the API shows it: the registry's record, with ``id`` and ``object``.

    Made from ``AdapterRecord``'s fields, so the document follows the registry.
    """
    hints = get_type_hints(AdapterRecord)
    fields: dict[str, Any] = {"id": (str, ...), "object": (Literal["adapter"], ...)}
    fields.update({f.name: (hints[f.name], ...) for f in dataclasses.fields(AdapterRecord)})
    return create_model("Adapter", __doc__=_adapter_model.__doc__, **fields)


Adapter = _adapter_model()


class AdapterList(BaseModel):
    object: Literal["list"]
    data: list[Adapter]  # type: ignore[valid-type]


class AdapterDeleted(BaseModel):
    id: str
    object: Literal["adapter"]
    deleted: Literal[True]


class Conversation(BaseModel):
    id: str
    object: Literal["conversation"]
    created_at: int
    metadata: dict[str, str]


class ConversationDeleted(BaseModel):
    id: str
    object: Literal["conversation.deleted"]
    deleted: Literal[True]


class InputTokens(BaseModel):
    object: Literal["response.input_tokens"]
    input_tokens: int


class Item(BaseModel):
    """An item of a response or conversation (a message, function call or output, reasoning), with its id."""

    model_config = ConfigDict(extra="allow")

    id: str
    type: str


class ItemList(BaseModel):
    """A page of items (a response's input items, a conversation's items): OpenAI's list shape."""

    object: Literal["list"]
    data: list[Item]
    first_id: str | None
    last_id: str | None
    has_more: bool


class Compaction(BaseModel):
    """``/v1/responses/compact``'s answer: the user's messages, then one ``compaction`` item."""

    id: str
    object: Literal["response.compaction"]
    created_at: int
    output: list[Item]
    usage: dict[str, Any]
