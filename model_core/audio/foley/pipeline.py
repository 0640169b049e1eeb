"""One clip's foley: decoded frames and a prompt to 48 kHz mono audio, in three phases.

1. features: SigLIP2 at 8 fps, the Synchformer at 25 fps (fp16 autocast on GPU, as released), CLAP on
   `[negative, prompt]`;
2. sampling: the MMDiT through `sample_foley` (flow matching, Euler, CFG), with step checkpoints and resume;
3. decode: the DAC-VAE decoder, cut to the clip's seconds.

`offload` (`FoleyOffload`) says which networks leave the device between the phases. The pipeline step
(`components.v2a_foley`) and the Foley benchmark (`benchmarks/foley.py`) both run clips through `foley_audio`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from model_core.audio.foley.encoders import (
    DEFAULT_NEGATIVE_PROMPT,
    SIGLIP_FPS,
    SYNC_FPS,
    ClapTextEncoder,
    SiglipImageEncoder,
    latent_length,
    preprocess_siglip,
    preprocess_synchformer,
    sample_frames,
)
from model_core.audio.foley.offload import FoleyOffload, decoder_modules, on_device_while, park
from model_core.audio.foley.release import FoleyModels
from model_core.audio.foley.sampling import FoleyConditioning, sample_foley
from model_core.audio.foley.synchformer import SEGMENT
from model_core.sampling.checkpoint import StepCheckpoint

__all__ = ["FoleyEncoders", "foley_audio", "foley_features"]


@dataclass
class FoleyEncoders:
    """The conditioning encoders registered beside a release: SigLIP2 (with the square size it takes) and CLAP."""

    siglip: SiglipImageEncoder
    image_size: int
    clap: ClapTextEncoder


def foley_features(
    models: FoleyModels,
    encoders: FoleyEncoders,
    frames: Tensor,
    fps: float,
    prompt: str,
    negative: str = DEFAULT_NEGATIVE_PROMPT,
    *,
    device: torch.device | str,
    offload: FoleyOffload = FoleyOffload.ENCODERS,
) -> FoleyConditioning:
    """Phase 1: the conditioning of uint8 frames `[T, H, W, 3]` decoded at `fps`."""
    device = torch.device(device)
    times = [i / fps for i in range(frames.shape[0])]
    siglip_frames = frames[sample_frames(times, SIGLIP_FPS)]
    sync_frames = frames[sample_frames(times, SYNC_FPS)]
    n_sync = sync_frames.shape[0]
    if n_sync == 0:
        raise ValueError("the clip has no frame in its first 15 s at 25 fps; foley needs at least one")
    sync_net = models.synchformer
    with (
        torch.no_grad(),
        on_device_while((encoders.siglip, encoders.clap, sync_net), device, offload=offload.encoders),
    ):
        weight = next(encoders.siglip.parameters())
        pixels = preprocess_siglip(siglip_frames, size=encoders.image_size).to(device, weight.dtype)
        clip = encoders.siglip(pixels)[None].float()
        sync_in = preprocess_synchformer(sync_frames, size=sync_net.config.image_size)
        if n_sync < SEGMENT:
            # Note: the release needs 16 frames (0.64 s); a shorter clip repeats its last frame up to one segment
            sync_in = torch.cat([sync_in, sync_in[-1:].expand(SEGMENT - n_sync, -1, -1, -1)])
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            sync = sync_net.features(sync_in[None].to(device)).float()
        uncond, cond = encoders.clap.encode(prompt, negative)
    return FoleyConditioning(
        clip=clip, sync=sync, text=cond.float(), negative_text=uncond.float(), length=latent_length(n_sync)
    )


def foley_audio(
    models: FoleyModels,
    encoders: FoleyEncoders,
    frames: Tensor,
    fps: float,
    prompt: str,
    negative: str = DEFAULT_NEGATIVE_PROMPT,
    *,
    device: torch.device | str,
    seed: int,
    num_steps: int = 50,
    guidance_scale: float = 4.5,
    offload: FoleyOffload = FoleyOffload.ENCODERS,
    checkpoint_every: int | None = None,
    on_checkpoint: Callable[[StepCheckpoint], None] | None = None,
    resume_from: StepCheckpoint | None = None,
) -> Tensor:
    """The mono 48 kHz audio (float32, CPU) of uint8 frames `[T, H, W, 3]` decoded at `fps`, as long as their
    25 fps frames last (the release's reader stops at 15 s).

    Step checkpoints and resume as in `sample_foley`; a resumed clip gives the same audio bits.
    """
    device = torch.device(device)
    dac = models.dac
    if offload.generator:
        park((models.dit, *decoder_modules(dac)), device)  # until their phase
    cond = foley_features(models, encoders, frames, fps, prompt, negative, device=device, offload=offload)
    with on_device_while((models.dit,), device, offload=offload.generator):
        latents = sample_foley(
            models.dit,
            cond,
            num_steps=num_steps,
            guidance_scale=guidance_scale,
            seed=seed,
            checkpoint_every=checkpoint_every,
            on_checkpoint=on_checkpoint,
            resume_from=resume_from,
        )
    with torch.no_grad(), on_device_while(decoder_modules(dac), device, offload=offload.generator):
        audio = dac.decode(latents.to(device, dac.post_quant_conv.weight.dtype))[0, 0].float()
    n_sync = len(sample_frames([i / fps for i in range(frames.shape[0])], SYNC_FPS))
    samples = round(n_sync / SYNC_FPS * dac.sample_rate)  # the release cuts to the clip's seconds
    return audio[:samples].cpu()
