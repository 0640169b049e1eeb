"""Classifier-free guidance: real CFG, HunyuanCustom's identity guidance, and the embedded guidance input."""

from __future__ import annotations

import torch
from torch import Tensor


def cfg_combine(uncond: Tensor, cond: Tensor, scale: float) -> Tensor:
    """uncond + scale * (cond - uncond), the batch being [uncond, cond]."""
    return uncond + scale * (cond - uncond)


def identity_cfg_combine(
    uncond: Tensor, text: Tensor, identity: Tensor, cfg_scale: float, ip_scale: float
) -> Tensor:
    """HunyuanCustom's three-way guidance: uncond + cfg*(text - uncond) + ip*(identity - text).

    The three predictions differ in their identity latents, not in how LLaVA saw the image: `identity` is the
    positive prompt with the real identity latents, `text` the same positive text states with the latents of a
    white image, and `uncond` the negative prompt with the white image's latents (see `Conditioning`).
    """
    return uncond + cfg_scale * (text - uncond) + ip_scale * (identity - text)


def identity_scale_at(step: int, num_steps: int, ip_cfg_scale: float) -> float:
    """The identity-guidance scale at `step`, as HunyuanCustom's pipeline computes it.

    It starts at `ip_cfg_scale` and drops by `(ip_cfg_scale - 1) / (num_steps - 1 + 1e-3)` after every step,
    so it ends just above 1.0 (1.00007 for 3.0 at 30 steps). Note: the 1e-3 and the running subtraction are
    the release's; they are kept so that the same scale reaches the same step bit for bit.
    """
    if not 0 <= step < max(num_steps, 1):
        raise ValueError(f"step {step} is outside 0..{num_steps - 1}")
    scale = float(ip_cfg_scale)
    decrement = (scale - 1.0) / (num_steps - 1 + 1e-3)
    for _ in range(step):
        scale -= decrement
    return scale


def embedded_guidance(scale: float, batch: int, *, release_rounding: bool = True) -> Tensor:
    """The float32 [B] input of `guidance_in` for the guidance-distilled T2V checkpoint: scale * 1000.

    With `release_rounding` (default) the product is formed in bfloat16 as the release does, so 6.0 becomes
    6016.0 rather than 6000.0; the released weights were tuned with that input. Set it to False for the exact
    product.
    """
    if release_rounding:
        return (torch.full((batch,), float(scale), dtype=torch.bfloat16) * 1000).float()
    return torch.full((batch,), float(scale) * 1000.0, dtype=torch.float32)
