"""OpenAI chat-completions request models (the wire, lenient: unknown fields ignored).

Covers the model card's schema (messages with roles system, developer, user,
assistant with ``tool_calls``, tool with ``tool_call_id``; content as a string
or text parts; temperature 0..2, top_p 0..1, n >= 1, max_tokens >= 1,
penalties -2..2) plus the fields clients send beside it. Validation errors
become 400s in the one error shape at the router.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from serve_app.protocol.wire import LogitBias, WireModel


class TextPart(WireModel):
    type: Literal["text"]
    text: str


Content = str | list[TextPart]


class FunctionCall(WireModel):
    name: str = Field(min_length=1)
    arguments: str = "{}"


class ToolCall(WireModel):
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(WireModel):
    role: Literal["system"]
    content: Content


class DeveloperMessage(WireModel):
    role: Literal["developer"]
    content: Content


class UserMessage(WireModel):
    role: Literal["user"]
    content: Content


class AssistantMessage(WireModel):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCall] | None = None
    # Clients send a turn's reasoning back under either name; it is kept only
    # while that turn's tool calls are in progress (see harmony.render).
    reasoning_content: str | None = None
    reasoning: str | None = None

    @model_validator(mode="after")
    def _has_something(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs content or tool_calls")
        return self


class ToolMessage(WireModel):
    role: Literal["tool"]
    content: Content
    tool_call_id: str = Field(min_length=1)


Message = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage,
    Field(discriminator="role"),
]


class FunctionDef(WireModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(WireModel):
    type: Literal["function"]
    function: FunctionDef


class NamedToolChoice(WireModel):
    type: Literal["function"]
    function: dict[str, str]

    @property
    def name(self) -> str:
        return self.function.get("name", "")


class StreamOptions(WireModel):
    include_usage: bool = False


class ResponseFormat(WireModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _schema_needs_a_name(self) -> ResponseFormat:
        # As OpenAI's API: type json_schema comes with json_schema.name (its schema is optional there).
        if self.type == "json_schema":
            if self.json_schema is None or not isinstance(self.json_schema.get("name"), str):
                raise ValueError("response_format json_schema needs json_schema with a name")
            schema = self.json_schema.get("schema")
            if schema is not None and not isinstance(schema, dict):
                raise ValueError("response_format json_schema.schema must be an object")
            description = self.json_schema.get("description")
            if description is not None and not isinstance(description, str):
                raise ValueError("response_format json_schema.description must be a string")
        return self


class ChatCompletionRequest(WireModel):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    # Bounded by limits.max_n (serve_app.endpoints.limits), as the other costly fields.
    n: int = Field(1, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    stop: str | list[str] | None = None
    # int64, as OpenAI's API and the engine's generators take it.
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    logit_bias: LogitBias | None = None
    user: str | None = None
    # vLLM's extensions, for clients written against `vllm serve`.
    top_k: int | None = Field(None, ge=-1, le=2**31 - 1)
    ignore_eos: bool = False

    @model_validator(mode="after")
    def _cross_field(self) -> ChatCompletionRequest:
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {t.function.name for t in self.tools or []}
            if self.tool_choice.name not in names:
                raise ValueError(f"tool_choice names function {self.tool_choice.name!r}, which is not in tools")
        if self.tool_choice == "required" and not self.tools:
            raise ValueError("tool_choice 'required' needs tools")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    @property
    def completion_limit(self) -> int | None:
        """``max_completion_tokens`` wins over the older ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens
