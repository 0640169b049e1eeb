"""The VAE seen from the conditioning side: anything whose `encode(x, tiling=...)` returns a latent distribution.

The 3D VAE lives in `model_core.vae`; conditioning code only needs this protocol, so it is tested on its own
and with the real tiny VAE.

Tiling: the release calls `vae.enable_tiling()` before it encodes the identity image, the white identity image,
the masked video and the mask, so every conditioning encode here is tiled with the VAE's official arithmetic
by default (`tiling="official"`: `TilingConfig.from_vae_config(vae.config)`, 256 px / 64 frame tiles for the
released VAE). Tiling only splits inputs larger than one tile (a side > 256 px or > 64 frames, i.e. every 720p
input), so small inputs encode in one pass either way. `tiling=None` encodes in one pass always; a
`TilingConfig` sets the tiles.
"""

from __future__ import annotations

from typing import Final, Literal, Protocol

import torch

from model_core.vae import TilingConfig, VAEConfig

# HunyuanVideo 3D VAE latent scale (config.json `scaling_factor`).
VAE_SCALING_FACTOR = 0.476986

OFFICIAL_TILING: Final = "official"
Tiling = TilingConfig | Literal["official"] | None


class LatentDistribution(Protocol):
    """A diagonal Gaussian over latents."""

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """mean + std * noise drawn from `generator`."""
        ...

    def mode(self) -> torch.Tensor:
        """The mean."""
        ...


class VideoEncoder(Protocol):
    """What conditioning needs from the VAE: [B, 3, F, H, W] in [-1, 1] -> a latent distribution, tiled when
    given a `TilingConfig` (`model_core.vae.CausalVAE3D`)."""

    def encode(self, x: torch.Tensor, tiling: TilingConfig | None = None) -> LatentDistribution:
        """The latent distribution of `x`, tiled by `tiling` (None: one pass)."""
        ...


def official_tiling(vae: object) -> TilingConfig:
    """The tiling the release's `enable_tiling()` gives this VAE: tile sizes from its config's sample_size and
    sample_tsize, or the released VAE's 256 px / 64 frames when it has no `VAEConfig`."""
    config = getattr(vae, "config", None)
    if isinstance(config, VAEConfig):
        return TilingConfig.from_vae_config(config)
    return TilingConfig()


def resolve_tiling(vae: object, tiling: Tiling) -> TilingConfig | None:
    """`"official"` -> `official_tiling(vae)`; a `TilingConfig` or None as given."""
    if isinstance(tiling, str):
        if tiling != OFFICIAL_TILING:
            raise ValueError(
                f"tiling must be a TilingConfig, None (one pass) or {OFFICIAL_TILING!r}, got {tiling!r}"
            )
        return official_tiling(vae)
    if tiling is not None and not isinstance(tiling, TilingConfig):
        raise ValueError(
            f"tiling must be a TilingConfig, None (one pass) or {OFFICIAL_TILING!r}, got {type(tiling).__name__}"
        )
    return tiling


def encode_sample(
    vae: VideoEncoder,
    pixels: torch.Tensor,
    generator: torch.Generator | None = None,
    scaling_factor: float = VAE_SCALING_FACTOR,
    tiling: Tiling = OFFICIAL_TILING,
) -> torch.Tensor:
    """VAE-encode [B, 3, F, H, W] pixels and return a scaled *sample* of the latent distribution, as the release
    does for identity images and edit videos (not the mode). Tiled as the release by default (module docstring).
    """
    if pixels.ndim != 5 or pixels.shape[1] != 3:
        raise ValueError(f"pixels must be [B, 3, F, H, W], got {tuple(pixels.shape)}")
    param = next(iter(getattr(vae, "parameters", lambda: iter(()))()), None)
    if param is not None:  # on the VAE's device, in its dtype
        pixels = pixels.to(device=param.device, dtype=param.dtype)
    config = resolve_tiling(vae, tiling)
    dist = vae.encode(pixels) if config is None else vae.encode(pixels, tiling=config)
    latent_dist = getattr(dist, "latent_dist", dist)  # diffusers-style outputs wrap the distribution
    return latent_dist.sample(generator) * scaling_factor
