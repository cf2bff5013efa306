"""The CPU LoRA workaround: rows with index -1 get no adapter delta."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def _ops():
    from serve_app.replica import cpu_lora_fix

    cpu_lora_fix.apply()
    from vllm.lora.ops.torch_ops import lora_ops

    return lora_ops


def test_shrink_and_expand_skip_base_rows():
    ops = _ops()
    torch.manual_seed(0)
    x = torch.randn(3, 8)
    a = torch.randn(2, 1, 4, 8)  # 2 slots, rank 4
    b = torch.randn(2, 1, 8, 4)
    idx = torch.tensor([0, -1, 1])
    mid = torch.zeros(3, 4)
    ops.bgmv_shrink(x, a, mid, idx, 1.0)
    assert torch.all(mid[1] == 0)
    assert torch.allclose(mid[0], a[0, 0] @ x[0])
    out = torch.ones(3, 8)
    ops.bgmv_expand(mid, b, out, idx, add_inputs=True)
    assert torch.all(out[1] == 1)
    assert torch.allclose(out[2], 1 + b[1, 0] @ mid[2])
    sliced = torch.ones(3, 16)
    ops.bgmv_expand_slice(mid, b, sliced, idx, 8, 8, add_inputs=True)
    assert torch.all(sliced[1] == 1) and torch.all(sliced[:, :8] == 1)


def test_patch_reaches_punica_cpu_and_is_idempotent():
    from serve_app.replica import cpu_lora_fix

    _ops()
    assert cpu_lora_fix.apply() is False
    from vllm.lora.punica_wrapper import punica_cpu

    assert getattr(punica_cpu.bgmv_shrink, cpu_lora_fix._PATCHED, False)
