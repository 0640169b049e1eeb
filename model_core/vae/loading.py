"""Read a VAE from its released files: `config.json` plus the weights, plain or `vae.`-prefixed.

The HunyuanVideo release ships `vae/config.json` + `vae/pytorch_model.pt`; HunyuanCustom ships the same with
every key prefixed `vae.`; diffusers-format folders hold `diffusion_pytorch_model.safetensors`. All go through
the safe loader (:func:`model_core.checkpoints.read_state_dict`, no arbitrary unpickling).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from model_core.checkpoints import CheckpointMismatchError, diff_keys, read_state_dict
from model_core.vae.config import VAE_PRESETS, VAEConfig
from model_core.vae.model import CausalVAE3D

__all__ = [
    "WEIGHTS_FILE",
    "load_vae",
    "read_vae_state_dict",
    "save_vae",
    "vae_config_from_dict",
    "vae_config_to_dict",
]

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
# block type names of the official config.json and of diffusers'
_DOWN_TYPES = {"DownEncoderBlockCausal3D", "HunyuanVideoDownBlock3D"}
_UP_TYPES = {"UpDecoderBlockCausal3D", "HunyuanVideoUpBlock3D"}


def vae_config_from_dict(raw: Mapping[str, Any], *, causal_attention: bool | None = None) -> VAEConfig:
    """A :class:`VAEConfig` from a `config.json` of the official release or of diffusers.

    `mid_block_causal_attn` is honoured when present. When absent, the mask is causal, as HunyuanVideo always
    uses it; HunyuanCustom's code would default to False there (Tencent-Hunyuan/HunyuanCustom, hymm_sp/vae/), so pass
    `causal_attention` to force either value.
    """

    def first(*names: str, default: Any = None) -> Any:
        return next((raw[n] for n in names if n in raw and raw[n] is not None), default)

    act = first("act_fn", default="silu")
    if act not in ("silu", "swish"):
        raise ValueError(f"config.json act_fn {act!r} is not supported; the causal 3D VAE uses 'silu'")
    if first("shift_factor", default=0.0):
        raise ValueError(f"config.json has shift_factor {raw['shift_factor']}; the causal 3D VAE has none")
    blocks = tuple(int(c) for c in first("block_out_channels", default=(128, 256, 512, 512)))
    for key, known in (("down_block_types", _DOWN_TYPES), ("up_block_types", _UP_TYPES)):
        types = raw.get(key)
        if types is None:
            continue
        unknown = sorted(set(types) - known)
        if unknown or len(types) != len(blocks):
            raise ValueError(
                f"config.json {key} {list(types)} must be {len(blocks)} entries (one per block_out_channels) "
                f"of {sorted(known)}"
            )
    sample_size = first("sample_size", default=256)
    if isinstance(sample_size, (list, tuple)):
        sample_size = sample_size[0]
    causal = first("mid_block_causal_attn", default=True) if causal_attention is None else causal_attention
    return VAEConfig(
        in_channels=int(first("in_channels", default=3)),
        out_channels=int(first("out_channels", default=3)),
        latent_channels=int(first("latent_channels", default=16)),
        block_out_channels=blocks,
        layers_per_block=int(first("layers_per_block", default=2)),
        norm_num_groups=int(first("norm_num_groups", default=32)),
        scaling_factor=float(first("scaling_factor", default=0.476986)),
        temporal_compression_ratio=int(
            first("time_compression_ratio", "temporal_compression_ratio", default=4)
        ),
        spatial_compression_ratio=int(first("spatial_compression_ratio", default=8)),
        mid_block_add_attention=bool(first("mid_block_add_attention", default=True)),
        mid_block_causal_attn=bool(causal),
        sample_size=int(sample_size),
        sample_tsize=int(first("sample_tsize", default=64)),
    )


def vae_config_to_dict(config: VAEConfig) -> dict[str, Any]:
    """The `config.json` written by :func:`save_vae`: diffusers' names plus the official extras."""
    n = len(config.block_out_channels)
    return {
        "_class_name": "AutoencoderKLHunyuanVideo",
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "latent_channels": config.latent_channels,
        "down_block_types": ["HunyuanVideoDownBlock3D"] * n,
        "up_block_types": ["HunyuanVideoUpBlock3D"] * n,
        "block_out_channels": list(config.block_out_channels),
        "layers_per_block": config.layers_per_block,
        "act_fn": "silu",
        "norm_num_groups": config.norm_num_groups,
        "scaling_factor": config.scaling_factor,
        "spatial_compression_ratio": config.spatial_compression_ratio,
        "temporal_compression_ratio": config.temporal_compression_ratio,
        "mid_block_add_attention": config.mid_block_add_attention,
        "mid_block_causal_attn": config.mid_block_causal_attn,
        "sample_size": config.sample_size,
        "sample_tsize": config.sample_tsize,
    }


def read_vae_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The VAE tensors of a file or folder, with a HunyuanCustom `vae.` prefix stripped (CPU)."""
    return read_state_dict(path, map_location="cpu", prefix="vae.")


def _best_preset(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    for name, cfg in VAE_PRESETS.items():
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in CausalVAE3D(cfg).state_dict().items()}
        if expected == dict(shapes):
            return name
    return None


def _check_keys(model: CausalVAE3D, state: Mapping[str, Tensor], source: Path) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    diff = diff_keys(got, expected)
    if diff.ok:
        return
    best = _best_preset(got)
    fix = f"; the checkpoint fits preset {best!r}" if best else "; check config.json against the weights"
    raise CheckpointMismatchError(
        f"{source} does not fit the VAE config {model.config.block_out_channels}{fix}\n{diff.describe()}",
        diff,
        best,
    )


def load_vae(
    path: str | Path,
    *,
    config: VAEConfig | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    causal_attention: bool | None = None,
) -> CausalVAE3D:
    """Build the VAE from a folder (config.json + weights) or a weights file, strictly: every key and shape
    must match, else :class:`~model_core.checkpoints.CheckpointMismatchError` lists the differences.

    Args:
        path: a folder with `config.json` and one of `pytorch_model.pt`, `model.safetensors`,
            `diffusion_pytorch_model.safetensors`; or a weights file (then `config` or a `config.json` beside it).
        config: overrides the config.json.
        causal_attention: forces `mid_block_causal_attn` (see :func:`vae_config_from_dict`).
    """
    path = Path(path)
    if config is None:
        config_file = (path if path.is_dir() else path.parent) / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(
                f"no config.json beside {path}; pass config=VAE_PRESETS['hunyuan-vae'] (or the matching preset)"
            )
        config = vae_config_from_dict(json.loads(config_file.read_text()), causal_attention=causal_attention)
    state = read_vae_state_dict(path)
    with torch.device("meta"):
        model = CausalVAE3D(config)
    _check_keys(model, state, path)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()


def save_vae(vae: CausalVAE3D, directory: str | Path) -> Path:
    """Write `config.json` and the weights as safetensors into `directory`; :func:`load_vae` reads it back."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(vae_config_to_dict(vae.config), indent=2) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in vae.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    return directory
