"""Foley sampling: flow matching without shift, Euler, CFG with the learned empty visual features.

Runs through `model_core.sampling`'s shared loop (`euler_loop`): its schedule (sigmas in float32, 1 -> 0), Euler
step (float32 latents), per-unit noise and `StepCheckpoint`s for resume, bit for bit. Defaults are the release's: 50 steps, guidance 4.5, shift 1.0. In the CFG batch the unconditional row comes
first: empty SigLIP2 and Synchformer features (`empty_clip_feat`, `empty_sync_feat`) with the negative prompt's
CLAP states; the conditional row has the real features and the prompt's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from model_core.audio.foley.config import FoleyConfig
from model_core.audio.foley.model import FoleyDiT, split_training_only
from model_core.sampling.checkpoint import StepCheckpoint
from model_core.sampling.noise import initial_noise
from model_core.sampling.sampler import euler_loop
from model_core.sampling.schedule import FlowMatchSchedule

__all__ = ["FoleyConditioning", "foley_settings_digest", "load_foley", "sample_foley"]


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
    checkpoint_every: int | None = None,
    on_checkpoint: Callable[[StepCheckpoint], None] | None = None,
    resume_from: StepCheckpoint | None = None,
) -> Tensor:
    """DAC-VAE latents `[1, latent_dim, L]` (float32) for one clip.

    Every `checkpoint_every` steps `on_checkpoint` gets a `StepCheckpoint`; `resume_from` one of them continues
    to the same final latents, bit for bit (a checkpoint of other settings or another length is refused).
    """
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1 (or None), got {checkpoint_every}")
    device = model.audio_embedder.proj.weight.device
    schedule = FlowMatchSchedule.create(num_steps, shift, reverse=True)
    shape = (1, model.config.latent_dim, cond.length)
    digest = foley_settings_digest(num_steps, guidance_scale, shift, seed)
    rng = torch.Generator(device="cpu").manual_seed(seed)  # kept in checkpoints, as the DiT sampler does
    if resume_from is None:
        latents, start = initial_noise(shape, seed, device=device), 0
    else:
        _check_resume(resume_from, digest, schedule, shape, num_steps)
        latents = resume_from.latents.to(device=device, dtype=torch.float32)
        start = resume_from.step_index
        rng.set_state(resume_from.rng_state)
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

    def velocity(i: int, step_latents: Tensor) -> Tensor:
        x = torch.cat([step_latents, step_latents]) if guided else step_latents
        t = schedule.timesteps[i].expand(x.shape[0]).to(device)
        v = model(x, t, clip, text, sync).float()
        if guided:
            uncond, conditional = v.chunk(2)
            v = uncond + guidance_scale * (conditional - uncond)
        return v

    last = start

    def after(done: int, step_latents: Tensor) -> None:
        nonlocal last
        if progress is not None:
            progress(done, num_steps)
        due = checkpoint_every is not None and done - last >= checkpoint_every
        if due and done < num_steps and on_checkpoint is not None:
            on_checkpoint(
                StepCheckpoint(
                    latents=step_latents.detach().cpu().clone(),
                    step_index=done,
                    schedule=schedule.state(),
                    rng_state=rng.get_state(),
                    options_digest=digest,
                )
            )
            last = done

    with torch.no_grad():
        return euler_loop(velocity, latents, schedule, start=start, after_step=after)


def foley_settings_digest(num_steps: int, guidance_scale: float, shift: float, seed: int) -> str:
    """What a Foley step checkpoint was sampled with (it resumes only a run with the same settings)."""
    settings = {
        "model": "foley",
        "num_steps": num_steps,
        "guidance": guidance_scale,
        "shift": shift,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _check_resume(
    ckpt: StepCheckpoint, digest: str, schedule: FlowMatchSchedule, shape: tuple[int, ...], num_steps: int
) -> None:
    if ckpt.options_digest != digest:
        raise ValueError(
            f"checkpoint was written with other Foley settings (digest {ckpt.options_digest}, now {digest}); "
            "resume with the settings of the interrupted run or start over"
        )
    if ckpt.schedule != schedule.state():
        raise ValueError(f"checkpoint schedule {ckpt.schedule} differs from {schedule.state()}")
    if tuple(ckpt.latents.shape) != shape:
        raise ValueError(f"checkpoint latents are {tuple(ckpt.latents.shape)}, this clip needs {shape}")
    if not 0 <= ckpt.step_index <= num_steps:
        raise ValueError(f"checkpoint step_index {ckpt.step_index} is outside 0..{num_steps}")


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
