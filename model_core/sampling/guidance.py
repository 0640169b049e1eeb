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

    `text` is the positive prompt with the blank (white) identity image, `identity` the positive prompt with
    the real one, `uncond` the negative prompt with the blank image.
    """
    return uncond + cfg_scale * (text - uncond) + ip_scale * (identity - text)


def identity_scale_at(step: int, num_steps: int, ip_cfg_scale: float) -> float:
    """The identity-guidance scale at `step`: linear from `ip_cfg_scale` at step 0 to 1.0 at the last step."""
    if num_steps <= 1:
        return float(ip_cfg_scale)
    frac = step / (num_steps - 1)
    return float(ip_cfg_scale + (1.0 - ip_cfg_scale) * frac)


def embedded_guidance(scale: float, batch: int, *, release_rounding: bool = True) -> Tensor:
    """The float32 [B] input of `guidance_in` for the guidance-distilled T2V checkpoint: scale * 1000.

    With `release_rounding` (default) the product is formed in bfloat16 as the release does, so 6.0 becomes
    6016.0 rather than 6000.0; the released weights were tuned with that input. Set it to False for the exact
    product.
    """
    if release_rounding:
        return (torch.full((batch,), float(scale), dtype=torch.bfloat16) * 1000).float()
    return torch.full((batch,), float(scale) * 1000.0, dtype=torch.float32)
