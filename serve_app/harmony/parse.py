"""Parse a gpt-oss completion token stream into OpenAI-shaped deltas, incrementally.

``analysis`` becomes reasoning; ``final`` and plain ``commentary`` become
content; ``commentary`` addressed to ``functions.<name>`` becomes a tool call
whose arguments stream as they are generated. Output the model did not format
as Harmony never raises: what can be recovered is returned as content, and a
log line says how.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from openai_harmony import HarmonyEncoding, Role, StreamableParser, StreamState

from serve_app.harmony import lenient
from serve_app.harmony.encoding import harmony_encoding

logger = logging.getLogger(__name__)

CALL_TOKEN = 200012  # <|call|>
END_TOKENS = frozenset({200007, 200002, CALL_TOKEN})  # <|end|>, <|return|>, <|call|>: a message ends
FUNCTIONS = "functions."


@dataclass
class ToolCallDelta:
    """A piece of one tool call; ``id`` and ``name`` only on its first piece."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


@dataclass
class Delta:
    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content or self.tool_calls)

    def extend(self, other: Delta) -> None:
        self.reasoning += other.reasoning
        self.content += other.content
        self.tool_calls += other.tool_calls


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str = ""


def new_tool_call_id() -> str:
    return f"chatcmpl-tool-{uuid.uuid4().hex}"


