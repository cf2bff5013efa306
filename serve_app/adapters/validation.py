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

from serve_app.adapters.lora_targets import REFUSED, BaseShapes, check_target_parameters, expected_tensor
from serve_app.protocol.errors import InvalidAdapter

__all__ = ["AdapterSpec", "BaseShapes", "check_name", "same_base", "validate_adapter"]

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


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


# What identifies a model in its config.json: two folders that agree on all of
# these hold the same architecture at the same size (a local copy of one model).
IDENTITY_KEYS = (
    "architectures",
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "num_local_experts",
    "num_experts_per_tok",
)


def _identity(folder: Path) -> dict | None:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return {k: cfg.get(k) for k in IDENTITY_KEYS} if isinstance(cfg, dict) else None


def same_base(claimed: object, base_models: frozenset[str], base_dir: str | None) -> bool:
    """Whether an adapter's ``base_model_name_or_path`` names the served model.

    By name: the served name, the configured path or a ``lora.base_model_names``
    alias. By folder, as peft writes it when training on a local copy: a path
    that resolves to the served model's folder, or to a folder whose
    ``config.json`` agrees with the served one on what identifies a model
    (``IDENTITY_KEYS``). A path that does not exist here cannot be compared:
    only an alias admits it.
    """
    if not isinstance(claimed, str) or not claimed:
        return False
    if claimed in base_models or claimed.rstrip("/") in base_models:
        return True
    if base_dir is None or not Path(base_dir).is_dir():
        return False
    folder = Path(claimed).expanduser()
    if not folder.is_absolute() or not folder.is_dir():
        return False
    served = Path(base_dir).resolve()
    if folder.resolve() == served:
        return True
    theirs, ours = _identity(folder), _identity(served)
    return theirs is not None and theirs == ours


