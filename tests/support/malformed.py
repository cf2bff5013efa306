"""Adapters that must never reach the engine, each broken in one way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

# name -> what the replica must say is wrong
BROKEN = {
    "bad-shapes": "shape",
    "pickle-weights": "pickle",
    "wrong-base": "base model",
    "bad-json": "not valid JSON",
    "rank-too-high": "exceeds",
    "not-lora": "not a LoRA adapter",
    "garbage-weights": "safetensors",
    "escape": "outside the allowed adapter roots",
}


def populate(root: Path, good: Path, outside: Path) -> None:
    def clone(name: str) -> Path:
        dest = root / name
        shutil.copytree(good, dest)
        return dest

    d = clone("bad-shapes")
    tensors = load_file(d / "adapter_model.safetensors")
    key = next(k for k in tensors if "lora_A" in k)
    tensors[key] = np.zeros((tensors[key].shape[0], tensors[key].shape[1] + 3), dtype=tensors[key].dtype)
    save_file(tensors, d / "adapter_model.safetensors")

    d = clone("pickle-weights")  # pickle only: no safetensors beside it
    (d / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    (d / "adapter_model.safetensors").unlink()

    d = clone("wrong-base")
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "meta-llama/Llama-3.1-8B"
    (d / "adapter_config.json").write_text(json.dumps(cfg))

    d = clone("bad-json")
    (d / "adapter_config.json").write_text("{ this is not json")

    d = clone("rank-too-high")
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["r"] = 64
    (d / "adapter_config.json").write_text(json.dumps(cfg))

    d = clone("not-lora")
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["peft_type"] = "PREFIX_TUNING"
    (d / "adapter_config.json").write_text(json.dumps(cfg))

    d = clone("garbage-weights")
    (d / "adapter_model.safetensors").write_bytes(b"\xff" * 64)

    # A valid adapter outside the root, reachable only through a symlink.
    shutil.copytree(good, outside / "pirate-copy")
    (root / "escape").symlink_to(outside / "pirate-copy", target_is_directory=True)


# gpt-oss adapters (from a good attention+experts one) that vLLM cannot serve -> what the 422 must say
GPTOSS_REFUSED = {
    "oss-router": "router",
    "oss-lm-head": "lm_head",
    "oss-gate-up-only": "gate_up_proj + down_proj",
    "oss-reversed": "wrong weights",
    "oss-dora": "DoRA",
    "oss-bias": "bias",
}


def populate_gptoss(root: Path, good: Path, hidden: int, experts: int) -> None:
    def clone(name: str, **config) -> tuple[Path, dict]:
        dest = root / name
        shutil.copytree(good, dest)
        cfg = json.loads((dest / "adapter_config.json").read_text()) | config
        (dest / "adapter_config.json").write_text(json.dumps(cfg))
        return dest, load_file(dest / "adapter_model.safetensors")

    rank = json.loads((good / "adapter_config.json").read_text())["r"]
    d, t = clone("oss-router")
    t["base_model.model.model.layers.0.mlp.router.lora_A.weight"] = np.zeros((rank, hidden), np.float32)
    t["base_model.model.model.layers.0.mlp.router.lora_B.weight"] = np.zeros((experts, rank), np.float32)
    save_file(t, d / "adapter_model.safetensors")

    d, t = clone("oss-lm-head")
    t["base_model.model.lm_head.lora_A.weight"] = np.zeros((rank, hidden), np.float32)
    save_file(t, d / "adapter_model.safetensors")

    d, t = clone("oss-gate-up-only", target_parameters=["mlp.experts.gate_up_proj"])
    save_file({k: v for k, v in t.items() if "experts.lora_" not in k}, d / "adapter_model.safetensors")

    clone("oss-reversed", target_parameters=["mlp.experts.down_proj", "mlp.experts.gate_up_proj"])
    clone("oss-dora", use_dora=True)
    clone("oss-bias", bias="lora_only")
