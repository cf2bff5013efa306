"""Responses: request (+ the stored conversation it continues) -> a ``Job``, and the store.

``previous_response_id`` continues a stored response of the same tenant: its
input items, then its output, then the new input. Instructions are not carried
over, as OpenAI's API does. The renderer decides which reasoning survives.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from serve_app.api.auth import ANONYMOUS, Principal
from serve_app.api.core import Job
from serve_app.api.models import ModelResolver
from serve_app.config import AppConfig, SamplingDefaults
from serve_app.endpoints import limits
from serve_app.endpoints.common import completion_budget, request_sampling
from serve_app.endpoints.conversations.service import ConversationService
from serve_app.endpoints.responses import compact, render
from serve_app.endpoints.responses.models import CompactRequest, InputItem, ItemReference, ResponsesRequest
from serve_app.endpoints.responses.output import ResponseWriter, new_id
from serve_app.harmony.chat import HarmonyPrompt, OutputRules, prepare_conversation
from serve_app.harmony.parse import CompletionParser
from serve_app.protocol.errors import InvalidRequest, RouteNotFound
from serve_app.protocol.wire import parse

_ITEMS = TypeAdapter(list[InputItem])


class ResponseNotFound(RouteNotFound):
    code = "response_not_found"


class PreviousResponseNotFound(InvalidRequest):
    """A ``previous_response_id`` that is unknown, expired, another tenant's, or not kept (``store: false``).

    A 400, as OpenAI's API answers it, with the code clients recover on.
    """

    code = "previous_response_not_found"


# A connection's own recent responses (WebSocket mode): id -> the items that continue it.
Recent = dict[str, list[dict[str, Any]]]


@dataclass
class ResponseRun:
    request: ResponsesRequest
    job: Job
    writer: ResponseWriter
    # The whole conversation this response answers, as input items (stored with it).
    input_items: list[dict[str, Any]]
    # The items of this request itself (added to its conversation, if it has one).
    new_items: list[dict[str, Any]] = field(default_factory=list)
    conversation: str | None = None

    def history(self) -> list[dict[str, Any]]:
        """What a response continuing this one starts from: its input, then its output."""
        return self.input_items + [as_input(i) for i in self.writer.output]


def _envelope(id: str, request: ResponsesRequest, effort: str, defaults: SamplingDefaults) -> dict[str, Any]:
    """The response object's fields that come from the request, with the settings in effect.

    As OpenAI's spec has them: sampling as used (the config's defaults where the
    request left a field out), tools with ``strict`` and ``parameters`` (null
    when not given), ``user`` left out when there is none (the spec has it as
    non-null when present); ``usage`` is the writer's (null until done).
    """
    fmt = request.text.format if request.text is not None else None
    text_format: dict[str, Any] = {"type": "text"}
    if fmt is not None and fmt.type != "text":
        text_format = fmt.model_dump(by_alias=True, exclude_none=True)
    choice = request.tool_choice
    return {
        "id": id,
        "object": "response",
        "created_at": int(time.time()),
        "model": request.model,
        "instructions": request.instructions,
        "metadata": request.metadata or {},
        "parallel_tool_calls": request.parallel_tool_calls,
        "temperature": defaults.temperature if request.temperature is None else request.temperature,
        "top_p": defaults.top_p if request.top_p is None else request.top_p,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "top_logprobs": request.top_logprobs,
        "tool_choice": choice if isinstance(choice, str) else choice.model_dump(),
        "tools": [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
                "strict": t.strict,
            }
            for t in request.tools
        ],
        "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": request.max_tool_calls,
        "previous_response_id": request.previous_response_id,
        "reasoning": {"effort": effort, "summary": None},
        "text": {"format": text_format},
        "store": request.store,
        **({"user": request.user} if request.user is not None else {}),
        "safety_identifier": request.safety_identifier,
        "prompt_cache_key": request.prompt_cache_key,
        "service_tier": "default",
        "truncation": "disabled",
        "background": request.background,
        "conversation": {"id": request.conversation} if request.conversation else None,
    }


def as_input(item: dict[str, Any]) -> dict[str, Any]:
    """An output item as the input item that replays it."""
    if item["type"] == "message":
        role = item.get("role", "assistant")
        part = "output_text" if role == "assistant" else "input_text"
        return {
            "type": "message",
            "role": role,
            "content": [{"type": part, "text": p.get("text", "")} for p in item.get("content", [])],
        }
    if item["type"] == "function_call":
        return {k: item[k] for k in ("type", "call_id", "name", "arguments")}
    if item["type"] == "function_call_output":
        return {k: item[k] for k in ("type", "call_id", "output")}
    if item["type"] == "reasoning":
        return {"type": "reasoning", "summary": [], "content": item.get("content") or []}
    return item


def shape(request: ResponsesRequest) -> limits.RequestShape:
    """What the request's costly fields come to, for ``limits.check``."""
    schemas = limits.tool_schemas((f"tools.{i}.parameters", t.parameters) for i, t in enumerate(request.tools))
    fmt = request.text.format if request.text is not None else None
    if fmt is not None and fmt.schema_ is not None:
        schemas.append(limits.Schema("text.format.schema", fmt.schema_))
    return limits.RequestShape(
        messages=len(request.items),
        messages_param="input",
        tools=[t.model_dump(exclude_none=True) for t in request.tools],
        schemas=schemas,
    )


