"""Shared helpers of the VAE tests: a random tiny VAE, its diffusers twin (`tests/diffusers_twins.py`), small
tilings."""

from __future__ import annotations

import torch

from model_core.vae import VAE_PRESETS, CausalVAE3D, TilingConfig, VAEConfig
from tests.diffusers_twins import diffusers_vae as diffusers_twin  # the tests' name for the shared twin

__all__ = [
    "DIFFUSERS_OFFICIAL_TILES",
    "DIFFUSERS_SMALL_TILES",
    "SMALL_TILES",
    "TINY",
    "diffusers_twin",
    "random_tiny_vae",
    "rel_err",
]

TINY = VAE_PRESETS["tiny-hunyuan-vae"]
# 64 px / 16-frame tiles: 8x8-latent tiles at stride 6 (blend 16 px, keep 48), 5-latent temporal tiles at
# stride 3 (blend 4 frames, keep 12), so tiny inputs cross several tiles in every axis
SMALL_TILES = TilingConfig(tile_sample_size=64, tile_sample_frames=16)
# the same arithmetic in diffusers' enable_tiling() terms
DIFFUSERS_SMALL_TILES = {
    "tile_sample_min_height": 64,
    "tile_sample_min_width": 64,
    "tile_sample_min_num_frames": 16,
    "tile_sample_stride_height": 48,
    "tile_sample_stride_width": 48,
    "tile_sample_stride_num_frames": 12,
}
# The official tile arithmetic (hyvideo/vae/autoencoder_kl_causal_3d.py): this makes diffusers' decode follow the official arithmetic
DIFFUSERS_OFFICIAL_TILES = {
    "tile_sample_min_height": 256,
    "tile_sample_min_width": 256,
    "tile_sample_min_num_frames": 64,
    "tile_sample_stride_height": 192,
    "tile_sample_stride_width": 192,
    "tile_sample_stride_num_frames": 48,
}


def random_tiny_vae(seed: int = 0, config: VAEConfig = TINY) -> CausalVAE3D:
    """Tiny VAE with every parameter random, norms included (default init would leave them 1 and 0 and hide
    a swapped norm)."""
    gen = torch.Generator().manual_seed(seed)
    vae = CausalVAE3D(config).eval()
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if p.ndim > 1:
                bound = 1.0 / (p[0].numel() ** 0.5)
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound * 1.7)
            elif name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return vae


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())
