"""The VAE against an independent reference: diffusers' AutoencoderKLHunyuanVideo with the same random weights.

fp32 on CPU; the bound is relative error < 1e-4 (CPU results move by ~6e-6 with the thread count).
"""

from __future__ import annotations

import pytest
import torch
from vae_testing import (
    DIFFUSERS_OFFICIAL_TILES,
    DIFFUSERS_SMALL_TILES,
    SMALL_TILES,
    diffusers_twin,
    random_tiny_vae,
    rel_err,
)

from model_core.vae import TilingConfig, plan_decode, plan_encode
from model_core.vae.layers import MidBlockAttention, frame_causal_mask

# diffusers is a pinned dev dependency: a missing install must fail this comparison, not skip it.
TOL = 1e-4


@pytest.fixture(scope="module")
def pair():
    vae = random_tiny_vae(seed=1)
    return vae, diffusers_twin(vae)


@torch.no_grad()
def test_untiled_encode_matches_diffusers(pair) -> None:
    vae, ref = pair
    x = torch.rand(2, 3, 9, 16, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ours, theirs = vae.encode(x), ref.encode(x).latent_dist
    assert ours.mean.shape == (2, 16, 3, 2, 3)
    assert rel_err(ours.mean, theirs.mean) < TOL
    assert rel_err(ours.std, theirs.std) < TOL
    # sample(generator) draws the same noise as the reference for the same seed
    a = ours.sample(torch.Generator().manual_seed(7))
    b = theirs.sample(torch.Generator().manual_seed(7))
    assert rel_err(a, b) < TOL
    assert not torch.allclose(a, ours.mode())


@torch.no_grad()
def test_untiled_decode_matches_diffusers(pair) -> None:
    vae, ref = pair
    z = torch.randn(1, 16, 4, 5, 6, generator=torch.Generator().manual_seed(1))
    out = vae.decode(z)
    assert out.shape == (1, 3, 13, 40, 48)
    assert rel_err(out, ref.decode(z).sample) < TOL


@torch.no_grad()
def test_tiled_decode_matches_diffusers_small_tiles(pair) -> None:
    vae, ref = pair
    ref.enable_tiling(**DIFFUSERS_SMALL_TILES)
    ref.use_framewise_decoding = True
    try:
        # 7 latents -> temporal tiles at 0/3/6; 9x7 latents -> 2x2 spatial tiles of 8 at stride 6
        z = torch.randn(1, 16, 7, 9, 7, generator=torch.Generator().manual_seed(2))
        plan = plan_decode(vae.config, (7, 9, 7), SMALL_TILES)
        assert plan.t_spans == ((0, 5), (3, 7), (6, 7))
        assert plan.h_spans == ((0, 8), (6, 9)) and plan.w_spans == ((0, 7), (6, 7))
        out = vae.decode(z, SMALL_TILES)
        assert out.shape == (1, 3, 25, 72, 56)
        assert rel_err(out, ref.decode(z).sample) < TOL
    finally:
        ref.disable_tiling()
        ref.use_framewise_decoding = False


@torch.no_grad()
def test_tiled_encode_matches_diffusers_small_tiles(pair) -> None:
    vae, ref = pair
    ref.enable_tiling(**DIFFUSERS_SMALL_TILES)
    ref.use_framewise_encoding = True
    try:
        x = torch.rand(1, 3, 21, 72, 56, generator=torch.Generator().manual_seed(3)) * 2 - 1
        plan = plan_encode(vae.config, (21, 72, 56), SMALL_TILES)
        assert plan.t_spans == ((0, 17), (12, 21))
        assert plan.h_spans == ((0, 64), (48, 72)) and plan.w_spans == ((0, 56), (48, 56))
        ours = vae.encode(x, SMALL_TILES).moments
        assert ours.shape == (1, 32, 6, 9, 7)
        assert rel_err(ours, ref.encode(x).latent_dist.parameters) < TOL
    finally:
        ref.disable_tiling()
        ref.use_framewise_encoding = False


@torch.no_grad()
def test_official_temporal_tiling_matches_diffusers(pair) -> None:
    """33 latents -> 129 frames through temporal tiles 0/12/24 (official arithmetic), at 8x8 px."""
    vae, ref = pair
    ref.enable_tiling(**DIFFUSERS_OFFICIAL_TILES)
    ref.use_framewise_decoding = True
    try:
        z = torch.randn(1, 16, 33, 1, 1, generator=torch.Generator().manual_seed(4))
        out = vae.decode(z, TilingConfig())
        assert out.shape == (1, 3, 129, 8, 8)
        assert rel_err(out, ref.decode(z).sample) < TOL
    finally:
        ref.disable_tiling()
        ref.use_framewise_decoding = False


@torch.no_grad()
def test_official_spatial_tiling_matches_diffusers(pair) -> None:
    """One frame of 33x34 latents: 32-latent tiles at stride 24, blend 64 px, keep 192."""
    vae, ref = pair
    ref.enable_tiling(**DIFFUSERS_OFFICIAL_TILES)
    try:
        z = torch.randn(1, 16, 1, 33, 34, generator=torch.Generator().manual_seed(5))
        plan = plan_decode(vae.config, (1, 33, 34), TilingConfig())
        assert plan.h_spans == ((0, 32), (24, 33)) and plan.w_spans == ((0, 32), (24, 34))
        out = vae.decode(z, TilingConfig())
        assert out.shape == (1, 3, 1, 264, 272)
        assert rel_err(out, ref.decode(z).sample) < TOL
    finally:
        ref.disable_tiling()


@torch.no_grad()
def test_causal_attention_equals_dense_masked_attention() -> None:
    """The per-frame key-prefix attention is the official dense frame-causal mask, computed without it."""
    torch.manual_seed(0)
    attn = MidBlockAttention(16, 4, causal=True).eval()
    x = torch.randn(2, 16, 4, 3, 5)
    h = attn.group_norm(x).flatten(2).transpose(1, 2)  # [B, T*H*W, C]
    q, k, v = attn.to_q(h), attn.to_k(h), attn.to_v(h)
    mask = frame_causal_mask(4, 15)
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    expected = x + attn.to_out[0](dense).transpose(1, 2).reshape(x.shape)
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)
    # and the mask matters: without it the result differs
    attn.causal = False
    assert not torch.allclose(attn(x), expected, atol=1e-4)
