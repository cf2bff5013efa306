"""What a LoRA adapter may carry for the served base model, per architecture family.

Derived from the base model's ``config.json`` and from what vLLM 0.32 loads:

- Llama family (``LlamaForCausalLM`` and its kin): dense projections
  ``q/k/v/o_proj`` and ``gate/up/down_proj``, each ``lora_A [r, in]`` /
  ``lora_B [out, r]``.
- gpt-oss (``GptOssForCausalLM``): attention ``q/k/v/o_proj`` as above, and
  the MoE experts in peft's ``target_parameters`` layout, the one OpenAI's
  gpt-oss fine-tuning recipe produces
  (``target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]``).
  peft wraps the first parameter innermost, so ``mlp.experts.base_layer.lora_*``
  is ``gate_up_proj`` (A ``[r*E, hidden]``, B ``[2*intermediate, r*E]``) and
  ``mlp.experts.lora_*`` is ``down_proj`` (A ``[r*E, intermediate]``,
  B ``[hidden, r*E]``). vLLM reads exactly that naming
  (``LoRAModelManager._stack_moe_lora_weights``: "experts.base_layer is the
  gate_up_proj and experts is the down_proj") and asserts both are present.

``REFUSED`` lists what vLLM cannot serve for gpt-oss and why (from its code);
registration refuses those with a 422 that names the tensor or field. Nothing
here imports vLLM.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

GPT_OSS = "GptOssForCausalLM"
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
DENSE_MLP = ("gate_proj", "up_proj", "down_proj")
# peft's target_parameters for gpt-oss experts, in the only order vLLM reads.
EXPERT_PARAMS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")

# Kinds of tensor or config field vLLM 0.32 cannot serve on gpt-oss, with the reason from its code.
REFUSED: dict[str, str] = {
    "router": "vLLM's gpt-oss MoE reads router.weight directly on some platforms "
    "(GptOssMoE.forward, ROCm path), so a LoRA on the router would be silently skipped there",
    "lm_head": "gpt-oss's lm_head is a ParallelLMHead, not a LoRA-capable linear layer, and "
    "GptOssForCausalLM declares no embedding_modules (vllm.lora.utils.get_supported_lora_modules)",
    "embed_tokens": "gpt-oss's embedding is a VocabParallelEmbedding and GptOssForCausalLM declares no "
    "embedding_modules, so vLLM has no LoRA layer for it",
    "sinks": "attention sinks are a parameter, not a linear layer; vLLM has no LoRA for them",
    "single expert parameter": "vLLM loads gpt-oss expert LoRA only as the pair gate_up_proj + down_proj "
    "(LoRAModelManager._stack_moe_lora_weights asserts both; one alone would crash the engine)",
    "expert parameter order": "vLLM takes experts.base_layer as gate_up_proj; with down_proj first peft "
    "saves them the other way round and vLLM would apply them to the wrong weights",
    "per-expert modules": "gpt-oss experts are fused 3-D weights: vLLM 0.32 loads them only in peft's "
    "target_parameters layout",
    "bias": "vLLM does not support LoRA bias (PEFTHelper._validate_features: lora_bias, bias != 'none')",
    "dora": "vLLM does not yet support DoRA (PEFTHelper._validate_features)",
    "modules_to_save": "vLLM supports modules_to_save only for classifier/score heads (PEFTHelper)",
    "rank_pattern": "per-module ranks are not checked here against vLLM's stacked expert buffers; use one rank r",
}


@dataclass(frozen=True)
class BaseShapes:
    """The LoRA targets of one base model: (in, out) of each projection, and its experts."""

    modules: dict[str, tuple[int, int]]
    architecture: str = "LlamaForCausalLM"
    num_layers: int = 0
    num_experts: int = 0
    # peft target_parameter -> (in, out) of one expert's weight.
    expert_params: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def is_gpt_oss(self) -> bool:
        return self.architecture == GPT_OSS

    @classmethod
    def from_config(cls, cfg: dict) -> BaseShapes:
        hidden = cfg["hidden_size"]
        head_dim = cfg.get("head_dim") or hidden // cfg["num_attention_heads"]
        q = cfg["num_attention_heads"] * head_dim
        kv = cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * head_dim
        inter = cfg.get("intermediate_size", 0)
        attention = {"q_proj": (hidden, q), "k_proj": (hidden, kv), "v_proj": (hidden, kv), "o_proj": (q, hidden)}
        arch = (cfg.get("architectures") or ["LlamaForCausalLM"])[0]
        layers = cfg.get("num_hidden_layers", 0)
        if arch == GPT_OSS:
            return cls(
                attention,
                arch,
                layers,
                cfg["num_local_experts"],
                {EXPERT_PARAMS[0]: (hidden, 2 * inter), EXPERT_PARAMS[1]: (inter, hidden)},
            )
        dense = {"gate_proj": (hidden, inter), "up_proj": (hidden, inter), "down_proj": (inter, hidden)}
        return cls(attention | dense, arch, layers)

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> BaseShapes:
        """From a checkpoint folder's ``config.json``, or a hub id's (downloaded)."""
        local = Path(model_dir) / "config.json"
        if local.is_file():
            return cls.from_config(json.loads(local.read_text()))
        from huggingface_hub import hf_hub_download

        return cls.from_config(json.loads(Path(hf_hub_download(str(model_dir), "config.json")).read_text()))


_LAYER = r"\.layers\.(?P<layer>\d+)\."
_DENSE_RE = re.compile(_LAYER + r"(?:self_attn|mlp)\.(?P<module>[a-z_]+)\.lora_(?P<ab>[AB])\.weight$")
_EXPERTS_RE = re.compile(_LAYER + r"mlp\.experts\.(?P<base>base_layer\.)?lora_(?P<ab>[AB])\.weight$")


@dataclass(frozen=True)
class TensorRule:
    """What one tensor of an adapter is, and the shape it must have."""

    kind: str  # a target module name, or a peft target parameter
    layer: int
    ab: str
    shape: tuple[int, int]


def expected_tensor(key: str, shapes: BaseShapes, targets: set[str], params: tuple[str, ...], rank: int) -> TensorRule:
    """The rule for tensor ``key``; raises ValueError saying why it cannot be served."""
    if key.endswith(".bias"):
        raise ValueError(f"LoRA bias cannot be served: {REFUSED['bias']}")
    if "lora_magnitude_vector" in key:
        raise ValueError(f"DoRA cannot be served: {REFUSED['dora']}")
    m = _EXPERTS_RE.search(key)
    if m and shapes.is_gpt_oss:
        if not params:
            raise ValueError("expert tensors but no target_parameters in the config")
        param = params[0] if m["base"] or len(params) == 1 else params[1]
        fan_in, fan_out = shapes.expert_params[param]
        width = rank * shapes.num_experts
        shape = (width, fan_in) if m["ab"] == "A" else (fan_out, width)
        return TensorRule(param, int(m["layer"]), m["ab"], shape)
    m = _DENSE_RE.search(key)
    if not m or m["module"] not in targets or m["module"] not in shapes.modules:
        kind = next((k for k in REFUSED if f".{k}." in key or f".{k}.lora" in key), None)
        if kind is not None:
            raise ValueError(f"LoRA on {kind} cannot be served: {REFUSED[kind]}")
        if ".experts." in key:
            raise ValueError(REFUSED["per-expert modules"] if shapes.is_gpt_oss else "this base model has no experts")
        raise ValueError("not a LoRA weight of a module the adapter targets and the engine supports")
    fan_in, fan_out = shapes.modules[m["module"]]
    return TensorRule(m["module"], int(m["layer"]), m["ab"], (rank, fan_in) if m["ab"] == "A" else (fan_out, rank))


def check_target_parameters(params: list[str], shapes: BaseShapes) -> tuple[str, ...]:
    """peft's ``target_parameters`` normalized to EXPERT_PARAMS names; ValueError if vLLM cannot load them."""
    if not params:
        return ()
    if not shapes.is_gpt_oss:
        raise ValueError(f"target_parameters {params} target 3-D weights this base model does not have")
    names = []
    for p in params:
        full = next((e for e in EXPERT_PARAMS if e == p or e.endswith("." + p) or p.endswith("." + e)), None)
        if full is None:
            raise ValueError(
                f"target_parameters: {p!r} cannot be served (vLLM loads LoRA on gpt-oss experts' "
                f"{EXPERT_PARAMS[0]} and {EXPERT_PARAMS[1]} only)"
            )
        names.append(full)
    if len(names) == 1:
        raise ValueError(f"target_parameters {params}: {REFUSED['single expert parameter']}")
    if tuple(names) != EXPERT_PARAMS:
        raise ValueError(f"target_parameters {params}: {REFUSED['expert parameter order']}")
    return EXPERT_PARAMS