class ResponsesService:
    def __init__(self, cfg: AppConfig, resolver: ModelResolver, store: Any, conversations: ConversationService):
        self._cfg = cfg
        self._resolver = resolver
        self._store = store
        self._conversations = conversations

    async def stored(self, principal: Principal, id: str, param: str | None = None) -> dict[str, Any]:
        record = await self._store.get.remote(principal.name, id) if self._store is not None else None
        if record is None:
            raise ResponseNotFound(f"Response with id '{id}' not found.", param=param)
        return record

    async def delete(self, principal: Principal, id: str) -> None:
        if self._store is None or not await self._store.delete.remote(principal.name, id):
            raise ResponseNotFound(f"Response with id '{id}' not found.")

    async def _resolve_references(self, principal: Principal, items: list[Any]) -> list[dict[str, Any]]:
        """The request's input items, each ``item_reference`` replaced by the caller's stored item.

        An id that is unknown, expired or another tenant's is the same 404,
        naming it: a reference never reaches another tenant's data.
        """
        wanted = [i.id for i in items if isinstance(i, ItemReference)]
        found: dict[str, dict[str, Any]] = {}
        if wanted:
            if self._store is not None:
                found = await self._store.items.remote(principal.name, sorted(set(wanted)))
            for index, item in enumerate(items):
                if isinstance(item, ItemReference) and item.id not in found:
                    raise ResponseNotFound(f"Item with id '{item.id}' not found.", param=f"input.{index}.id")
        out = []
        for item in items:
            if isinstance(item, ItemReference):
                # Only output items carry ids in the store (input items are kept without theirs).
                out.append(as_input(found[item.id]))
            else:
                out.append(item.model_dump(by_alias=True, exclude_none=True))
        return out

    async def save(self, run: ResponseRun) -> None:
        """Keep the finished response (``store``) and add its items to its conversation, if any."""
        if run.request.store and self._store is not None:
            await self._store.put.remote(run.job.principal.name, run.writer.response(), run.input_items)
        if run.conversation is not None and run.writer.status == "completed":
            await self._conversations.append(run.job.principal, run.conversation, run.new_items + run.writer.output)

    async def _history(self, principal: Principal, request: ResponsesRequest | CompactRequest, recent: Recent | None):
        """The stored (or, on a WebSocket, the connection's) items ``previous_response_id`` continues."""
        id = request.previous_response_id
        if not id:
            return []
        if recent is not None and id in recent:
            return recent[id]
        record = await self._store.get.remote(principal.name, id) if self._store is not None else None
        if record is None:
            raise PreviousResponseNotFound(f"Previous response with id '{id}' not found.", param="previous_response_id")
        return record["input_items"] + [as_input(i) for i in record["response"]["output"]]

    async def _window(
        self, request: ResponsesRequest | CompactRequest, principal: Principal, recent: Recent | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """All the items the response answers (history, then the request's own), and the request's own."""
        history = await self._history(principal, request, recent)
        if isinstance(request, ResponsesRequest) and request.conversation is not None:
            history = [as_input(i) for i in await self._conversations.history(principal, request.conversation)]
        new = compact.expand(await self._resolve_references(principal, request.items))
        input_items = history + new
        _check_calls(input_items, len(history))
        if len(input_items) > self._cfg.limits.max_messages:
            # With the stored ones of previous_response_id, which a client cannot see in its own request.
            limits.check(self._cfg.limits, limits.RequestShape(messages=len(input_items), messages_param="input"))
        return input_items, new

    async def _prepare(
        self, request: ResponsesRequest, principal: Principal, recent: Recent | None = None
    ) -> tuple[HarmonyPrompt, list[dict[str, Any]], list[dict[str, Any]], str]:
        """The request as a Harmony prompt: its history, references and tools; all its items; its own; the effort."""
        limits.check(self._cfg.limits, shape(request))
        input_items, new = await self._window(request, principal, recent)
        items = _ITEMS.validate_python(input_items)
        effort = render.effort(request, self._cfg.sampling_defaults.reasoning_effort)
        prompt = await asyncio.to_thread(
            prepare_conversation,
            render.messages(request.instructions, items),
            render.tools(request),
            render.rules(request),
            effort,
        )
        return prompt, input_items, new, effort

    async def compact(self, body: Any, principal: Principal = ANONYMOUS) -> dict[str, Any]:
        """``POST /v1/responses/compact``: the window without what gpt-oss would not see, sealed (``compact``)."""
        request: CompactRequest = parse(CompactRequest, body, deepest=True)
        await self._resolver.resolve(request.model, principal)
        if request.input is not None and isinstance(request.input, list):
            limits.check(self._cfg.limits, limits.RequestShape(messages=len(request.input), messages_param="input"))
        input_items, _ = await self._window(request, principal, None)
        items = _ITEMS.validate_python(input_items)
        prompt = await asyncio.to_thread(
            prepare_conversation, render.messages(request.instructions, items), [], OutputRules(), "medium"
        )
        window = compact.compacted(input_items)
        output = [compact.user_message(i, new_id("msg")) for i in window if compact.is_user(i)]
        output.append({"type": "compaction", "id": new_id("cmp"), "encrypted_content": compact.seal(window)})
        tokens = len(prompt.prompt_token_ids)
        return {
            "id": new_id("resp"),
            "object": "response.compaction",
            "created_at": int(time.time()),
            "output": output,
            "usage": {
                "input_tokens": tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": 0,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": tokens,
            },
        }

    async def input_tokens(self, body: Any, principal: Principal = ANONYMOUS) -> dict[str, Any]:
        """``POST /v1/responses/input_tokens``: the prompt's length as a generation would render it."""
        if isinstance(body, dict) and not body.get("model"):
            body = {**body, "model": self._cfg.model.served_name}  # optional here, as in OpenAI's API
        request: ResponsesRequest = parse(ResponsesRequest, body, deepest=True)
        await self._resolver.resolve(request.model, principal)
        prompt, _, _, _ = await self._prepare(request, principal)
        return {"object": "response.input_tokens", "input_tokens": len(prompt.prompt_token_ids)}

    async def accept(
        self, body: Any, principal: Principal = ANONYMOUS, arrived: float | None = None, recent: Recent | None = None
    ) -> ResponseRun:
        """The request validated and rendered; ``recent``: a WebSocket connection's own responses."""
        request: ResponsesRequest = parse(ResponsesRequest, body, deepest=True)
        ref = await self._resolver.resolve(request.model, principal)
        if self._store is None:
            if request.background:
                raise InvalidRequest("background needs stored responses (responses.enabled).", param="background")
            # responses.enabled is off: nothing is kept, and the response says so.
            request.store = False
        prompt, input_items, new, effort = await self._prepare(request, principal, recent)
        budget = completion_budget(
            self._cfg.model.max_model_len,
            len(prompt.prompt_token_ids),
            request.max_output_tokens,
            "input",
            "max_output_tokens",
        )
        id = new_id("resp")
        job = Job(
            id=id,
            prompt_token_ids=prompt.prompt_token_ids,
            ref=ref,
            sampling=request_sampling(
                self._cfg.sampling_defaults,
                request,
                max_tokens=budget,
                stop_token_ids=prompt.stop_token_ids,
                structural_tag=prompt.structural_tag,
                constraint_param=prompt.constraint_param,
            ),
            new_parser=functools.partial(CompletionParser, tools=prompt.tools_offered),
            principal=principal,
            arrived=time.monotonic() if arrived is None else arrived,
        )
        writer = ResponseWriter(
            _envelope(id, request, effort, self._cfg.sampling_defaults), self._cfg.responses.reasoning_events
        )
        return ResponseRun(request, job, writer, input_items, new, request.conversation)


def _check_calls(items: list[dict[str, Any]], first_own: int) -> None:
    """Every ``function_call_output`` answers a ``function_call`` before it (a 400 naming it, as OpenAI's API)."""
    called: set[str] = set()
    for index, item in enumerate(items):
        if item.get("type") == "function_call":
            called.add(item.get("call_id", ""))
        elif item.get("type") == "function_call_output" and item.get("call_id") not in called:
            own = index - first_own
            raise InvalidRequest(
                f"No tool call found for function call output with call_id '{item.get('call_id')}'.",
                param=f"input.{own}.call_id" if own >= 0 else "previous_response_id",
            )
