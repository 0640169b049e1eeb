"""Every DiT attention runs on a fused SDPA kernel, and one forward's peak memory grows linearly with the tokens.

torch picks a fused kernel (flash / memory-efficient / cuDNN on CUDA, flash on CPU) only for 4-D q/k/v; anything
else falls back to the math kernel, which builds the whole `[H, S, S]` score matrix. The profiler names the
kernel that ran, so a fallback anywhere in the forward (joint attention, token refiner) shows up here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from model_core.configs import PRESETS
from model_core.dit import HunyuanDiT
from model_core.dit.attention import SdpaJointAttention, sdpa
from model_core.dit.refiner import SingleTokenRefiner

CPU_FLASH = "aten::_scaled_dot_product_flash_attention_for_cpu"
MATH = "aten::_scaled_dot_product_attention_math"
FUSED = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
REPO = Path(__file__).resolve().parents[3]


def attention_ops(fn: Callable[[], object]) -> dict[str, int]:
    """How often each SDPA kernel op ran during `fn()` (CPU profiler op names)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof, torch.inference_mode():
        fn()
    counts: dict[str, int] = {}
    for event in prof.events():
        if "scaled_dot_product" in event.name:
            counts[event.name] = counts.get(event.name, 0) + 1
    return counts


def test_sdpa_helper_selects_the_fused_kernel_where_3d_input_did_not() -> None:
    # 512 tokens, 4 heads of 32: the math kernel would hold a 4 x 512 x 512 score matrix
    q, k, v = torch.randn(3, 1, 512, 4, 32).unbind(0)
    ops = attention_ops(lambda: sdpa(q, k, v))
    assert ops.get(CPU_FLASH) == 1 and MATH not in ops
    # the old 3-D call, for contrast: the profiler does see the fallback
    legacy = attention_ops(
        lambda: torch.nn.functional.scaled_dot_product_attention(
            q[0].transpose(0, 1), k[0].transpose(0, 1), v[0].transpose(0, 1)
        )
    )
    assert MATH in legacy


@pytest.mark.parametrize("valid", [(9, 9), (9, 4), (1, 1)])  # no padding; padded unequally; one real token
def test_every_dit_attention_is_fused(
    model_factory: Callable[..., HunyuanDiT], inputs_factory: Callable[..., Any], valid: tuple[int, int]
) -> None:
    model = model_factory("tiny-hunyuancustom-720p")
    inp = inputs_factory(model.config, batch=2, frames=3, height=8, width=8, text_len=9, valid=valid)
    ops = attention_ops(lambda: model(*inp.args, **inp.extras))
    assert MATH not in ops, ops
    blocks = model.config.depth_double + model.config.depth_single
    assert ops.get(CPU_FLASH, 0) >= blocks + model.config.refiner_depth
    # and with the math kernel switched off, nothing in the forward fails for want of a kernel
    with sdpa_kernel(FUSED), torch.inference_mode():
        model(*inp.args, **inp.extras)


def test_joint_attention_with_padded_image_tokens_is_fused() -> None:
    """Sequence parallelism pads the image part (`img_valid_len`): that segment is fused too."""
    gen = torch.Generator().manual_seed(0)
    img = torch.randn(3, 2, 300, 4, 16, generator=gen).unbind(0)
    txt = torch.randn(3, 2, 20, 4, 16, generator=gen).unbind(0)
    ops = attention_ops(lambda: SdpaJointAttention()(*img, *txt, (20, 7), img_valid_len=290))
    # padded image (both samples), real tokens per text length (2 groups), padded text of sample 1
    assert ops == {"aten::scaled_dot_product_attention": 4, CPU_FLASH: 4}, ops


@pytest.mark.parametrize("padded", [False, True])
def test_refiner_attention_is_fused_with_and_without_padding(padded: bool) -> None:
    torch.manual_seed(0)
    refiner = SingleTokenRefiner(32, 64, 4, 256, 2).eval()
    mask = torch.ones(2, 40, dtype=torch.long)
    if padded:
        mask[1, 25:] = 0
        mask[0, 3] = 0  # a hole: the refiner reads mask positions
    ops = attention_ops(lambda: refiner(torch.randn(2, 40, 32), torch.full((2,), 500.0), mask))
    assert ops.get(CPU_FLASH) == 2 and MATH not in ops, ops


