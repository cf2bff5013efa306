"""Reference run: the corpus prompts through a plain vLLM ``LLM``, outside Ray.

    python tests/integration/direct_engine.py CONFIG_YAML OUT_JSON

Base prompts, then each adapter's prompts, each group in its own batch so the
reference never mixes base and adapter rows (the CPU bug the replica works
around). Writes {"<model>/<adapter>/<id>/<effort>": [token ids]}.

A diagnostic, not run by the suite: the suite asserts the corpus targets
themselves; this tells, when a served output differs, whether plain vLLM
differs too (the engine's numerics) or only our path does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(config_path: str, out_path: str) -> None:
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from serve_app.config import load_config_file
    from serve_app.devmodel.paths import default_dir, resolve

    cfg = load_config_file(config_path)
    records = json.loads((default_dir() / "corpus.json").read_text())
    llm = LLM(
        model=cfg.model.resolved_path(),
        dtype=cfg.model.dtype,
        max_model_len=cfg.model.max_model_len,
        enforce_eager=True,
        kv_cache_memory_bytes=cfg.engine.kv_cache_memory_bytes,
        enable_lora=cfg.lora.enabled,
        max_lora_rank=cfg.lora.max_lora_rank,
        max_loras=cfg.lora.max_loras,
        seed=0,
    )
    params = SamplingParams(temperature=0, max_tokens=128, stop_token_ids=[200002, 200012], detokenize=False)
    out: dict[str, list[int]] = {}
    groups: dict[str | None, list[dict]] = {}
    for r in records:
        if r["model"] == "base":
            groups.setdefault(r["adapter"], []).append(r)
    for lora_id, (adapter, recs) in enumerate(groups.items(), start=1):  # LoRA ids must be > 0
        lora = None
        if adapter:
            lora = LoRARequest(adapter, lora_id, str(Path(resolve("devmodel:adapters")) / adapter))
        results = llm.generate([{"prompt_token_ids": r["prompt"]} for r in recs], params, lora_request=lora)
        for r, res in zip(recs, results):
            out[f"base/{adapter}/{r['id']}/{r['effort']}"] = list(res.outputs[0].token_ids)
    Path(out_path).write_text(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
