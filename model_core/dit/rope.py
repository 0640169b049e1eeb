"""3D rotary position embedding of the image tokens, from explicit integer (t, h, w) positions.

Positions are an `[N, 3]` integer tensor, one row per image token in sequence order, so a rank that holds a
slice of the sequence slices the positions (or the cos/sin) of its own tokens. Identity-image tokens come first:
subject k (1-based) sits at t = -k with w shifted by the token width (HunyuanCustom's `timecat-w`), then the video
tokens on the grid t, h, w >= 0, row-major in (t, h, w).

cos/sin follow the release: per axis `freqs = 1 / theta**(arange(0, d, 2) / d)`, angles = position * freqs,
each angle repeated for its adjacent pair (interleaved convention), axes concatenated t | h | w.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["apply_rope", "rope_cos_sin", "token_positions"]


def token_positions(
    frames: int,
    height: int,
    width: int,
    *,
    num_refs: int = 0,
    ref_w_shift: bool = True,
    device: torch.device | str | None = None,
) -> Tensor:
    """`[num_refs*height*width + frames*height*width, 3]` int64 (t, h, w) positions in sequence order.

    `frames, height, width` is the token grid (latent size divided by the patch). Identity-image tokens come first,
    subject k (1-based) at t = -k and w in [width, 2*width) (HunyuanCustom's `timecat-w`), or w in [0, width)
    with `ref_w_shift=False` (Avatar's `timecat`); video tokens follow at t in [0, frames).
    """
    h = torch.arange(height, device=device)
    w = torch.arange(width, device=device)
    parts = []
    for k in range(1, num_refs + 1):
        hh, ww = torch.meshgrid(h, w + width if ref_w_shift else w, indexing="ij")
        parts.append(torch.stack([torch.full_like(hh, -k), hh, ww], dim=-1).reshape(-1, 3))
    t = torch.arange(frames, device=device)
    tt, hh, ww = torch.meshgrid(t, h, w, indexing="ij")
    parts.append(torch.stack([tt, hh, ww], dim=-1).reshape(-1, 3))
    return torch.cat(parts).to(torch.int64)


def rope_cos_sin(positions: Tensor, axes_dim: tuple[int, ...], theta: float) -> tuple[Tensor, Tensor]:
    """cos and sin, each `[N, sum(axes_dim)]` float32, for `[N, len(axes_dim)]` integer positions."""
    if positions.ndim != 2 or positions.shape[1] != len(axes_dim):
        raise ValueError(f"positions must be [N, {len(axes_dim)}], got {tuple(positions.shape)}")
    cos, sin = [], []
    for axis, dim in enumerate(axes_dim):
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2, device=positions.device)[: dim // 2].float() / dim)
        angles = torch.outer(positions[:, axis].float(), freqs)  # [N, dim/2]
        cos.append(angles.cos().repeat_interleave(2, dim=1))
        sin.append(angles.sin().repeat_interleave(2, dim=1))
    return torch.cat(cos, dim=1), torch.cat(sin, dim=1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate adjacent pairs of `x [B, N, H, D]` by the angles of `cos/sin [N, D]`; math in fp32, result in x's dtype."""
    if cos.shape != sin.shape or cos.shape != (x.shape[1], x.shape[-1]):
        raise ValueError(
            f"RoPE cos/sin {tuple(cos.shape)} must be [N, D] = [{x.shape[1]}, {x.shape[-1]}] for q/k {tuple(x.shape)}: "
            "the positions do not match the image tokens (frame count or grid)"
        )
    xf = x.float()
    real, imag = xf.unflatten(-1, (-1, 2)).unbind(-1)
    rotated = torch.stack([-imag, real], dim=-1).flatten(-2)  # (x0, x1) -> (-x1, x0) per pair
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    # x * cos + rotated * sin, the same operations in place: two temporaries of x's size instead of four
    out = rotated.mul_(sin)
    return out.add_(xf * cos).to(x.dtype)