class CompletionParser:
    """Feed completion token ids; get deltas; at the end, the finish reason."""

    def __init__(self, encoding: HarmonyEncoding | None = None, tools: bool = True):
        self._enc = encoding or harmony_encoding()
        # False when the request offered no function (no tools, or tool_choice
        # "none"): a call the model writes anyway is returned as content, never
        # as a tool call to a function the client did not define.
        self._tools = tools
        self._parser = StreamableParser(self._enc, role=Role.ASSISTANT)
        self._header: list[int] = []  # tokens of a header not yet complete
        self._raw: list[int] | None = None  # set once the stream stops being Harmony
        self._raw_in_header = False
        self._raw_sent: list[int] = []  # per recovered message: characters already sent
        # harmony message index (or ("text", i) for one recovered from text) -> tool-call index
        self._call_for_message: dict[int | tuple[str, int], int] = {}
        # Kept from the tokens, not asked of the parser per token: its ``messages``
        # and ``state`` are JSON built in Rust and decoded in Python on every call.
        self._done = 0  # messages completed (the index of the current one)
        self._in_header = True
        self._special: dict[int, bool] = {}
        self.reasoning = ""
        self.content = ""
        self.tool_calls: list[ToolCall] = []
        self.saw_call_token = False
        # Completion tokens that gave reasoning text (Responses' usage reports them).
        self.reasoning_tokens = 0
        # Positions, within the ids of the last ``feed``, of tokens that gave content.
        self.content_positions: list[int] = []

    def feed(self, token_ids: Iterable[int]) -> Delta:
        delta = Delta()
        self.content_positions = []
        for i, tok in enumerate(token_ids):
            if tok == CALL_TOKEN:
                self.saw_call_token = True
            special = self._is_special(tok)
            if self._raw is not None:
                self._raw.append(tok)
                if not special:
                    self.content_positions.append(i)
                continue
            try:
                self._parser.process(tok)
            except Exception as e:  # openai_harmony raises HarmonyError (and others) on bad structure
                self._to_raw(tok, f"unexpected token {tok}: {e}")
                continue
            self._track_header(tok, special)
            if special:  # a control token is never text the client sees
                if tok in END_TOKENS and len(self._parser.messages) > self._done:
                    delta.extend(self._finish_message(self._done))
                    self._done += 1
                continue
            piece = self._route(self._parser.last_content_delta or "")
            if piece.content:
                self.content_positions.append(i)
            elif piece.reasoning:
                self.reasoning_tokens += 1
            delta.extend(piece)
        if self._raw is not None:
            delta.extend(self._raw_delta())
        self._account(delta)
        return delta

    def finish(self, engine_finish_reason: str | None) -> tuple[Delta, str]:
        """Flush what is left; return it and the OpenAI finish reason."""
        delta = Delta()
        if self._raw is None:
            if self._parser.state == StreamState.HEADER and self._header_text():
                self._to_raw(None, "completion ended inside a message header")
                delta.extend(self._raw_delta(final=True))
            else:
                try:
                    self._parser.process_eos()
                except Exception as e:
                    logger.info("harmony: ignoring incomplete trailing header at end of completion: %s", e)
                if len(self._parser.messages) > self._done:
                    delta.extend(self._finish_message(self._done))
                    self._done += 1
        else:
            delta.extend(self._raw_delta(final=True))
        self._account(delta)
        if engine_finish_reason == "length":
            reason = "length"
        elif self.tool_calls:
            reason = "tool_calls"
        else:
            reason = "stop"
        return delta, reason

    # -- internals ---------------------------------------------------------

    def _is_special(self, tok: int) -> bool:
        special = self._special.get(tok)
        if special is None:
            special = self._special[tok] = self._enc.is_special_token(tok)
        return special

    def _track_header(self, tok: int, special: bool) -> None:
        """Keep the tokens of a header still open.

        Only a special token moves the parser between header and content, so
        its (JSON-decoded) state is asked only then, not for every text token.
        """
        if special:
            self._in_header = self._parser.state == StreamState.HEADER
        if self._in_header:
            self._header.append(tok)
        else:
            self._header.clear()

    def _header_text(self) -> str:
        return "".join(self._enc.decode([t]) for t in self._header if not self._is_special(t))

    def _route(self, text: str) -> Delta:
        if not text:
            return Delta()
        channel, recipient = self._parser.current_channel, self._parser.current_recipient
        if recipient and recipient.startswith(FUNCTIONS) and self._tools:
            return Delta(tool_calls=[self._tool_piece(recipient, text)])
        if channel == "analysis":
            return Delta(reasoning=text)
        if recipient:
            logger.info("harmony: message to unsupported recipient %r returned as content", recipient)
        return Delta(content=text)

    def _tool_piece(self, recipient: str, text: str) -> ToolCallDelta:
        msg_index = self._done
        if msg_index in self._call_for_message:
            idx = self._call_for_message[msg_index]
            self.tool_calls[idx].arguments += text
            return ToolCallDelta(index=idx, arguments=text)
        return self._new_call(msg_index, recipient, text)

    def _new_call(self, msg_index: int | tuple[str, int], recipient: str, arguments: str) -> ToolCallDelta:
        idx = len(self.tool_calls)
        self._call_for_message[msg_index] = idx
        call = ToolCall(id=new_tool_call_id(), name=recipient[len(FUNCTIONS) :], arguments=arguments)
        self.tool_calls.append(call)
        return ToolCallDelta(index=idx, arguments=arguments, id=call.id, name=call.name)

    def _finish_message(self, msg_index: int) -> Delta:
        """A tool call with no arguments streamed still has to be announced."""
        msg = self._parser.messages[msg_index]
        if (
            self._tools
            and msg.recipient
            and msg.recipient.startswith(FUNCTIONS)
            and msg_index not in self._call_for_message
        ):
            return Delta(tool_calls=[self._new_call(msg_index, msg.recipient, "{}")])
        return Delta()

    def _to_raw(self, tok: int | None, why: str) -> None:
        logger.warning("harmony: completion is not well-formed Harmony (%s); recovering the rest from its text", why)
        pending = list(self._header)
        self._raw_in_header = bool(pending) or self._in_header
        self._header.clear()
        self._raw = pending + ([tok] if tok is not None else [])

    def _raw_delta(self, final: bool = False) -> Delta:
        """What the text recovered so far adds (``serve_app.harmony.lenient``); never header text."""
        delta = Delta()
        text = self._enc.decode(self._raw or [])  # special tokens written out, as the model may spell them
        for i, msg in enumerate(lenient.split(text, self._raw_in_header, final)):
            if i == len(self._raw_sent):
                self._raw_sent.append(0)
            new = msg.text[self._raw_sent[i] :]
            self._raw_sent[i] = len(msg.text)
            if msg.route == "tool" and self._tools:
                key = ("text", i)
                if key not in self._call_for_message:
                    delta.tool_calls.append(self._new_call(key, FUNCTIONS + (msg.name or ""), new))
                elif new:
                    idx = self._call_for_message[key]
                    self.tool_calls[idx].arguments += new
                    delta.tool_calls.append(ToolCallDelta(index=idx, arguments=new))
            elif msg.route == "reasoning":
                delta.reasoning += new
            else:
                delta.content += new
        return delta

    def _account(self, delta: Delta) -> None:
        self.reasoning += delta.reasoning
        self.content += delta.content
