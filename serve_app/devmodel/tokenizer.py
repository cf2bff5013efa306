"""A Hugging Face fast tokenizer for the o200k_harmony vocabulary (201088 ids).

o200k_base holds ids 0..199997; Harmony's special tokens fill 199998..201087
(``<|startoftext|>``, ``<|endoftext|>``, ``<|return|>``, ``<|constrain|>``,
``<|channel|>``, ``<|start|>``, ``<|end|>``, ``<|message|>``, ``<|call|>`` and
reserved slots). vLLM loads the saved folder like a hub checkpoint's tokenizer.
"""

from __future__ import annotations

from pathlib import Path

VOCAB_SIZE = 201088
FIRST_SPECIAL = 199998
NAMED_SPECIALS = {
    199998: "<|startoftext|>",
    199999: "<|endoftext|>",
    200002: "<|return|>",
    200003: "<|constrain|>",
    200005: "<|channel|>",
    200006: "<|start|>",
    200007: "<|end|>",
    200008: "<|message|>",
    200012: "<|call|>",
}


def special_tokens() -> list[str]:
    """Special-token strings in id order, starting at FIRST_SPECIAL."""
    return [NAMED_SPECIALS.get(i, f"<|reserved_{i}|>") for i in range(FIRST_SPECIAL, VOCAB_SIZE)]


def build_tokenizer(vocab_file: Path, out: Path) -> None:
    """Convert the tiktoken vocabulary into ``tokenizer.json`` + config in ``out``."""
    import tiktoken
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    # The split pattern of o200k_base, read from tiktoken (offline through
    # TIKTOKEN_CACHE_DIR, which vocab.use_vocab points at the checked file).
    pattern = tiktoken.get_encoding("o200k_base")._pat_str
    specials = special_tokens()
    backend = TikTokenConverter(vocab_file=str(vocab_file), pattern=pattern, extra_special_tokens=specials).converted()
    for offset, special in enumerate(specials):
        if backend.token_to_id(special) != FIRST_SPECIAL + offset:
            raise RuntimeError(f"special token {special} landed on id {backend.token_to_id(special)}")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|startoftext|>",
        eos_token="<|return|>",
        pad_token="<|endoftext|>",
        model_max_length=131072,
    )
    tok.save_pretrained(str(out))
