"""Check LoRA adapters before they are registered or reach an engine.

vLLM's engine core was seen to die (EngineDeadError) on a malformed adapter,
so every adapter is checked here first, by the manager when it is registered
and again by a replica before ``add_lora``: a strict name; an
``adapter_config.json`` that peft parses as a LoRA config, trained for the
served base model, with a rank and target modules the engine accepts; and
safetensors weights (never pickle ``.bin``) whose tensor names and shapes fit
the base model. Where an adapter may come from is the store's business
(``serve_app.adapters.store``). Nothing here imports vLLM; peft (and torch)
load only when a config is checked.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from serve_app.protocol.errors import InvalidAdapter

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_TENSOR_RE = re.compile(r"\.(?P<module>[a-z_]+)\.lora_(?P<ab>[AB])\.weight$")


@dataclass(frozen=True)
class BaseShapes:
    """(in_features, out_features) of each projection LoRA may target."""

    modules: dict[str, tuple[int, int]]

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> BaseShapes:
        """From a checkpoint folder's ``config.json``, or a hub id's (downloaded)."""
        local = Path(model_dir) / "config.json"
        if local.is_file():
            cfg = json.loads(local.read_text())
        else:
            from huggingface_hub import hf_hub_download

            cfg = json.loads(Path(hf_hub_download(str(model_dir), "config.json")).read_text())
        hidden = cfg["hidden_size"]
        head_dim = cfg.get("head_dim") or hidden // cfg["num_attention_heads"]
        q = cfg["num_attention_heads"] * head_dim
        kv = cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * head_dim
        inter = cfg.get("intermediate_size", 0)
        return cls(
            {
                "q_proj": (hidden, q),
                "k_proj": (hidden, kv),
                "v_proj": (hidden, kv),
                "o_proj": (q, hidden),
                "gate_proj": (hidden, inter),
                "up_proj": (hidden, inter),
                "down_proj": (inter, hidden),
            }
        )


@dataclass(frozen=True)
class AdapterSpec:
    """A checked adapter, ready for the engine."""

    name: str
    path: str
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    size_bytes: int
    base_model: str = ""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidAdapter(f"invalid adapter name {name!r}: must match {NAME_RE.pattern}", param="model")
    return name


def _read_header(weights: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="numpy") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for corrupt files
        raise InvalidAdapter(f"{WEIGHTS_FILE} is not a readable safetensors file: {e}") from e


def _peft_config(path: Path, name: str):
    """Parse the config the way peft loads it: a LoRA config or a refusal."""
    from peft import LoraConfig

    try:
        return LoraConfig.from_pretrained(str(path))
    except Exception as e:  # peft raises TypeError/ValueError for configs it cannot build
        raise InvalidAdapter(f"adapter {name!r}: {CONFIG_FILE} is not a valid peft LoRA config: {e}") from e


def validate_adapter(
    path: Path,
    name: str,
    *,
    max_rank: int,
    shapes: BaseShapes,
    max_bytes: int,
    base_models: frozenset[str] | None = None,
) -> AdapterSpec:
    """Check an adapter folder; raise InvalidAdapter saying why it is refused.

    ``base_models``: the names an adapter's ``base_model_name_or_path`` may
    carry for the served model (None: not checked).
    """
    if any(path.glob("*.bin")) or any(path.glob("*.pt")) or any(path.glob("*.pth")):
        raise InvalidAdapter(f"adapter {name!r} ships pickle weights (.bin/.pt); only safetensors are accepted")
    try:
        cfg = json.loads((path / CONFIG_FILE).read_text())
    except FileNotFoundError as e:
        raise InvalidAdapter(f"adapter {name!r} has no {CONFIG_FILE}") from e
    except ValueError as e:
        raise InvalidAdapter(f"adapter {name!r}: {CONFIG_FILE} is not valid JSON") from e
    if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
        raise InvalidAdapter(f"adapter {name!r} is not a LoRA adapter (peft_type must be LORA)")
    if base_models is not None and cfg.get("base_model_name_or_path") not in base_models:
        raise InvalidAdapter(
            f"adapter {name!r} was trained for base model {cfg.get('base_model_name_or_path')!r}, "
            f"not for the served model ({', '.join(sorted(base_models))})"
        )
    rank, alpha = cfg.get("r"), cfg.get("lora_alpha", cfg.get("r"))
    if not isinstance(rank, int) or rank < 1:
        raise InvalidAdapter(f"adapter {name!r}: rank r must be a positive integer")
    if rank > max_rank:
        raise InvalidAdapter(f"adapter {name!r}: rank {rank} exceeds the engine's max_lora_rank {max_rank}")
    targets = cfg.get("target_modules")
    if isinstance(targets, str):
        targets = [targets]
    if not targets or not all(isinstance(t, str) for t in targets):
        raise InvalidAdapter(f"adapter {name!r}: target_modules must be a non-empty list")
    unsupported = sorted(set(targets) - set(shapes.modules))
    if unsupported:
        raise InvalidAdapter(f"adapter {name!r}: unsupported target modules {unsupported}")
    _peft_config(path, name)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise InvalidAdapter(f"adapter {name!r} has no {WEIGHTS_FILE}")
    size = weights.stat().st_size
    if size > max_bytes:
        raise InvalidAdapter(f"adapter {name!r} is {size} bytes, over the limit of {max_bytes}")
    header = _read_header(weights)
    if not header:
        raise InvalidAdapter(f"adapter {name!r} has no tensors")
    for key, shape in header.items():
        m = _TENSOR_RE.search(key)
        if not m or m["module"] not in targets:
            raise InvalidAdapter(f"adapter {name!r}: unexpected tensor {key!r}")
        fan_in, fan_out = shapes.modules[m["module"]]
        want = (rank, fan_in) if m["ab"] == "A" else (fan_out, rank)
        if shape != want:
            raise InvalidAdapter(f"adapter {name!r}: tensor {key!r} has shape {list(shape)}, expected {list(want)}")
    return AdapterSpec(
        name, str(path), rank, float(alpha), tuple(sorted(targets)), size, str(cfg.get("base_model_name_or_path") or "")
    )
