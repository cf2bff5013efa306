"""Workaround: MoE LoRA (gpt-oss experts) on vLLM's CPU platform, in plain torch.

With LoRA enabled, vLLM 0.32 serves an unquantized MoE through
``TritonExperts`` (``vllm/model_executor/layers/fused_moe/experts/triton_moe.py``),
whose ``apply`` runs the base expert GEMMs and the LoRA deltas
(``PunicaWrapperGPU.add_lora_w13`` / ``add_lora_w2`` ->
``vllm/lora/ops/triton_ops/fused_moe_lora_op.py``) as Triton kernels. The CPU
build has no Triton, so the first MoE forward of a LoRA-enabled gpt-oss engine
fails (``triton.language has no attribute float32``) and the engine dies.

This module stands in for that ``apply`` on CPU only. Per token and for each
of its ``top_k`` routed experts ``e`` (weights already chosen by the router):

    h   = x @ w13[e].T + b13[e]             + (x @ A13[l, e].T) @ B13[l, e].T
    a   = activation(h)                      (gpt-oss: interleaved SwiGLU with clamp)
    out = sum_k  w_k * (a @ w2[e].T + b2[e] + (a @ A2[l, e].T) @ B2[l, e].T)

where ``l`` is the token's LoRA slot from the Punica wrapper (-1: no adapter,
no delta; so base rows of a mixed batch stay base rows) and A/B are the
stacked slot buffers of ``FusedMoEWithLoRA`` (scaling already folded into B
by vLLM). Expert-parallel and quantized experts are refused: the CPU dev
platform runs neither. Remove this once vLLM ships a CPU MoE-LoRA kernel
(tests/integration checks gpt-oss adapters against transformers + peft).
"""

from __future__ import annotations

import functools
import logging

logger = logging.getLogger(__name__)

_PATCHED = "_serve_app_torch_moe_lora"
SWIGLU_ALPHA, SWIGLU_LIMIT = 1.702, 7.0


def _token_slots(ctx, num_tokens: int):
    """Each token's LoRA slot (-1: none), as the Triton path would read it."""
    mapping = ctx.local_token_lora_mapping
    if mapping is None:
        mapping = ctx.punica_wrapper.token_lora_indices
    return mapping[:num_tokens]


def _lora_delta(inputs, rows, experts, slots, a_stacked, b_stacked, out) -> None:
    """out[rows] += (inputs[rows] @ A[slot, e].T) @ B[slot, e].T for each (slot, expert) group."""
    for slot in slots[rows].unique().tolist():
        if slot < 0:
            continue
        in_slot = rows & (slots == slot)
        for e in experts[in_slot].unique().tolist():
            sel = in_slot & (experts == e)
            shrunk = inputs[sel] @ a_stacked[slot, e].transpose(0, 1)
            out[sel] += shrunk @ b_stacked[slot, e].transpose(0, 1)


def _activate(experts, activation, h):
    """The experts' activation; gpt-oss's SwiGLU in torch (the CPU build lacks the C op)."""
    import torch
    from vllm.model_executor.layers.fused_moe.activation import MoEActivation

    if activation == MoEActivation.SWIGLUOAI:
        # What torch.ops._C.swigluoai_and_mul computes with the defaults
        # apply_moe_activation passes on GPU (vllm SwigluOAIAndMul.forward_native).
        gate = h[..., ::2].clamp(max=SWIGLU_LIMIT)
        up = h[..., 1::2].clamp(min=-SWIGLU_LIMIT, max=SWIGLU_LIMIT)
        return (up + 1) * gate * torch.sigmoid(gate * SWIGLU_ALPHA)
    out = torch.empty(
        (h.shape[0], experts.adjust_N_for_activation(h.shape[1], activation)), dtype=h.dtype, device=h.device
    )
    experts.activation(activation, out, h)
    return out


def torch_experts_apply(
    self,
    output,
    hidden_states,
    w1,
    w2,
    topk_weights,
    topk_ids,
    activation,
    global_num_experts,
    expert_map,
    a1q_scale,
    a2_scale,
    workspace13,
    workspace2,
    expert_tokens_meta,
    apply_router_weight_on_input,
):
    """``TritonExperts.apply`` for unquantized experts, in torch (see the module docstring)."""
    import torch

    if expert_map is not None or self.quant_dtype is not None:
        raise NotImplementedError("serve_app's CPU MoE-LoRA path supports unquantized experts without EP only")
    num_tokens, top_k = topk_ids.shape
    n = w1.shape[1]
    x = hidden_states
    # One row per (token, routed expert), token-major as vLLM lays them out.
    experts = topk_ids.reshape(-1).long()
    token_of_row = torch.arange(num_tokens, device=x.device).repeat_interleave(top_k)
    x_rows = x[token_of_row]
    h = torch.empty((num_tokens * top_k, n), dtype=x.dtype, device=x.device)
    for e in experts.unique().tolist():
        sel = experts == e
        h[sel] = x_rows[sel] @ w1[e].transpose(0, 1)
        if self.w1_bias is not None:
            h[sel] += self.w1_bias[e]

    ctx = self._lora_context
    slots = None
    if ctx is not None:
        if ctx.w13_num_slices != 1 or ctx.enable_moe_shared_loras:
            raise NotImplementedError("serve_app's CPU MoE-LoRA path supports the fused (3D) w13 layout only")
        slots = _token_slots(ctx, num_tokens).long()[token_of_row]
        rows = slots >= 0
        if bool(rows.any()):
            _lora_delta(x_rows, rows, experts, slots, ctx.w13_lora_a_stacked[0], ctx.w13_lora_b_stacked[0], h)
        else:
            slots = None

    act = _activate(self, activation, h)

    y = torch.empty((num_tokens * top_k, w2.shape[1]), dtype=x.dtype, device=x.device)
    for e in experts.unique().tolist():
        sel = experts == e
        y[sel] = act[sel] @ w2[e].transpose(0, 1)
        if self.w2_bias is not None:
            y[sel] += self.w2_bias[e]
    if slots is not None:
        _lora_delta(act, slots >= 0, experts, slots, ctx.w2_lora_a_stacked[0], ctx.w2_lora_b_stacked[0], y)
    if not apply_router_weight_on_input:
        y *= topk_weights.reshape(-1, 1).to(y.dtype)
    output.copy_(y.view(num_tokens, top_k, -1).sum(dim=1))


def apply() -> bool:
    """Put the torch path in place of TritonExperts.apply; True if anything was patched."""
    from vllm.model_executor.layers.fused_moe.experts.triton_moe import TritonExperts

    if getattr(TritonExperts.apply, _PATCHED, False):
        return False
    original = TritonExperts.apply

    @functools.wraps(original)
    def patched(self, *args, **kwargs):
        return torch_experts_apply(self, *args, **kwargs)

    setattr(patched, _PATCHED, True)
    TritonExperts.apply = patched  # type: ignore[method-assign]
    return True
