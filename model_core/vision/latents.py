"""The VAE seen from the conditioning side: anything whose `encode(x)` returns a latent distribution.

The 3D VAE lives in `model_core.vae`; conditioning code only needs this protocol, so it is tested on its own
and with the real tiny VAE.
"""

from __future__ import annotations

from typing import Protocol

import torch

# HunyuanVideo 3D VAE latent scale (config.json `scaling_factor`).
VAE_SCALING_FACTOR = 0.476986


class LatentDistribution(Protocol):
    """A diagonal Gaussian over latents."""

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor: ...

    def mode(self) -> torch.Tensor: ...


class VideoEncoder(Protocol):
    """What conditioning needs from the VAE: [B, 3, F, H, W] in [-1, 1] -> a latent distribution."""

    def encode(self, x: torch.Tensor) -> LatentDistribution: ...


def encode_sample(
    vae: VideoEncoder,
    pixels: torch.Tensor,
    generator: torch.Generator | None = None,
    scaling_factor: float = VAE_SCALING_FACTOR,
) -> torch.Tensor:
    """VAE-encode [B, 3, F, H, W] pixels and return a scaled *sample* of the latent distribution, as the release
    does for identity images and edit videos (not the mode)."""
    if pixels.ndim != 5 or pixels.shape[1] != 3:
        raise ValueError(f"pixels must be [B, 3, F, H, W], got {tuple(pixels.shape)}")
    dist = vae.encode(pixels)
    latent_dist = getattr(dist, "latent_dist", dist)  # diffusers-style outputs wrap the distribution
    return latent_dist.sample(generator) * scaling_factor
