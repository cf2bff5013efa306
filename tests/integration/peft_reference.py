"""Reference for gpt-oss LoRA: adapters made with peft now, and transformers + peft greedy outputs.

    python tests/integration/peft_reference.py GPTOSS_DIR OUT_DIR

Makes, on the gpt-oss dev model, the adapters a user brings from OpenAI's
gpt-oss fine-tuning recipe (peft, seeded random weights, so that they change
the output): ``attn`` (q/k/v/o_proj) and ``full`` (attention + the MoE
experts' gate_up_proj and down_proj through target_parameters). Then greedy
decoding of the corpus prompts in transformers, with and without each
adapter, into OUT_DIR/reference.json: {"<adapter or base>/<i>": [token ids]}.
Run in its own process so the test process never loads torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ADAPTERS = {
    "attn": {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "target_parameters": None},
    "full": {
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "target_parameters": ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
    },
}
MAX_TOKENS = 24
STOP = [200002, 200012]


def make_adapter(base_dir: Path, spec: dict, dest: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GptOssForCausalLM

    torch.manual_seed(0)
    model = GptOssForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, init_lora_weights=False, **spec)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # large enough that every kind of weight changes the greedy tokens
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(20.0 if "experts" in name else 0.5)
    peft_model.save_pretrained(str(dest))
    cfg = json.loads((dest / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "gpt-oss-dev"
    (dest / "adapter_config.json").write_text(json.dumps(cfg))


def greedy(base_dir: Path, prompts: list[list[int]], adapter: Path | None) -> list[list[int]]:
    import torch
    from transformers import GptOssForCausalLM

    model = GptOssForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    out = []
    for prompt in prompts:
        with torch.no_grad():
            ids = model.generate(
                torch.tensor([prompt]),
                max_new_tokens=MAX_TOKENS,
                do_sample=False,
                eos_token_id=STOP,
                pad_token_id=199999,
            )
        out.append(ids[0, len(prompt) :].tolist())
    return out


def main(base_dir: str, out_dir: str) -> None:
    base, out = Path(base_dir), Path(out_dir)
    corpus = json.loads((base.parent / "corpus.json").read_text())
    prompts = [r["prompt"] for r in corpus if r["model"] == "gptoss" and r["adapter"] is None][:4]
    ref: dict[str, list[int]] = {}
    for i, ids in enumerate(greedy(base, prompts, None)):
        ref[f"base/{i}"] = ids
    for name, spec in ADAPTERS.items():
        make_adapter(base, spec, out / name)
        for i, ids in enumerate(greedy(base, prompts, out / name)):
            ref[f"{name}/{i}"] = ids
    (out / "reference.json").write_text(json.dumps({"prompts": prompts, "outputs": ref}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
