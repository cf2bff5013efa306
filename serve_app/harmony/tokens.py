"""Raw text and token ids in the o200k_harmony vocabulary, for endpoints without Harmony."""

from __future__ import annotations

import functools

from serve_app.harmony.encoding import harmony_encoding

# Ids of the o200k_harmony vocabulary (o200k_base plus Harmony's special tokens),
# which every gpt-oss model uses.
VOCAB_SIZE = 201088


def encode_text(text: str) -> list[int]:
    """Raw text as tokens, special tokens written in it included (as vLLM's completions do)."""
    return harmony_encoding().encode(text, allowed_special="all")


@functools.lru_cache(maxsize=4096)
def is_special(token_id: int) -> bool:
    """Cached: asked once per streamed token, and each answer is a call into Rust."""
    return harmony_encoding().is_special_token(token_id)
