"""Initial noise from a per-unit seed, identical on any device and for any number of ranks."""

from __future__ import annotations

import torch
from torch import Tensor


def initial_noise(
    shape: tuple[int, ...],
    seed: int,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal latents [B, C, T, H, W]; sample i is drawn from seed + i.

    Note: drawn on the CPU in float32 and then moved, so every rank and every device type gets the same
    values. The release draws on the GPU, so the same seed gives other noise than the release does.
    """
    if len(shape) < 2:
        raise ValueError(f"noise shape must be [B, ...], got {shape}")
    samples = []
    for i in range(shape[0]):
        gen = torch.Generator(device="cpu").manual_seed(int(seed) + i)
        samples.append(torch.randn(tuple(shape[1:]), generator=gen, dtype=torch.float32))
    return torch.stack(samples).to(device=device, dtype=dtype)
