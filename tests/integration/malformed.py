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
