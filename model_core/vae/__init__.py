"""The HunyuanVideo causal 3D VAE (official = diffusers key names), tiled encode/decode with the official tile
arithmetic, and decode shared across the ranks of a process group."""

from model_core.vae.config import VAE_PRESETS, TilingConfig, VAEConfig, vae_preset
from model_core.vae.loading import (
    load_vae,
    read_vae_state_dict,
    save_vae,
    vae_config_from_dict,
    vae_config_to_dict,
)
from model_core.vae.model import CausalVAE3D, LatentDistribution
from model_core.vae.tiling import (
    DecodePlan,
    EncodePlan,
    Tile,
    TileArithmetic,
    assign_tiles,
    plan_decode,
    plan_encode,
    tiled_decode,
    tiled_encode,
)

__all__ = [
    "VAE_PRESETS",
    "CausalVAE3D",
    "DecodePlan",
    "EncodePlan",
    "LatentDistribution",
    "Tile",
    "TileArithmetic",
    "TilingConfig",
    "VAEConfig",
    "assign_tiles",
    "load_vae",
    "plan_decode",
    "plan_encode",
    "read_vae_state_dict",
    "save_vae",
    "tiled_decode",
    "tiled_encode",
    "vae_config_from_dict",
    "vae_config_to_dict",
    "vae_preset",
]
