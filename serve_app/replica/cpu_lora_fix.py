"""Workaround: on vLLM's CPU backend, base rows of a mixed LoRA batch get an adapter.

vLLM 0.32's CPU LoRA ops (``vllm/lora/ops/torch_ops/lora_ops.py``) gather
``lora_weights[lora_indices]`` for every row, including rows whose index is -1
("no adapter"). -1 is ordinary negative indexing in torch, so those base-model
rows silently receive the delta of the *last* adapter slot whenever base and
adapter requests share a batch. Upstream fixes are open:
https://github.com/vllm-project/vllm/pull/48421 and
https://github.com/vllm-project/vllm/pull/49656.

Until a release carries one, this ``vllm.general_plugins`` entry point (loaded
by vLLM in every engine process) wraps the three bgmv ops so that rows with a
negative index contribute exactly zero: their inputs are zeroed and the index
clamped to a valid slot, which makes shrink write zeros and expand add zeros.
The sgmv ops call the bgmv ones through the module, so they are covered too.
It does nothing on GPU platforms, whose Triton/Punica kernels skip -1 rows.
Remove it when the pinned vLLM includes either PR (tests/integration keeps the
mixed-batch test that catches the bug).
"""

from __future__ import annotations

import functools
import logging

logger = logging.getLogger(__name__)

_OPS = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")
_PATCHED = "_serve_app_masks_no_lora_rows"


def _mask_no_lora_rows(op):
    import torch

    @functools.wraps(op)
    def wrapper(inputs, lora_weights, output_tensor, lora_indices_tensor, *args, **kwargs):
        no_lora = lora_indices_tensor < 0
        if bool(no_lora.any()):
            keep = (~no_lora).to(inputs.dtype).unsqueeze(-1)
            inputs = inputs * keep
            lora_indices_tensor = torch.clamp(lora_indices_tensor, min=0)
        return op(inputs, lora_weights, output_tensor, lora_indices_tensor, *args, **kwargs)

    setattr(wrapper, _PATCHED, True)
    return wrapper


def apply() -> bool:
    """Patch the CPU LoRA ops in place; returns True if anything was patched."""
    from vllm.lora.ops import torch_ops
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    patched = False
    for name in _OPS:
        original = getattr(lora_ops, name)
        if getattr(original, _PATCHED, False):
            continue
        fixed = _mask_no_lora_rows(original)
        # lora_ops for the sgmv ops, which look bgmv up in their own module;
        # the package and punica_cpu imported the functions by name.
        for module in (lora_ops, torch_ops, punica_cpu):
            if getattr(module, name, None) is original:
                setattr(module, name, fixed)
        patched = True
    return patched


def register() -> None:
    """vLLM general-plugin entry point; active only on the CPU platform."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    if apply():
        logger.info("serve_app: masked no-LoRA rows in vLLM's CPU LoRA ops (vllm PR #48421/#49656)")
    from serve_app.replica import cpu_moe_lora

    if cpu_moe_lora.apply():
        logger.info("serve_app: MoE LoRA runs in torch on CPU (vLLM's fused-MoE LoRA kernel is Triton-only)")