def test_refiner_without_padding_equals_the_all_true_mask() -> None:
    torch.manual_seed(0)
    refiner = SingleTokenRefiner(32, 64, 4, 256, 2).eval().individual_token_refiner
    x, c = torch.randn(2, 12, 64), torch.randn(2, 64)
    with torch.inference_mode():
        unmasked = refiner(x, c, torch.ones(2, 12, dtype=torch.long))  # takes the no-mask path
        masked = x
        for block in refiner.blocks:
            masked = block(masked, c, torch.ones(2, 1, 12, 12, dtype=torch.bool))
    torch.testing.assert_close(unmasked, masked, atol=1e-6, rtol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dit_forward_runs_without_the_math_kernel_on_cuda(
    model_factory: Callable[..., HunyuanDiT], inputs_factory: Callable[..., Any]
) -> None:
    model = model_factory("tiny-hunyuancustom-720p").to("cuda", torch.bfloat16)
    inp = inputs_factory(model.config, batch=2, frames=3, height=8, width=8, text_len=9, valid=(9, 4))
    args = [a.to("cuda") for a in inp.args]
    args[0], args[2], args[4] = (args[i].bfloat16() for i in (0, 2, 4))
    extras = {k: v.to("cuda", torch.bfloat16) for k, v in inp.extras.items()}
    with sdpa_kernel(FUSED), torch.inference_mode():
        out = model(*args, **extras)
    assert torch.isfinite(out.float()).all()


# One forward of the tiny T2V model in a fresh process: peak RSS (VmHWM) over the RSS just before it.
_PEAK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    from model_core.configs import PRESETS
    from model_core.dit import HunyuanDiT

    def kib(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    torch.set_num_threads(1)
    frames, text_len = int(sys.argv[1]), 16
    cfg = PRESETS["tiny-hunyuanvideo-t2v-720p"]
    torch.manual_seed(0)
    model = HunyuanDiT(cfg).eval()
    args = (
        torch.randn(1, cfg.in_channels, frames, 32, 32), torch.full((1,), 500.0),
        torch.randn(1, text_len, cfg.text_states_dim), torch.ones(1, text_len, dtype=torch.long),
        torch.randn(1, cfg.text_pooled_dim),
    )
    with torch.inference_mode():
        model(*args, guidance=torch.full((1,), 6016.0))  # warm-up: lazy inits, thread pools
        before = kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        model(*args, guidance=torch.full((1,), 6016.0))
    print(json.dumps({"tokens": frames * 16 * 16 + text_len, "peak": kib("VmHWM") - before}))
    """
)


def _forward_peak(frames: int) -> dict[str, int]:
    # a fixed mmap threshold makes glibc hand every block over 64 KiB back to the kernel when it is freed, so
    # the resident set follows torch's live tensors instead of the allocator's free lists
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(frames)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_forward_peak_memory_grows_linearly_with_the_tokens() -> None:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    heads = PRESETS["tiny-hunyuanvideo-t2v-720p"].num_heads
    small, large = _forward_peak(4), _forward_peak(16)  # 1,040 and 4,112 tokens
    scores = heads * large["tokens"] ** 2 * 4  # one fp32 [H, S, S] score matrix: 270 MB here
    # measured: fused 6.8 MB -> 27 MB (x4.0 for x4 tokens); the math kernel 44 MB -> 628 MB (x14)
    assert large["peak"] < scores / 4, (small, large, scores)
    assert large["peak"] < 6 * small["peak"], (small, large)


def test_joined_parts_of_one_tensor_are_a_view_and_others_a_copy() -> None:
    from model_core.dit.attention import _joined

    qkv = torch.randn(2, 30, 3, 4, 8)[:, :, 0]  # strided, like the single blocks' q
    view = _joined(qkv[:, :20], qkv[:, 20:], 7)
    assert view.data_ptr() == qkv.data_ptr()
    assert torch.equal(view, torch.cat([qkv[:, :20], qkv[:, 20:27]], dim=1))
    apart = _joined(qkv[:, :20], qkv[:, 21:], 7)  # not adjacent: copied
    assert apart.data_ptr() != qkv.data_ptr()
    assert torch.equal(apart, torch.cat([qkv[:, :20], qkv[:, 21:28]], dim=1))


def test_rope_in_place_equals_the_formula_bit_for_bit() -> None:
    from model_core.dit.rope import apply_rope, rope_cos_sin, token_positions

    cos, sin = rope_cos_sin(token_positions(3, 4, 5), (4, 6, 6), 256.0)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 60, 3, 16).to(dtype)
        xf = x.float()
        rotated = torch.stack([-xf[..., 1::2], xf[..., ::2]], dim=-1).flatten(-2)
        expected = (xf * cos[None, :, None] + rotated * sin[None, :, None]).to(dtype)
        assert torch.equal(apply_rope(x, cos, sin), expected)


@pytest.mark.parametrize("fp8", ["none", "per-tensor", "per-row"])
def test_single_block_linear1_in_row_blocks_equals_the_whole_linear(fp8: str) -> None:
    from model_core.dit.blocks import _linear_rows
    from model_core.dit.fp8 import FP8Linear, quantize_fp8

    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 40)
    if fp8 != "none":
        weight, scale = quantize_fp8(linear.weight.detach())
        if fp8 == "per-row":
            scale = scale * (0.5 + torch.rand(40))
        fp8_linear = FP8Linear(16, 40, scale)
        fp8_linear.weight.data, fp8_linear.bias.data = weight, linear.bias.detach().clone()
        linear = fp8_linear  # type: ignore[assignment]
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        whole = torch.split(linear(x), [24, 16], dim=-1)
        for i in (0, 1):
            torch.testing.assert_close(_linear_rows(linear, x, [24, 16], i), whole[i], rtol=1e-6, atol=1e-6)
