"""The causal 3D VAE: encoder, decoder, latent distribution, and the model that holds them.

Keys and shapes equal the official checkpoint (and diffusers' `AutoencoderKLHunyuanVideo`), so
`load_state_dict(strict=True)` takes the released files (see :mod:`model_core.vae.loading`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_core.vae.config import TilingConfig, VAEConfig
from model_core.vae.layers import (
    CausalConv3d,
    DownsampleCausal3D,
    MidBlock3D,
    ResnetBlockCausal3D,
    UpsampleCausal3D,
)
from model_core.vae.tiling import tiled_decode, tiled_encode

__all__ = ["CausalVAE3D", "Decoder3D", "Encoder3D", "LatentDistribution"]

LOGVAR_RANGE = (-30.0, 20.0)


@dataclass(frozen=True)
class LatentDistribution:
    """The diagonal Gaussian the encoder returns; `moments` is `[B, 2C, T, H, W]` (mean, then log-variance)."""

    moments: Tensor

    @property
    def mean(self) -> Tensor:
        return self.moments.chunk(2, dim=1)[0]

    @property
    def logvar(self) -> Tensor:
        return self.moments.chunk(2, dim=1)[1].clamp(*LOGVAR_RANGE)

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def mode(self) -> Tensor:
        """The mean (HunyuanVideo I2V and the deterministic encodes)."""
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """mean + std * noise; the noise is drawn like the reference does, so one generator seed gives the same
        latents (HunyuanCustom samples its identity-image and background encodes)."""
        mean = self.mean
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + self.std * noise


def _check_frames(x: Tensor, what: str, rt: int) -> None:
    if (x.shape[2] - 1) % rt:
        k = (x.shape[2] - 1) // rt
        raise ValueError(
            f"{what} has {x.shape[2]} frames; the causal VAE needs {rt}k+1 frames (the first frame is encoded "
            f"alone). Use {rt * k + 1} or {rt * (k + 1) + 1} frames"
        )


class Encoder3D(nn.Module):
    """Video `[B, 3, 4k+1, H, W]` -> moments `[B, 2*latent, k+1, H/8, W/8]` (before `quant_conv`)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        c, g = config.block_out_channels, config.norm_num_groups
        self.conv_in = CausalConv3d(config.in_channels, c[0], 3)
        self.down_blocks = nn.ModuleList()
        for i, stride in enumerate(config.block_strides()):
            block = nn.Module()
            cin = c[i - 1] if i > 0 else c[0]
            block.resnets = nn.ModuleList(
                [
                    ResnetBlockCausal3D(cin if j == 0 else c[i], c[i], g)
                    for j in range(config.layers_per_block)
                ]
            )
            if stride != (1, 1, 1):
                block.downsamplers = nn.ModuleList([DownsampleCausal3D(c[i], stride)])
            self.down_blocks.append(block)
        self.mid_block = MidBlock3D(c[-1], g, config.mid_block_add_attention, config.mid_block_causal_attn)
        self.conv_norm_out = nn.GroupNorm(g, c[-1], eps=1e-6)
        self.conv_out = CausalConv3d(c[-1], 2 * config.latent_channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            for resnet in cast(nn.ModuleList, block.resnets):  # set on a bare Module, typed Tensor | Module
                x = resnet(x)
            for down in getattr(block, "downsamplers", ()):
                x = down(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class Decoder3D(nn.Module):
    """Latents `[B, latent, k+1, h, w]` (after `post_quant_conv`) -> video `[B, 3, 4k+1, 8h, 8w]`."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        c, g = tuple(reversed(config.block_out_channels)), config.norm_num_groups
        self.conv_in = CausalConv3d(config.latent_channels, c[0], 3)
        self.mid_block = MidBlock3D(c[0], g, config.mid_block_add_attention, config.mid_block_causal_attn)
        self.up_blocks = nn.ModuleList()
        for i, factor in enumerate(config.block_strides()):
            block = nn.Module()
            cin = c[i - 1] if i > 0 else c[0]
            block.resnets = nn.ModuleList(
                [
                    ResnetBlockCausal3D(cin if j == 0 else c[i], c[i], g)
                    for j in range(config.layers_per_block + 1)
                ]
            )
            if factor != (1, 1, 1):
                block.upsamplers = nn.ModuleList([UpsampleCausal3D(c[i], factor)])
            self.up_blocks.append(block)
        self.conv_norm_out = nn.GroupNorm(g, c[-1], eps=1e-6)
        self.conv_out = CausalConv3d(c[-1], config.out_channels, 3)

    def forward(self, z: Tensor) -> Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            for resnet in cast(nn.ModuleList, block.resnets):  # set on a bare Module, typed Tensor | Module
                x = resnet(x)
            for up in getattr(block, "upsamplers", ()):
                x = up(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class CausalVAE3D(nn.Module):
    """The HunyuanVideo causal 3D VAE: 4x8x8 compression to 16 latent channels.

    Pixels are in [-1, 1], `[B, 3, 4k+1, H, W]` with H, W multiples of 8. `encode` returns the latent
    distribution; `decode` takes unscaled latents (divide the DiT's latents by `config.scaling_factor`, or use
    :meth:`unscale`). Both tile with the official arithmetic when given a :class:`TilingConfig`; for decode
    shared across ranks see :func:`model_core.vae.tiling.tiled_decode`.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder3D(config)
        self.decoder = Decoder3D(config)
        self.quant_conv = nn.Conv3d(2 * config.latent_channels, 2 * config.latent_channels, 1)
        self.post_quant_conv = nn.Conv3d(config.latent_channels, config.latent_channels, 1)

    # single-pass pieces, also what every tile runs

    def encode_moments(self, x: Tensor) -> Tensor:
        """One pass of encoder + quant_conv, no tiling: `[B, 3, F, H, W]` -> `[B, 2C, T, h, w]`."""
        return self.quant_conv(self.encoder(x))

    def decode_latents(self, z: Tensor) -> Tensor:
        """One pass of post_quant_conv + decoder, no tiling."""
        return self.decoder(self.post_quant_conv(z))

    # checked entry points

    def check_pixels(self, x: Tensor) -> None:
        """Raise ValueError naming the expected shape if `x` cannot be encoded."""
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"pixels must be [B, {cfg.in_channels}, F, H, W] with F = 4k+1, got shape {tuple(x.shape)}; "
                "for a single image use F = 1 (x[:, :, None])"
            )
        _check_frames(x, "the video", cfg.temporal_compression_ratio)
        rs = cfg.spatial_compression_ratio
        if x.shape[3] % rs or x.shape[4] % rs:
            raise ValueError(
                f"pixel height and width must be multiples of {rs}, got {x.shape[3]}x{x.shape[4]}; "
                f"resize or crop to {x.shape[3] // rs * rs}x{x.shape[4] // rs * rs}"
            )

    def check_latents(self, z: Tensor) -> None:
        """Raise ValueError naming the expected shape if `z` cannot be decoded."""
        c = self.config.latent_channels
        if z.ndim != 5 or z.shape[1] != c:
            got = tuple(z.shape)
            hint = ""
            if z.ndim == 5 and z.shape[1] == 2 * c:
                hint = (
                    " (this looks like encoder moments: take .mode() or .sample() of the distribution first)"
                )
            elif z.ndim == 5 and z.shape[2] == c:
                hint = " (channels and frames look swapped: use z.transpose(1, 2))"
            elif z.ndim == 4:
                hint = " (add the frame axis: z[:, :, None])"
            raise ValueError(f"latents must be [B, {c}, T, h, w], got shape {got}{hint}")

    def encode(self, x: Tensor, tiling: TilingConfig | None = None) -> LatentDistribution:
        """Encode pixels in [-1, 1]; tiled with the official arithmetic when `tiling` is given."""
        self.check_pixels(x)
        if tiling is None:
            return LatentDistribution(self.encode_moments(x))
        return LatentDistribution(tiled_encode(self, x, tiling))

    def decode(self, z: Tensor, tiling: TilingConfig | None = None) -> Tensor:
        """Decode unscaled latents to pixels (about [-1, 1]); tiled when `tiling` is given."""
        self.check_latents(z)
        if tiling is None:
            return self.decode_latents(z)
        out = tiled_decode(self, z, tiling)
        assert out is not None  # single-rank decode always returns the frames
        return out

    def scale(self, latents: Tensor) -> Tensor:
        """VAE latents -> DiT latents."""
        return latents * self.config.scaling_factor

    def unscale(self, latents: Tensor) -> Tensor:
        """DiT latents -> VAE latents (what `decode` takes)."""
        return latents / self.config.scaling_factor

    def forward(self, x: Tensor, generator: torch.Generator | None = None, sample: bool = False) -> Tensor:
        """Encode then decode (reconstruction), from the mode unless `sample`."""
        dist = self.encode(x)
        return self.decode(dist.sample(generator) if sample else dist.mode())
