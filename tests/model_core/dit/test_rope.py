"""RoPE positions (identity tokens at t = -k, w shifted) and the interleaved rotation, against the formulas."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from model_core.configs import PRESETS
from model_core.dit import apply_rope, rope_cos_sin, token_positions


def test_video_positions_are_the_row_major_grid() -> None:
    pos = token_positions(2, 3, 4)
    expected = [(t, h, w) for t in range(2) for h in range(3) for w in range(4)]
    assert pos.dtype == torch.int64
    assert [tuple(p) for p in pos.tolist()] == expected


@pytest.mark.parametrize("num_refs", [1, 3])
def test_identity_tokens_come_first_at_minus_k_with_the_w_shift(num_refs: int) -> None:
    frames, height, width = 2, 3, 4
    pos = token_positions(frames, height, width, num_refs=num_refs)
    per_image = height * width
    assert pos.shape == ((num_refs + frames) * per_image, 3)
    for k in range(1, num_refs + 1):
        block = pos[(k - 1) * per_image : k * per_image]
        expected = [(-k, h, w + width) for h in range(height) for w in range(width)]
        assert [tuple(p) for p in block.tolist()] == expected
    assert torch.equal(pos[num_refs * per_image :], token_positions(frames, height, width))


def test_cos_sin_follow_the_formula_per_axis() -> None:
    axes, theta = (4, 6, 6), 256.0
    pos = torch.tensor([[0, 0, 0], [-1, 2, 7], [5, 3, 1]])
    cos, sin = rope_cos_sin(pos, axes, theta)
    assert cos.shape == sin.shape == (3, 16) and cos.dtype == torch.float32
    for n, p in enumerate(pos.tolist()):
        offset = 0
        for axis, dim in enumerate(axes):
            for i in range(dim // 2):
                angle = p[axis] * theta ** (-2 * i / dim)
                for j in (offset + 2 * i, offset + 2 * i + 1):  # both members of the pair get the angle
                    assert cos[n, j].item() == pytest.approx(math.cos(angle), abs=1e-6)
                    assert sin[n, j].item() == pytest.approx(math.sin(angle), abs=1e-6)
            offset += dim


def test_rotation_is_complex_multiplication_of_adjacent_pairs() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, 16, generator=gen)
    cos, sin = rope_cos_sin(token_positions(1, 1, 5), (4, 6, 6), 256.0)
    angle = torch.atan2(sin[:, ::2], cos[:, ::2])  # [N, 8]
    expected = torch.view_as_real(
        torch.view_as_complex(x.unflatten(-1, (8, 2)).contiguous())
        * torch.polar(torch.ones_like(angle), angle)[None, :, None]
    ).flatten(-2)
    torch.testing.assert_close(apply_rope(x, cos, sin), expected, atol=1e-5, rtol=1e-5)


def test_rotated_dot_products_depend_only_on_position_differences() -> None:
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 4, 1, 16, generator=gen), torch.randn(1, 4, 1, 16, generator=gen)
    pos = torch.tensor([[0, 0, 0], [1, 2, 3], [-1, 4, 9], [3, 0, 5]])
    shifted = pos + torch.tensor([7, -2, 11])

    def logits(p: torch.Tensor) -> torch.Tensor:
        cos, sin = rope_cos_sin(p, (4, 6, 6), 256.0)
        return apply_rope(q, cos, sin)[0, :, 0] @ apply_rope(k, cos, sin)[0, :, 0].T

    torch.testing.assert_close(logits(pos), logits(shifted), atol=1e-4, rtol=1e-4)


def test_model_state_carries_the_identity_positions(
    model_factory: Callable[..., torch.nn.Module], inputs_factory: Callable[..., object]
) -> None:
    preset = "tiny-hunyuancustom-720p"
    cfg = PRESETS[preset]
    model = model_factory(preset)
    inp = inputs_factory(cfg, frames=2, height=4, width=6, num_refs=2)
    with torch.no_grad():
        state = model.embed(*inp.args, **inp.extras)
    expected = token_positions(2, 2, 3, num_refs=2)  # token grid = latent grid / patch (1, 2, 2)
    assert torch.equal(state.positions, expected)
    assert state.img.shape[1] == expected.shape[0]
    cos, sin = rope_cos_sin(expected, cfg.rope_axes_dim, cfg.rope_theta)
    assert torch.equal(state.rope_cos, cos) and torch.equal(state.rope_sin, sin)
