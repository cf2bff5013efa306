"""``/v1/responses`` request models (the wire, lenient: unknown fields ignored).

Input is a string or a list of items: messages (a role and text, as a string or
``input_text``/``output_text`` parts), ``function_call``, ``function_call_output``
and ``reasoning`` items, as the official SDK and the Agents SDK send them,
output items of an earlier response included (their ``id`` and ``status`` are
ignored). Only function tools exist here; anything else is refused by name.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from serve_app.protocol.wire import WireModel

TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "reasoning_text")


class TextPart(WireModel):
    type: str
    text: str = ""

    @field_validator("type")
    @classmethod
    def _text_only(cls, v: str) -> str:
        if v not in TEXT_PARTS:
            raise ValueError(f"content of type {v!r} is not supported (text only: input_text, output_text)")
        return v


def _text(content: str | list[TextPart] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text for p in content)


class MessageItem(WireModel):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[TextPart]

    @property
    def text(self) -> str:
        return _text(self.content)


class FunctionCallItem(WireModel):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str = "{}"


class FunctionCallOutputItem(WireModel):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[TextPart]

    @property
    def text(self) -> str:
        return _text(self.output)


class ReasoningItem(WireModel):
    type: Literal["reasoning"]
    summary: list[TextPart] = Field(default_factory=list)
    content: list[TextPart] | None = None

    @property
    def text(self) -> str:
        """The reasoning itself (``reasoning_text``); else its summary."""
        return _text(self.content) if self.content else _text(self.summary)


class ItemReference(WireModel):
    """An item of a stored response, by its id (OpenAI's ``ItemReferenceParam``: ``type`` may be left out)."""

    type: Literal["item_reference"] = "item_reference"
    id: str = Field(min_length=1, max_length=256)


class CompactionItem(WireModel):
    """A window sealed by ``/v1/responses/compact`` (opened before rendering: ``compact.expand``)."""

    type: Literal["compaction"]
    encrypted_content: str = Field(max_length=10 * 1024 * 1024)


KINDS = ("message", "function_call", "function_call_output", "reasoning", "item_reference", "compaction")


def _item_kind(v: Any) -> str:
    if isinstance(v, dict):
        default = "item_reference" if "role" not in v and "id" in v else "message"
        kind = v.get("type", default)
    else:
        kind = getattr(v, "type", "message")
    return kind if kind in KINDS else "unsupported"


class UnsupportedItem(WireModel):
    type: str

    @model_validator(mode="after")
    def _refuse(self) -> UnsupportedItem:
        raise ValueError(
            f"input items of type {self.type!r} are not supported "
            "(message, function_call, function_call_output, reasoning, item_reference, compaction)"
        )


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[ItemReference, Tag("item_reference")]
    | Annotated[CompactionItem, Tag("compaction")]
    | Annotated[UnsupportedItem, Tag("unsupported")],
    Discriminator(_item_kind),
]


class FunctionTool(WireModel):
    type: str
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("type")
    @classmethod
    def _function_only(cls, v: str) -> str:
        if v != "function":
            raise ValueError(f"tools of type {v!r} are not supported (function only)")
        return v


class NamedFunction(WireModel):
    type: Literal["function"]
    name: str = Field(min_length=1)


class Reasoning(WireModel):
    # "minimal" (OpenAI's newer models) is gpt-oss's "low".
    effort: Literal["minimal", "low", "medium", "high"] | None = None
    summary: str | None = None


class TextFormat(WireModel):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = Field(None, min_length=1, max_length=64)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _schema_needs_a_name(self) -> TextFormat:
        # As OpenAI's API: a json_schema format names its schema and gives it.
        if self.type == "json_schema":
            if self.name is None:
                raise ValueError("a json_schema format needs a name")
            if self.schema_ is None:
                raise ValueError("a json_schema format needs a schema")
        return self


class TextConfig(WireModel):
    format: TextFormat = Field(default_factory=TextFormat)


class ResponsesRequest(WireModel):
    model: str = Field(min_length=1)
    input: str | list[InputItem]
    instructions: str | None = None
    tools: list[FunctionTool] = Field(default_factory=list)
    tool_choice: Literal["auto", "none", "required"] | NamedFunction = "auto"
    parallel_tool_calls: bool = True
    reasoning: Reasoning | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    metadata: dict[str, str] | None = None
    # Beside sampling: echoed in the response as given (OpenAI's and Open Responses' objects carry them).
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    top_logprobs: int = Field(0, ge=0, le=20)
    max_tool_calls: int | None = Field(None, ge=1)
    safety_identifier: str | None = Field(None, max_length=64)
    prompt_cache_key: str | None = None
    store: bool = True
    previous_response_id: str | None = None
    # A conversation (its id, or {"id": ...}; kept as the id): its items are the history, the
    # response's items are added to it.
    conversation: str | None = None
    stream: bool = False
    # Run detached from the connection: poll, resume the stream or cancel it from any replica.
    background: bool = False
    user: str | None = None
    # Beside OpenAI's fields, as vLLM's server takes them.
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    top_k: int | None = Field(None, ge=-1, le=2**31 - 1)
    # Exactly max_output_tokens (benchmarks), as for chat.
    ignore_eos: bool = False

    @field_validator("conversation", mode="before")
    @classmethod
    def _conversation_id(cls, v: Any) -> Any:
        if isinstance(v, dict):
            v = v.get("id", "")
        if v is not None and (not isinstance(v, str) or not v):
            raise ValueError("a conversation id, or an object with its id")
        return v

    @model_validator(mode="after")
    def _cross_field(self) -> ResponsesRequest:
        if isinstance(self.tool_choice, NamedFunction):
            if self.tool_choice.name not in {t.name for t in self.tools}:
                raise ValueError(f"tool_choice names function {self.tool_choice.name!r}, which is not in tools")
        if self.tool_choice == "required" and not self.tools:
            raise ValueError("tool_choice 'required' needs tools")
        if self.metadata is not None and len(self.metadata) > 16:
            raise ValueError("metadata: at most 16 pairs")
        if isinstance(self.input, list) and not self.input and not self.previous_response_id:
            raise ValueError("input: must not be empty")
        if self.conversation is not None and self.previous_response_id:
            raise ValueError("conversation and previous_response_id cannot be used together")
        if self.background and not self.store:
            raise ValueError("background: true needs store: true (the run is polled and resumed from the store)")
        return self

    @property
    def items(self) -> list[Any]:
        if isinstance(self.input, str):
            return [MessageItem(role="user", content=self.input)]
        return list(self.input)


class CompactRequest(WireModel):
    """``POST /v1/responses/compact``: a window to compact (``model`` required, as in OpenAI's API)."""

    model: str = Field(min_length=1)
    input: str | list[InputItem] | None = None
    previous_response_id: str | None = None
    instructions: str | None = None

    @model_validator(mode="after")
    def _something_to_compact(self) -> CompactRequest:
        if not self.input and not self.previous_response_id:
            raise ValueError("input: give the items to compact (or previous_response_id)")
        return self

    @property
    def items(self) -> list[Any]:
        if self.input is None:
            return []
        if isinstance(self.input, str):
            return [MessageItem(role="user", content=self.input)]
        return list(self.input)
