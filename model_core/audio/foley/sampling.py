"""Foley sampling: flow matching without shift, Euler, CFG with the learned empty visual features.

Uses `model_core.sampling`'s schedule (sigmas in float32, 1 -> 0), Euler step (float32 latents) and per-unit
noise. Defaults are the release's: 50 steps, guidance 4.5, shift 1.0. In the CFG batch the unconditional row comes
first: empty SigLIP2 and Synchformer features (`empty_clip_feat`, `empty_sync_feat`) with the negative prompt's
CLAP states; the conditional row has the real features and the prompt's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from model_core.audio.foley.config import FoleyConfig
from model_core.audio.foley.model import FoleyDiT, split_training_only
from model_core.sampling.noise import initial_noise
from model_core.sampling.schedule import FlowMatchSchedule, euler_step

__all__ = ["FoleyConditioning", "load_foley", "sample_foley"]


@dataclass(frozen=True)
class FoleyConditioning:
    """One clip's features: SigLIP2 `[1, N, D]`, Synchformer `[1, S*8, D]`, CLAP prompt and negative `[1, M, D]`,
    and the latent length L (`encoders.latent_length`)."""

    clip: Tensor
    sync: Tensor
    text: Tensor
    negative_text: Tensor
    length: int


def sample_foley(
    model: FoleyDiT,
    cond: FoleyConditioning,
    *,
    num_steps: int = 50,
    guidance_scale: float = 4.5,
    shift: float = 1.0,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """DAC-VAE latents `[1, latent_dim, L]` (float32) for one clip."""
    device = model.audio_embedder.proj.weight.device
    schedule = FlowMatchSchedule.create(num_steps, shift, reverse=True)
    latents = initial_noise((1, model.config.latent_dim, cond.length), seed, device=device)
    guided = guidance_scale > 1.0
    clip, sync, text = cond.clip.to(device), cond.sync.to(device), cond.text.to(device)
    if guided:
        empty_clip, empty_sync = model.empty_visual(1, clip.shape[1], sync.shape[1])
        negative = cond.negative_text.to(device)
        if negative.shape[1] != text.shape[1]:
            raise ValueError(
                f"prompt and negative prompt states have {text.shape[1]} and {negative.shape[1]} tokens; "
                "tokenize them together (ClapTextEncoder.encode) so that they are padded to one length"
            )
        clip = torch.cat([empty_clip.to(clip.dtype), clip])
        sync = torch.cat([empty_sync.to(sync.dtype), sync])
        text = torch.cat([negative, text])
    with torch.no_grad():
        for i in range(num_steps):
            x = torch.cat([latents, latents]) if guided else latents
            t = schedule.timesteps[i].expand(x.shape[0]).to(device)
            v = model(x, t, clip, text, sync).float()
            if guided:
                uncond, conditional = v.chunk(2)
                v = uncond + guidance_scale * (conditional - uncond)
            latents = euler_step(latents, v, schedule.sigmas[i], schedule.sigmas[i + 1])
            if progress is not None:
                progress(i + 1, num_steps)
    return latents


def load_foley(
    path: str | Path,
    config: FoleyConfig,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> tuple[FoleyDiT, list[str]]:
    """(the MMDiT loaded strictly from `hunyuanvideo_foley.pth` / `hunyuanvideo_foley_xl.pth` or safetensors,
    the training-only REPA keys dropped by name)."""
    from model_core.checkpoints import load_state_dict_into, read_state_dict

    state, dropped = split_training_only(read_state_dict(path, load_key=None))
    with torch.device("meta"):
        model = FoleyDiT(config)
    load_state_dict_into(
        model, state, device=device, dtype=dtype, what=f"Foley {config.description}", presets=[]
    )
    return model.eval(), dropped
