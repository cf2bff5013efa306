"""Token ids -> text, incrementally, for raw completions (no Harmony parsing).

A token can end inside a UTF-8 character; its text is held back until the
character completes, so no U+FFFD is ever streamed for a split character. Special
tokens are skipped unless asked for, as vLLM's completions do by default.
"""

from __future__ import annotations

from collections.abc import Iterable

from serve_app.harmony.encoding import harmony_encoding
from serve_app.harmony.parse import Delta
from serve_app.harmony.tokens import is_special

# Tokens a character can span: past this, what is held is emitted as is.
_MAX_HELD = 4


class TextParser:
    def __init__(self, skip_special_tokens: bool = True):
        self._enc = harmony_encoding()
        self._skip = skip_special_tokens
        self._held: list[int] = []
        self.content_positions: list[int] = []

    def feed(self, token_ids: Iterable[int]) -> Delta:
        self.content_positions = []
        out = []
        for i, tok in enumerate(token_ids):
            if self._skip and is_special(tok):
                continue
            self.content_positions.append(i)
            self._held.append(tok)
            text = self._enc.decode(self._held)
            if not text.endswith("\ufffd") or len(self._held) >= _MAX_HELD:
                out.append(text)
                self._held.clear()
        return Delta(content="".join(out))

    def finish(self, engine_finish_reason: str | None) -> tuple[Delta, str]:
        tail = self._enc.decode(self._held) if self._held else ""
        self._held.clear()
        return Delta(content=tail), "length" if engine_finish_reason == "length" else "stop"
