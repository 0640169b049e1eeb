"""Building blocks of the Foley MMDiT; module and parameter names follow the released checkpoints."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# the same timestep embedder as the DiT (names and numerics)
from model_core.dit.layers import TimestepEmbedder, timestep_embedding

__all__ = [
    "ChannelLastConv1d",
    "ConditionProjection",
    "ConvMLP",
    "FoleyRMSNorm",
    "SwiGLU",
    "TimestepEmbedder",
    "apply_rope",
    "modulated_norm",
    "rope_1d",
    "timestep_embedding",
    "wide",
]


def wide(x: Tensor) -> Tensor:
    """x in float32, or in float64 when it is float64 (tests): the dtype the norms and RoPE compute in."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class ConditionProjection(nn.Module):
    """`linear_1` - SiLU - `linear_2`: CLAP text states into the model width (`cond_in`)."""

    def __init__(self, in_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, hidden_size)
        self.act_1 = nn.SiLU()
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(self.act_1(self.linear_1(x)))


class SwiGLU(nn.Module):
    """`w2(silu(w1 x) * w3 x)` with bias-free Linears (`visual_proj`)."""

    def __init__(self, dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, out_dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class ChannelLastConv1d(nn.Conv1d):
    """A Conv1d over `[B, L, C]` tokens (the sequence is the convolved axis)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class ConvMLP(nn.Module):
    """SwiGLU with bias-free channel-last Conv1d in place of the Linears (`w1`, `w2`, `w3`).

    `hidden` is the width after the two-thirds rounding (`FoleyConfig.conv_mlp_hidden`); kernel 3 in the single
    blocks (padding 1, so neighbouring latent frames mix), kernel 1 in `sync_in`.
    """

    def __init__(self, dim: int, hidden: int, kernel_size: int) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.w1 = ChannelLastConv1d(dim, hidden, kernel_size, padding=pad, bias=False)
        self.w2 = ChannelLastConv1d(hidden, dim, kernel_size, padding=pad, bias=False)
        self.w3 = ChannelLastConv1d(dim, hidden, kernel_size, padding=pad, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class FoleyRMSNorm(nn.Module):
    """RMS norm of the triple blocks' q/k: computed in float32 (float64 for float64 input) with eps 1e-6, cast back, times `weight`."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = wide(x)
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def modulated_norm(x: Tensor, shift: Tensor, scale: Tensor, eps: float) -> Tensor:
    """`LayerNorm(x) * (1 + scale) + shift` (no affine), in float32, cast back to x's dtype.

    The release runs under bf16 autocast, which computes LayerNorm in float32; so does this.
    """
    y = F.layer_norm(wide(x), x.shape[-1:], eps=eps)
    return (y * (1 + wide(scale)) + wide(shift)).to(x.dtype)


def rope_1d(length: int, dim: int, theta: float, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """(cos, sin) `[length, dim]` float32 of 1-D RoPE at positions 0..length-1, each frequency on adjacent pairs."""
    pos = torch.arange(length, dtype=torch.float32, device=device)
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, device=device)[: dim // 2].float() / dim))
    angles = torch.outer(pos, freqs)
    return angles.cos().repeat_interleave(2, dim=1), angles.sin().repeat_interleave(2, dim=1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate `x` `[B, L, H, D]` by `(cos, sin)` `[L, D]`: pairs (x0, x1) -> (x0 c - x1 s, x1 c + x0 s); float32 math."""
    xf = wide(x)
    pairs = xf.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return (xf * c + rotated * s).to(x.dtype)
