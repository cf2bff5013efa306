"""The adapter validation table per architecture: what is accepted, what is refused and why.

Adapters are written here as peft would save them (config + safetensors
header), for a gpt-oss base and a Llama base described by their config.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from serve_app.adapters.lora_targets import EXPERT_PARAMS, BaseShapes
from serve_app.adapters.validation import validate_adapter
from serve_app.protocol.errors import InvalidAdapter

HIDDEN, INTER, EXPERTS, LAYERS, R = 64, 48, 4, 2, 8
GPT_OSS = {
    "architectures": ["GptOssForCausalLM"],
    "hidden_size": HIDDEN,
    "intermediate_size": INTER,
    "head_dim": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_local_experts": EXPERTS,
    "num_hidden_layers": LAYERS,
}
LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": HIDDEN,
    "intermediate_size": 128,
    "head_dim": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": LAYERS,
}
PREFIX = "base_model.model.model.layers.{}."
ATTN_SHAPES = {"q_proj": (HIDDEN, 128), "k_proj": (HIDDEN, 64), "v_proj": (HIDDEN, 64), "o_proj": (128, HIDDEN)}


def attention_tensors(layers=range(LAYERS)) -> dict[str, tuple[int, ...]]:
    out = {}
    for i in layers:
        for m, (fan_in, fan_out) in ATTN_SHAPES.items():
            out[PREFIX.format(i) + f"self_attn.{m}.lora_A.weight"] = (R, fan_in)
            out[PREFIX.format(i) + f"self_attn.{m}.lora_B.weight"] = (fan_out, R)
    return out


def expert_tensors(layers=range(LAYERS)) -> dict[str, tuple[int, ...]]:
    out = {}
    for i in layers:
        p = PREFIX.format(i) + "mlp.experts."
        out[p + "base_layer.lora_A.weight"] = (R * EXPERTS, HIDDEN)  # gate_up_proj
        out[p + "base_layer.lora_B.weight"] = (2 * INTER, R * EXPERTS)
        out[p + "lora_A.weight"] = (R * EXPERTS, INTER)  # down_proj
        out[p + "lora_B.weight"] = (HIDDEN, R * EXPERTS)
    return out


def write(root: Path, tensors: dict[str, tuple[int, ...]], **config) -> Path:
    cfg = {
        "peft_type": "LORA",
        "r": R,
        "lora_alpha": 16,
        "base_model_name_or_path": "gpt-oss-dev",
        "bias": "none",
        "target_modules": list(ATTN_SHAPES),
        "target_parameters": list(EXPERT_PARAMS),
    } | config
    root.mkdir()
    (root / "adapter_config.json").write_text(json.dumps(cfg))
    save_file({k: np.zeros(s, dtype=np.float32) for k, s in tensors.items()}, str(root / "adapter_model.safetensors"))
    return root


def check(path: Path, base: dict):
    return validate_adapter(path, "a", max_rank=16, shapes=BaseShapes.from_config(base), max_bytes=1 << 30)


ACCEPTED = {
    "attention+experts": (lambda: attention_tensors() | expert_tensors(), {}),
    "attention only": (attention_tensors, {"target_parameters": None}),
    "experts only": (expert_tensors, {"target_modules": None}),
    "experts, short parameter names": (
        expert_tensors,
        {"target_modules": None, "target_parameters": ["gate_up_proj", "down_proj"]},
    ),
    "one layer only": (lambda: attention_tensors([1]), {"target_parameters": None}),
}


@pytest.mark.parametrize("case", list(ACCEPTED), ids=list(ACCEPTED))
def test_gpt_oss_accepts(tmp_path, case):
    tensors, config = ACCEPTED[case]
    spec = check(write(tmp_path / "a", tensors(), **config), GPT_OSS)
    assert spec.rank == R


def _drop(tensors: dict, *needles: str) -> dict:
    return {k: v for k, v in tensors.items() if not any(n in k for n in needles)}


def _full() -> dict:
    return attention_tensors() | expert_tensors()


# case -> (tensors, config overrides, words the refusal must contain)
REFUSED = {
    "router": (
        lambda: (
            _full()
            | {
                PREFIX.format(0) + "mlp.router.lora_A.weight": (R, HIDDEN),
                PREFIX.format(0) + "mlp.router.lora_B.weight": (EXPERTS, R),
            }
        ),
        {},
        ["router", "silently skipped"],
    ),
    "router as target module": (_full, {"target_modules": ["q_proj", "router"]}, ["router"]),
    "lm_head": (lambda: _full() | {"base_model.model.lm_head.lora_A.weight": (R, HIDDEN)}, {}, ["lm_head"]),
    "lm_head as target module": (_full, {"target_modules": ["lm_head"]}, ["lm_head", "ParallelLMHead"]),
    "embed_tokens": (
        lambda: _full() | {"base_model.model.model.embed_tokens.lora_embedding_A": (R, 201088)},
        {},
        ["embed_tokens"],
    ),
    "sinks parameter": (_full, {"target_parameters": ["self_attn.sinks"]}, ["sinks"]),
    "gate_up_proj alone": (
        lambda: _drop(_full(), "experts.lora_"),
        {"target_parameters": [EXPERT_PARAMS[0]]},
        ["pair", "crash"],
    ),
    "down_proj alone": (lambda: _drop(_full(), "base_layer"), {"target_parameters": [EXPERT_PARAMS[1]]}, ["pair"]),
    "expert weights of one layer missing": (
        lambda: _drop(_full(), "layers.1.mlp.experts.lora_"),
        {},
        ["layer 1", "down_proj"],
    ),
    "reversed parameter order": (_full, {"target_parameters": list(EXPERT_PARAMS[::-1])}, ["wrong weights"]),
    "expert shape": (lambda: _full() | {PREFIX.format(0) + "mlp.experts.lora_B.weight": (HIDDEN, R)}, {}, ["shape"]),
    "per-expert modules": (
        lambda: _full() | {PREFIX.format(0) + "mlp.experts.0.up_proj.lora_A.weight": (R, HIDDEN)},
        {},
        ["target_parameters layout"],
    ),
    "layer beyond the model": (lambda: _full() | attention_tensors([5]), {}, ["layer 5"]),
    "lora_B without lora_A": (lambda: _drop(_full(), "layers.0.self_attn.q_proj.lora_A"), {}, ["without its pair"]),
    "lora bias tensor": (lambda: _full() | {PREFIX.format(0) + "self_attn.q_proj.lora_B.bias": (128,)}, {}, ["bias"]),
    "lora_bias": (_full, {"lora_bias": True}, ["lora_bias", "bias"]),
    "bias": (_full, {"bias": "all"}, ["bias"]),
    "dora": (_full, {"use_dora": True}, ["DoRA"]),
    "modules_to_save": (_full, {"modules_to_save": ["lm_head"]}, ["modules_to_save"]),
    "rank_pattern": (_full, {"rank_pattern": {"q_proj": 4}}, ["rank_pattern"]),
    "pissa init": (_full, {"init_lora_weights": "pissa"}, ["init_lora_weights"]),
    "dense mlp on gpt-oss": (_full, {"target_modules": ["gate_proj"]}, ["gate_proj"]),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_gpt_oss_refuses_with_reason(tmp_path, case):
    tensors, config, words = REFUSED[case]
    with pytest.raises(InvalidAdapter) as err:
        check(write(tmp_path / "a", tensors(), **config), GPT_OSS)
    assert err.value.status == 422
    for w in words:
        assert w in err.value.message, err.value.message


def test_llama_refuses_expert_parameters(tmp_path):
    with pytest.raises(InvalidAdapter, match="3-D weights"):
        check(write(tmp_path / "a", attention_tensors()), LLAMA)


def test_llama_accepts_dense_projections(tmp_path):
    tensors = attention_tensors() | {
        PREFIX.format(0) + "mlp.down_proj.lora_A.weight": (R, 128),
        PREFIX.format(0) + "mlp.down_proj.lora_B.weight": (HIDDEN, R),
    }
    spec = check(
        write(tmp_path / "a", tensors, target_parameters=None, target_modules=[*ATTN_SHAPES, "down_proj"]), LLAMA
    )
    assert "down_proj" in spec.target_modules
