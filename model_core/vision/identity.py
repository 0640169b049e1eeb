"""Identity (reference) images: white-padded to the video size and VAE-encoded as one-frame videos."""

from __future__ import annotations

import numpy as np
import torch

from model_core.vision.image import pad_to_size, to_unit_range
from model_core.vision.latents import VAE_SCALING_FACTOR, VideoEncoder, encode_sample


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
) -> torch.Tensor:
    """Reference latents [1, C, 1, H/8, W/8] of one identity image: a scaled VAE *sample* (the release samples
    the distribution here rather than taking its mode, so a seed changes them)."""
    pixels = identity_pixels(image, height, width)
    param = next(iter(getattr(vae, "parameters", lambda: iter(()))()), None)
    if param is not None:
        pixels = pixels.to(device=param.device, dtype=param.dtype)
    return encode_sample(vae, pixels, generator, scaling_factor)
