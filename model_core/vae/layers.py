"""Building blocks of the causal 3D VAE. Module and parameter names follow the official checkpoint.

Tensors are video feature maps `[B, C, T, H, W]`. Every convolution is causal in time: it pads only the past
(by replicating the first frame), so frame t never sees frames after t and the first frame is encoded alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "CausalConv3d",
    "DownsampleCausal3D",
    "MidBlock3D",
    "MidBlockAttention",
    "ResnetBlockCausal3D",
    "UpsampleCausal3D",
    "frame_causal_mask",
]


class CausalConv3d(nn.Module):
    """`nn.Conv3d` after replicate padding of (k//2, k//2) in H and W and (k-1, 0) in T (past only)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int | tuple = 1
    ) -> None:
        super().__init__()
        k = kernel_size
        self.padding = (k // 2, k // 2, k // 2, k // 2, k - 1, 0)  # (W, W, H, H, T, T)
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, self.padding, mode="replicate"))


class ResnetBlockCausal3D(nn.Module):
    """GroupNorm -> SiLU -> causal conv, twice, plus a 1x1x1 shortcut when the channel count changes."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3)
        self.conv_shortcut = (
            CausalConv3d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        residual = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        return h + residual


class DownsampleCausal3D(nn.Module):
    """A causal 3x3x3 conv with stride (t, s, s); with t = 2, 2k+1 frames become k+1."""

    def __init__(self, channels: int, stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv = CausalConv3d(channels, channels, 3, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class UpsampleCausal3D(nn.Module):
    """Nearest upsampling by (t, s, s), then a causal 3x3x3 conv.

    The first frame is upsampled in space only, so k+1 latent frames become 2k+1 (t = 2) and the causal
    first frame stays a single frame.
    """

    def __init__(self, channels: int, factor: tuple[int, int, int]) -> None:
        super().__init__()
        self.factor = factor
        self.conv = CausalConv3d(channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        t, s, _ = self.factor
        first = F.interpolate(x[:, :, 0], scale_factor=(s, s), mode="nearest").unsqueeze(2)
        if x.shape[2] > 1:
            # interpolate needs a contiguous input here (pytorch#81665)
            rest = F.interpolate(x[:, :, 1:].contiguous(), scale_factor=(t, s, s), mode="nearest")
            x = torch.cat([first, rest], dim=2)
        else:
            x = first
        return self.conv(x)


def frame_causal_mask(frames: int, tokens_per_frame: int, device: torch.device | None = None) -> Tensor:
    """Boolean `[N, N]` mask, N = frames * tokens_per_frame: token i may attend to token j iff
    frame(j) <= frame(i). The spec of :class:`MidBlockAttention`'s causal path (which never builds it)."""
    frame = torch.arange(frames, device=device).repeat_interleave(tokens_per_frame)
    return frame[None, :] <= frame[:, None]


class MidBlockAttention(nn.Module):
    """Single-head self-attention over all T*H*W positions, with GroupNorm in front and a residual.

    Causal (official HunyuanVideo): every position attends to all positions of its own and earlier frames.
    Note: diverges from the reference in how, not what: the official code builds the dense `[N, N]` mask
    (N = T*H*W; 4.6e5 at 720p x 129 frames untiled, which cannot be allocated). Here each query frame attends
    to its key prefix without a mask, which is the same function; sums run in another order (~1e-7 relative).
    """

    def __init__(self, channels: int, groups: int, causal: bool, eps: float = 1e-6) -> None:
        super().__init__()
        self.causal = causal
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x: Tensor) -> Tensor:
        _, _, frames, height, width = x.shape
        h = self.group_norm(x)
        h = rearrange(h, "B C T H W -> B (T H W) C")
        # one head as a 4-D [B, 1, N, C] call: torch picks its fused kernels only for 4-D input
        q, k, v = (proj(h)[:, None] for proj in (self.to_q, self.to_k, self.to_v))
        if self.causal and frames > 1:
            hw = height * width
            out = torch.cat(
                [
                    F.scaled_dot_product_attention(
                        q[:, :, f * hw : (f + 1) * hw], k[:, :, : (f + 1) * hw], v[:, :, : (f + 1) * hw]
                    )
                    for f in range(frames)
                ],
                dim=2,
            )
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out = self.to_out[1](self.to_out[0](out[:, 0]))
        out = rearrange(out, "B (T H W) C -> B C T H W", T=frames, H=height, W=width)
        return x + out


class MidBlock3D(nn.Module):
    """resnet -> attention -> resnet at the lowest resolution (keys `resnets.{0,1}`, `attentions.0`)."""

    def __init__(self, channels: int, groups: int, add_attention: bool, causal: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlockCausal3D(channels, channels, groups), ResnetBlockCausal3D(channels, channels, groups)]
        )
        # without attention the official module list holds None; nothing of it reaches the state dict
        self.attentions = nn.ModuleList(
            [MidBlockAttention(channels, groups, causal)] if add_attention else []
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.resnets[0](x)
        for attn in self.attentions:
            x = attn(x)
        return self.resnets[1](x)
