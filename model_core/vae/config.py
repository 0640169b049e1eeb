"""Configs of the causal 3D VAE and of its tiled encode/decode, and the named VAE presets.

`VAE_PRESETS["hunyuan-vae"]` is the released HunyuanVideo / HunyuanCustom VAE (Tencent/HunyuanVideo, hyvideo/vae/ and ckpts/hunyuan-video-t2v-720p/vae/config.json);
`VAE_PRESETS["tiny-hunyuan-vae"]` keeps the same block layout, 4x8x8 compression and 16 latent channels at a
few hundred kB of weights, for tests and the local demo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["VAE_PRESETS", "TilingConfig", "VAEConfig", "vae_preset"]


@dataclass(frozen=True)
class VAEConfig:
    """The causal 3D VAE (official `AutoencoderKLCausal3D`, diffusers `AutoencoderKLHunyuanVideo`)."""

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 16  # the DiT's in_channels
    # one encoder down block and one decoder up block per entry; the decoder walks them in reverse
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2  # resnets per encoder block; decoder blocks have one more
    norm_num_groups: int = 32
    scaling_factor: float = 0.476986  # latents are multiplied by this before the DiT, divided after
    temporal_compression_ratio: int = 4  # F = 4k+1 frames <-> k+1 latent frames (the first frame alone)
    spatial_compression_ratio: int = 8
    mid_block_add_attention: bool = True
    # HunyuanVideo always masks the mid-block attention frame-causally; HunyuanCustom's code reads this key
    # from config.json (see loading.vae_config_from_dict for the default when the key is absent)
    mid_block_causal_attn: bool = True
    # the official tiling reads its tile sizes from these (TilingConfig.from_vae_config)
    sample_size: int = 256
    sample_tsize: int = 64
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(
                f"block_out_channels {self.block_out_channels} must all divide by norm_num_groups "
                f"{self.norm_num_groups} (GroupNorm); {bad} do not"
            )
        if self.temporal_compression_ratio != 4:
            raise ValueError(
                f"temporal_compression_ratio {self.temporal_compression_ratio} is not supported; the causal "
                "3D VAE uses 4"
            )
        sr = self.spatial_compression_ratio
        if sr < 1 or sr & (sr - 1):
            raise ValueError(f"spatial_compression_ratio must be a power of two, got {sr}")
        n = len(self.block_out_channels)
        if n < max(self.num_spatial_downsamples, 2) + 1:
            raise ValueError(
                f"{n} blocks cannot give spatial compression {sr} and temporal compression "
                f"{self.temporal_compression_ratio}: need at least {max(self.num_spatial_downsamples, 2) + 1} "
                "entries in block_out_channels"
            )
        if self.layers_per_block < 1:
            raise ValueError(f"layers_per_block must be >= 1, got {self.layers_per_block}")

    @property
    def num_spatial_downsamples(self) -> int:
        return self.spatial_compression_ratio.bit_length() - 1

    @property
    def num_temporal_downsamples(self) -> int:
        return self.temporal_compression_ratio.bit_length() - 1

    def block_strides(self) -> tuple[tuple[int, int, int], ...]:
        """(t, h, w) down/up-sampling factor of each encoder block (decoder: the same list, in order).

        Spatial halving in the first log2(spatial) blocks; temporal halving in the log2(temporal) blocks before
        the last one (official: enc block0 (1,2,2), block1 (2,2,2), block2 (2,2,2), block3 none).
        """
        n = len(self.block_out_channels)
        strides = []
        for i in range(n):
            last = i == n - 1
            s = 2 if i < self.num_spatial_downsamples else 1
            t = 2 if (i >= n - 1 - self.num_temporal_downsamples and not last) else 1
            strides.append((t, s, s))
        return tuple(strides)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(T, H, W) of the latents of a `frames` x `height` x `width` video (frames = 4k+1)."""
        rt, rs = self.temporal_compression_ratio, self.spatial_compression_ratio
        return (frames - 1) // rt + 1, height // rs, width // rs

    def sample_shape(self, latent_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(F, H, W) of the video decoded from latents of that shape."""
        rt, rs = self.temporal_compression_ratio, self.spatial_compression_ratio
        return (latent_frames - 1) * rt + 1, height * rs, width * rs


@dataclass(frozen=True)
class TilingConfig:
    """Tiled encode/decode, with the official arithmetic (Tencent/HunyuanVideo,
    hyvideo/vae/autoencoder_kl_causal_3d.py, `enable_tiling`).

    In pixels and frames, as the official `enable_tiling()`; the latent sizes follow from the compression.
    With the defaults a decode uses 32x32-latent tiles at stride 24 (blend 64 px, keep 192 px) and temporal tiles
    of 17 latents at stride 12 (blend 16 frames, keep 48; 49 for the first). A tile that already covers the
    input is not split: tiling switches itself off for small inputs.
    """

    tile_sample_size: int = 256  # pixels, square spatial tiles (official sample_size)
    tile_sample_frames: int = 64  # frames per temporal tile, plus the causal first frame (sample_tsize)
    overlap: float = 0.25  # official tile_overlap_factor
    spatial: bool = True
    temporal: bool = True

    def __post_init__(self) -> None:
        if self.tile_sample_size < 1 or self.tile_sample_frames < 1:
            raise ValueError(
                f"tile_sample_size {self.tile_sample_size} and tile_sample_frames {self.tile_sample_frames} "
                "must be positive (official: 256 and 64)"
            )
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap} (official: 0.25)")

    @classmethod
    def from_vae_config(cls, config: VAEConfig, **overrides: object) -> TilingConfig:
        """The official tiling of a VAE: tile sizes from its sample_size / sample_tsize."""
        values: dict[str, object] = {
            "tile_sample_size": config.sample_size,
            "tile_sample_frames": config.sample_tsize,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


VAE_PRESETS: dict[str, VAEConfig] = {
    "hunyuan-vae": VAEConfig(
        description="HunyuanVideo / HunyuanCustom causal 3D VAE, 246.5M parameters, 248 tensors",
    ),
    "tiny-hunyuan-vae": VAEConfig(
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        norm_num_groups=4,
        description="same layout and compression at a few hundred kB, random weights, for tests and demos",
    ),
}


def vae_preset(name: str) -> VAEConfig:
    """The preset named `name`; the error lists the known names."""
    try:
        return VAE_PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown VAE preset {name!r}; known: {sorted(VAE_PRESETS)}") from None
