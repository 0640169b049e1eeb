"""diffusers twins of our DiT and VAE holding the same weights: the independent references of the parity tests
(`tests/model_core/dit/test_diffusers_parity.py`, `tests/model_core/vae/`) and of the benchmarks that compare
against diffusers (`benchmarks/side_by_side.py`, `benchmarks/gpu_suite.py`).

The DiT's official-layout state dict goes through diffusers' own converter
(`convert_hunyuan_video_transformer_to_diffusers`, the one behind `from_single_file`). That converter hard-codes
the 13B hidden size (3072) when it splits the single blocks' `linear1` into q, k, v and mlp, so that one split is
done here at the model's width, in the order of the official layout (q | k | v | mlp_in); every other key goes
through diffusers' code. The VAE's keys are diffusers' already.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoTransformer3DModel

    from model_core.configs import DiTConfig
    from model_core.vae import CausalVAE3D

__all__ = ["diffusers_dit", "diffusers_vae", "to_diffusers_state"]


def to_diffusers_state(official: dict[str, torch.Tensor], hidden: int) -> dict[str, torch.Tensor]:
    """Official-layout DiT state dict -> diffusers' keys. The tensors are shared (views, no copy)."""
    from diffusers.loaders.single_file_utils import convert_hunyuan_video_transformer_to_diffusers

    state = dict(official)
    linear1 = {k: state.pop(k) for k in list(state) if ".linear1." in k}
    converted = convert_hunyuan_video_transformer_to_diffusers(state)
    for key, tensor in linear1.items():
        block, kind = key.replace("single_blocks", "single_transformer_blocks").split(".linear1.")
        q, k, v, mlp = torch.split(tensor, [hidden, hidden, hidden, tensor.shape[0] - 3 * hidden])
        for name, part in (("attn.to_q", q), ("attn.to_k", k), ("attn.to_v", v), ("proj_mlp", mlp)):
            converted[f"{block}.{name}.{kind}"] = part
    return converted


def diffusers_dit(config: DiTConfig, state: dict[str, torch.Tensor] | None) -> HunyuanVideoTransformer3DModel:
    """diffusers' transformer for `config` holding the weights of the official-layout `state`, loaded strictly
    (None: its own initialisation, e.g. on the meta device)."""
    from diffusers import HunyuanVideoTransformer3DModel

    model = HunyuanVideoTransformer3DModel(
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        num_attention_heads=config.num_heads,
        attention_head_dim=config.head_dim,
        num_layers=config.depth_double,
        num_single_layers=config.depth_single,
        num_refiner_layers=config.refiner_depth,
        mlp_ratio=config.mlp_ratio,
        patch_size=config.patch_size[1],
        patch_size_t=config.patch_size[0],
        qk_norm="rms_norm",
        guidance_embeds=config.guidance_embed,
        text_embed_dim=config.text_states_dim,
        pooled_projection_dim=config.text_pooled_dim,
        rope_theta=config.rope_theta,
        rope_axes_dim=config.rope_axes_dim,
    ).eval()
    if state is not None:
        model.load_state_dict(to_diffusers_state(state, config.hidden_size), strict=True)
    return model


def diffusers_vae(vae: CausalVAE3D) -> AutoencoderKLHunyuanVideo:
    """diffusers' AutoencoderKLHunyuanVideo with the same weights (the keys are identical), no tiling."""
    from diffusers import AutoencoderKLHunyuanVideo

    cfg = vae.config
    ref = AutoencoderKLHunyuanVideo(
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        latent_channels=cfg.latent_channels,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_num_groups,
        scaling_factor=cfg.scaling_factor,
        spatial_compression_ratio=cfg.spatial_compression_ratio,
        temporal_compression_ratio=cfg.temporal_compression_ratio,
        mid_block_add_attention=cfg.mid_block_add_attention,
    ).eval()
    ref.load_state_dict(vae.state_dict(), strict=True)
    # diffusers decodes frame-batched by default, which is a different tiling; the plain pass is the reference
    ref.use_framewise_decoding = False
    ref.use_framewise_encoding = False
    return ref