def validate_adapter(
    path: Path,
    name: str,
    *,
    max_rank: int,
    shapes: BaseShapes,
    max_bytes: int,
    base_models: frozenset[str] | None = None,
    base_dir: str | None = None,
) -> AdapterSpec:
    """Check an adapter folder; raise InvalidAdapter saying why it is refused.

    ``base_models``: the names an adapter's ``base_model_name_or_path`` may
    carry for the served model (None: not checked); ``base_dir``: the served
    model's folder, when it is one (see ``same_base``).
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
    claimed = cfg.get("base_model_name_or_path")
    if base_models is not None and not same_base(claimed, base_models, base_dir):
        raise InvalidAdapter(
            f"adapter {name!r} was trained for base model {claimed!r}, not for the served model "
            f"({', '.join(sorted(base_models))}); if that is the same model under another name, add the name "
            "to lora.base_model_names"
        )
    rank, alpha = cfg.get("r"), cfg.get("lora_alpha", cfg.get("r"))
    if not isinstance(rank, int) or rank < 1:
        raise InvalidAdapter(f"adapter {name!r}: rank r must be a positive integer")
    if rank > max_rank:
        raise InvalidAdapter(f"adapter {name!r}: rank {rank} exceeds the engine's max_lora_rank {max_rank}")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        raise InvalidAdapter(f"adapter {name!r}: lora_alpha must be a number")
    _check_features(cfg, name)
    targets = cfg.get("target_modules") or []
    if isinstance(targets, str):
        targets = [targets]
    params = cfg.get("target_parameters") or []
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise InvalidAdapter(f"adapter {name!r}: target_modules must be a list of module names", param="target_modules")
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        raise InvalidAdapter(f"adapter {name!r}: target_parameters must be a list of names", param="target_parameters")
    if not targets and not params:
        raise InvalidAdapter(f"adapter {name!r}: target_modules must be a non-empty list", param="target_modules")
    for t in targets:
        if t not in shapes.modules:
            why = REFUSED.get(t, "the engine has no LoRA layer for it on this base model")
            raise InvalidAdapter(f"adapter {name!r}: unsupported target module {t!r}: {why}", param="target_modules")
    try:
        params = list(check_target_parameters(params, shapes))
    except ValueError as e:
        raise InvalidAdapter(f"adapter {name!r}: {e}", param="target_parameters") from None
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
    _check_tensors(header, name, shapes, set(targets), tuple(params), rank)
    return AdapterSpec(
        name,
        str(path),
        rank,
        float(alpha),
        tuple(sorted(targets)) + tuple(params),
        size,
        str(cfg.get("base_model_name_or_path") or ""),
    )


def _check_features(cfg: dict, name: str) -> None:
    """Config fields vLLM refuses (its PEFTHelper._validate_features), refused here first."""
    refusals = [
        ("use_dora", bool(cfg.get("use_dora")), REFUSED["dora"]),
        ("lora_bias", bool(cfg.get("lora_bias")), REFUSED["bias"]),
        ("bias", cfg.get("bias", "none") != "none", REFUSED["bias"]),
        ("modules_to_save", bool(cfg.get("modules_to_save")), REFUSED["modules_to_save"]),
        ("rank_pattern", bool(cfg.get("rank_pattern")), REFUSED["rank_pattern"]),
        ("alpha_pattern", bool(cfg.get("alpha_pattern")), REFUSED["rank_pattern"]),
        ("alora_invocation_tokens", bool(cfg.get("alora_invocation_tokens")), "vLLM does not support aLoRA"),
        ("layer_replication", bool(cfg.get("layer_replication")), "vLLM does not support layer_replication"),
        ("use_bdlora", bool(cfg.get("use_bdlora")), "vLLM does not support BD-LoRA"),
        ("use_qalora", bool(cfg.get("use_qalora")), "vLLM does not support QALoRA"),
        (
            "init_lora_weights",
            not _init_supported(cfg.get("init_lora_weights", True)),
            "inits such as PiSSA, OLoRA, CorDA and LoftQ change the base weights; vLLM refuses them",
        ),
    ]
    for fname, bad, why in refusals:
        if bad:
            raise InvalidAdapter(f"adapter {name!r}: {fname}={cfg.get(fname)!r} cannot be served: {why}", param=fname)


def _init_supported(init) -> bool:
    return not isinstance(init, str) or init.lower() in ("gaussian", "eva", "orthogonal", "mica", "lora_ga")


def _check_tensors(
    header: dict[str, tuple[int, ...]],
    name: str,
    shapes: BaseShapes,
    targets: set[str],
    params: tuple[str, ...],
    rank: int,
) -> None:
    """Every tensor is one vLLM loads, with the right shape, in pairs (A and B; both expert weights)."""
    seen: dict[tuple[int, str], set[str]] = {}
    for key, shape in header.items():
        try:
            rule = expected_tensor(key, shapes, targets, params, rank)
        except ValueError as e:
            raise InvalidAdapter(f"adapter {name!r}: unexpected tensor {key!r}: {e}") from None
        if shapes.num_layers and rule.layer >= shapes.num_layers:
            raise InvalidAdapter(
                f"adapter {name!r}: tensor {key!r} is for layer {rule.layer}; the base model has {shapes.num_layers}"
            )
        if shape != rule.shape:
            raise InvalidAdapter(
                f"adapter {name!r}: tensor {key!r} has shape {list(shape)}, expected {list(rule.shape)}"
            )
        seen.setdefault((rule.layer, rule.kind), set()).add(rule.ab)
    for (layer, kind), parts in sorted(seen.items()):
        if parts != {"A", "B"}:
            raise InvalidAdapter(f"adapter {name!r}: layer {layer} {kind} has lora_{''.join(parts)} without its pair")
    for layer in {layer for layer, kind in seen if kind in params}:
        missing = [p for p in params if (layer, p) not in seen]
        if missing:
            raise InvalidAdapter(
                f"adapter {name!r}: layer {layer} has expert LoRA without {missing[0]}: "
                f"{REFUSED['single expert parameter']}"
            )
