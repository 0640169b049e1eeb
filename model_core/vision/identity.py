"""Identity (reference) images: white-padded to the video size and VAE-encoded as one-frame videos."""

from __future__ import annotations

import numpy as np
import torch

from model_core.vision.image import pad_to_size, to_unit_range, white_image
from model_core.vision.latents import (
    OFFICIAL_TILING,
    VAE_SCALING_FACTOR,
    Tiling,
    VideoEncoder,
    encode_sample,
)


def identity_pixels(image: np.ndarray, height: int, width: int) -> torch.Tensor:
    """An identity image as the VAE input: aspect-keeping resize, centre white pad to height x width,
    [-1, 1]. Returns float32 [1, 3, 1, H, W] (a one-frame video)."""
    padded = pad_to_size(image, height, width)
    return to_unit_range(padded)[None, :, None]


def identity_latents(
    vae: VideoEncoder,
    image: np.ndarray,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    scaling_factor: float = VAE_SCALING_FACTOR,
    tiling: Tiling = OFFICIAL_TILING,
) -> torch.Tensor:
    """Reference latents [1, C, 1, H/8, W/8] of one identity image: a scaled VAE *sample* (the release samples
    the distribution here rather than taking its mode, so a seed changes them), tiled as the release
    (`model_core.vision.latents`)."""
    return encode_sample(vae, identity_pixels(image, height, width), generator, scaling_factor, tiling)


def white_identity_latents(
    vae: VideoEncoder,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    scaling_factor: float = VAE_SCALING_FACTOR,
    tiling: Tiling = OFFICIAL_TILING,
) -> torch.Tensor:
    """The unconditional reference latents of identity guidance (`ip_cfg_scale > 0`): the same encode of an
    all-white height x width image (every pixel 1.0 in [-1, 1], the release's `ones_like(ref)`)."""
    return identity_latents(vae, white_image(height, width), height, width, generator, scaling_factor, tiling)
