"""Random conditioning of the right shapes for a DiT config: for tests, benchmarks and the tiny demo."""

from __future__ import annotations

import dataclasses

import torch

from model_core.configs import DiTConfig
from model_core.dit.audio import expected_audio_frames
from model_core.sampling.avatar import AVATAR_WINDOW, avatar_audio_frames
from model_core.sampling.conditioning import BranchInputs, Conditioning


def random_branch(
    config: DiTConfig,
    latent_size: tuple[int, int, int],
    *,
    text_len: int,
    valid_text: int,
    generator: torch.Generator,
    with_identity: bool = True,
) -> BranchInputs:
    """One guidance branch of batch 1 with random states; text tokens past `valid_text` are padding."""
    frames, height, width = latent_size
    c = config.in_channels
    mask = torch.zeros(1, text_len, dtype=torch.int64)
    mask[:, :valid_text] = 1
    ref = None
    if config.identity_image and with_identity:
        ref = torch.randn(1, c, 1, height, width, generator=generator)
    avatar: dict[str, torch.Tensor] = {}
    if config.avatar is not None:
        # the reference over one window's frames, a face box in the middle, the release's motion values
        ref = torch.randn(1, c, min(frames, AVATAR_WINDOW), height, width, generator=generator)
        face = torch.zeros(1, 1, 1, height, width)
        face[..., height // 4 : height - height // 4, width // 4 : width - width // 4] = 1.0
        m = config.avatar.motion_values
        avatar = {
            "face_mask": face,
            "motion_exp": torch.full((1, m), 30.0),
            "motion_pose": torch.full((1, m), 25.0),
            "fps": torch.full((1,), 25.0),
        }
    audio = None
    if config.audio is not None:
        a = config.audio
        n = expected_audio_frames(frames, a.frames_per_latent)
        if config.avatar is not None:
            n = avatar_audio_frames(frames)
        audio = torch.randn(1, n, a.window, a.whisper_layers, a.whisper_dim, generator=generator)
    video = (
        torch.randn(1, 2 * c, frames, height, width, generator=generator) if config.video_condition else None
    )
    return BranchInputs(
        text_states=torch.randn(1, text_len, config.text_states_dim, generator=generator),
        text_mask=mask,
        text_pooled=torch.randn(1, config.text_pooled_dim, generator=generator),
        ref_latents=ref,
        audio_states=audio,
        video_cond=video,
        **avatar,
    )


def random_conditioning(
    config: DiTConfig, latent_size: tuple[int, int, int], *, seed: int = 0, text_len: int = 12
) -> Conditioning:
    """cond, uncond and blank-identity branches for `config` at `latent_size` (T, H, W latents).

    The branches have different valid text lengths, so text padding is exercised. Identity presets get an
    identity image in every branch (the blank one is just another random image here). Avatar presets get the
    same reference and face mask in cond and uncond (as the release), and zero audio in uncond.
    """
    g = torch.Generator().manual_seed(seed)
    cond = random_branch(config, latent_size, text_len=text_len, valid_text=text_len - 3, generator=g)
    uncond = random_branch(config, latent_size, text_len=text_len, valid_text=text_len // 2, generator=g)
    blank = random_branch(config, latent_size, text_len=text_len, valid_text=text_len - 3, generator=g)
    if config.avatar is not None:
        audio = cond.audio_states
        uncond = dataclasses.replace(
            uncond,
            ref_latents=cond.ref_latents,
            face_mask=cond.face_mask,
            audio_states=None if audio is None else torch.zeros_like(audio),
        )
        return Conditioning(latent_size=latent_size, cond=cond, uncond=uncond)
    return Conditioning(latent_size=latent_size, cond=cond, uncond=uncond, cond_blank_identity=blank,
                        audio_strength=0.8)  # fmt: skip
