"""The VAE mid-block attention runs on a fused SDPA kernel (4-D call), causal or not, in encode and decode."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile
from vae_testing import random_tiny_vae

from model_core.vae.layers import MidBlockAttention

CPU_FLASH = "aten::_scaled_dot_product_flash_attention_for_cpu"
MATH = "aten::_scaled_dot_product_attention_math"


def attention_ops(fn: Callable[[], object]) -> dict[str, int]:
    """How often each SDPA kernel op ran during `fn()` (CPU profiler op names)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof, torch.no_grad():
        fn()
    counts: dict[str, int] = {}
    for event in prof.events():
        if "scaled_dot_product" in event.name:
            counts[event.name] = counts.get(event.name, 0) + 1
    return counts


@pytest.mark.parametrize(("causal", "calls"), [(True, 4), (False, 1)])  # causal: one call per query frame
def test_mid_block_attention_is_fused(causal: bool, calls: int) -> None:
    torch.manual_seed(0)
    attn = MidBlockAttention(32, 4, causal=causal).eval()
    x = torch.randn(1, 32, 4, 16, 16)  # 1,024 positions: the math kernel would hold a 1024 x 1024 matrix
    ops = attention_ops(lambda: attn(x))
    assert ops.get(CPU_FLASH) == calls and MATH not in ops, ops


def test_encode_and_decode_need_no_math_kernel() -> None:
    vae = random_tiny_vae()
    x = torch.randn(1, 3, 9, 32, 32)
    ops = attention_ops(lambda: vae.decode(vae.encode(x).mode()))
    assert ops.get(CPU_FLASH, 0) > 0 and MATH not in ops, ops
    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    with sdpa_kernel(fused), torch.no_grad():
        vae.decode(vae.encode(x).mode())
