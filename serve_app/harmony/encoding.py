"""The process-wide Harmony encoding.

``openai_harmony`` needs ``o200k_base.tiktoken``; offline it reads it from the
folder named by ``TIKTOKEN_ENCODINGS_BASE`` (the dev-model build provides one).
"""

from __future__ import annotations

import functools
import os

from openai_harmony import HarmonyEncoding, HarmonyEncodingName, load_harmony_encoding


@functools.cache
def harmony_encoding() -> HarmonyEncoding:
    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


def assistant_stop_token_ids() -> list[int]:
    """``<|return|>`` and ``<|call|>``: the tokens that end an assistant action."""
    return list(harmony_encoding().stop_tokens_for_assistant_actions())


def use_vocab_dir(folder: str | None) -> None:
    """Read the vocabulary from ``folder`` (before the first ``harmony_encoding()``)."""
    if folder:
        os.environ["TIKTOKEN_ENCODINGS_BASE"] = folder


@functools.lru_cache(maxsize=65536)
def token_text(token_id: int) -> str:
    """One token's text (a token that ends inside a UTF-8 character decodes with U+FFFD)."""
    return harmony_encoding().decode([token_id])
