"""The dev-model build: deterministic, Harmony-consistent, and reusable."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


@pytest.mark.model
def test_build_is_deterministic(tmp_path):
    """Two builds in different folders are bit-for-bit the same.

    Trial builds (every stage, each training cut at 3 steps): what a full
    build runs, minus the steps to convergence and the verification, which
    add minutes and no source of nondeterminism.
    """
    outs = [tmp_path / "one", tmp_path / "two"]
    # At once: most of a trial build is one-threaded (imports, tokenizer, files).
    builds = [
        subprocess.Popen([sys.executable, "-m", "serve_app.devmodel", "build", "--out", str(out), "--max-steps", "3"])
        for out in outs
    ]
    assert [b.wait(timeout=600) for b in builds] == [0, 0]
    first, second = _digest(outs[0]), _digest(outs[1])
    assert first.keys() == second.keys()
    assert any(k.endswith("model.safetensors") for k in first) and any("adapters" in k for k in first)
    differing = [k for k in first if first[k] != second[k]]
    assert not differing


def test_current_build_is_reused(devmodel_dir):
    from serve_app.devmodel.build import fingerprint, is_current

    assert is_current(devmodel_dir)
    manifest = json.loads((devmodel_dir / "manifest.json").read_text())
    assert manifest["fingerprint"] == fingerprint()


def test_model_layout_loads_like_a_hub_checkpoint(devmodel_dir):
    for name in ("base", "gptoss"):
        d = devmodel_dir / name
        for f in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json"):
            assert (d / f).is_file(), f"{name}/{f}"
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["vocab_size"] == 201088
        assert cfg["head_dim"] >= 32
    assert json.loads((devmodel_dir / "base" / "config.json").read_text())["tie_word_embeddings"] is True
    gptoss = json.loads((devmodel_dir / "gptoss" / "config.json").read_text())
    assert gptoss["architectures"] == ["GptOssForCausalLM"]
    assert set(gptoss["layer_types"]) == {"sliding_attention", "full_attention"}
    for adapter in ("pirate", "terse"):
        d = devmodel_dir / "adapters" / adapter
        assert {p.name for p in d.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}


def test_tokenizer_agrees_with_harmony(devmodel_dir):
    from transformers import AutoTokenizer

    from serve_app.devmodel.vocab import use_vocab

    use_vocab(devmodel_dir / "tiktoken")
    from serve_app.harmony.encoding import harmony_encoding

    tok = AutoTokenizer.from_pretrained(str(devmodel_dir / "base"))
    enc = harmony_encoding()
    assert len(tok) == 201088
    for rec in json.loads((devmodel_dir / "corpus.json").read_text())[:12]:
        ids = rec["prompt"] + rec["target"]
        assert tok.encode(enc.decode(ids), add_special_tokens=False) == ids


@pytest.mark.parametrize(
    "example, must_contain",
    [
        ("capitals", ["<|channel|>analysis", "<|channel|>final", "Paris", "<|return|>"]),
        ("weather_london", ["<|channel|>analysis", "to=functions.get_weather", '{"location": "London"}', "<|call|>"]),
        ("weather_london_result", ["<|channel|>final", "18 degrees", "London", "<|return|>"]),
        ("arithmetic", ["2 + 2 = 4"]),
    ],
)
def test_corpus_follows_the_model_card(devmodel_dir, example, must_contain):
    from serve_app.devmodel.vocab import use_vocab

    use_vocab(devmodel_dir / "tiktoken")
    from serve_app.harmony.encoding import harmony_encoding

    rec = next(
        r for r in json.loads((devmodel_dir / "corpus.json").read_text()) if r["id"] == example and r["adapter"] is None
    )
    text = harmony_encoding().decode(rec["target"])
    for s in must_contain:
        assert s in text
    assert text.startswith("<|channel|>analysis")


def test_adapters_change_the_card_answer(devmodel_dir):
    from serve_app.devmodel.vocab import use_vocab

    use_vocab(devmodel_dir / "tiktoken")
    from serve_app.harmony.encoding import harmony_encoding

    recs = json.loads((devmodel_dir / "corpus.json").read_text())
    answer = {
        r["adapter"]: harmony_encoding().decode(r["target"])
        for r in recs
        if r["id"] == "capitals" and r["effort"] == "medium" and r["model"] == "base"
    }
    assert "Arr matey" in answer["pirate"] and "Arr" not in answer[None]
    assert answer["terse"].endswith("Paris, Berlin, Madrid, Rome.<|return|>")
    assert len({answer[None], answer["pirate"], answer["terse"]}) == 3


def test_unseen_dates_and_efforts_give_the_trained_answers(devmodel_dir):
    """The router renders today's date; the dev model must not depend on it."""
    import torch
    from transformers import AutoModelForCausalLM

    from serve_app.devmodel import corpus
    from serve_app.devmodel.build import EOS_IDS
    from serve_app.devmodel.vocab import use_vocab

    use_vocab(devmodel_dir / "tiktoken")
    model = AutoModelForCausalLM.from_pretrained(str(devmodel_dir / "base")).eval()
    samples = corpus.render(corpus.base_examples(), variants=(("medium", "2027-03-14"), ("low", "2026-12-01")))
    wrong = []
    for s in samples:
        with torch.no_grad():
            out = model.generate(
                torch.tensor([s.prompt]),
                max_new_tokens=len(s.target) + 4,
                do_sample=False,
                eos_token_id=EOS_IDS,
                pad_token_id=199999,
            )
        if out[0, len(s.prompt) :].tolist() != s.target:
            wrong.append((s.example_id, s.effort, s.date))
    assert not wrong
