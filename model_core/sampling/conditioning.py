"""What the sampler feeds the DiT: per guidance branch, the text, identity, audio and video conditions."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from model_core.sampling.options import SamplingOptions


@dataclass(frozen=True)
class BranchInputs:
    """The model inputs of one guidance branch (see `HunyuanDiT.forward` for shapes); batch first everywhere.

    Avatar: `ref_latents` is the reference image over one window's frames, `audio_states` the Whisper features of
    the whole (padded) voice (`model_core.sampling.avatar` cuts each window's part), and the face mask, motion
    and fps inputs are set.
    """

    text_states: Tensor
    text_mask: Tensor
    text_pooled: Tensor
    ref_latents: Tensor | None = None
    audio_states: Tensor | None = None
    video_cond: Tensor | None = None
    face_mask: Tensor | None = None
    motion_exp: Tensor | None = None
    motion_pose: Tensor | None = None
    fps: Tensor | None = None

    @property
    def batch(self) -> int:
        """Samples in this branch (the first dimension of every tensor)."""
        return int(self.text_states.shape[0])

    def to(self, device: torch.device | str) -> BranchInputs:
        """A copy with every tensor on `device`."""
        moved = {
            f.name: (v.to(device) if isinstance(v := getattr(self, f.name), Tensor) else v)
            for f in fields(self)
        }
        return BranchInputs(**moved)

    @staticmethod
    def concat(branches: list[BranchInputs]) -> BranchInputs:
        """The branches stacked along the batch (the release's [uncond, cond] batch)."""
        out: dict[str, Tensor | None] = {}
        for f in fields(BranchInputs):
            values = [getattr(b, f.name) for b in branches]
            present = [v is not None for v in values]
            if any(present) and not all(present):
                raise ValueError(
                    f"{f.name} is set in some guidance branches but not in others; set it in all or none"
                )
            if not any(present):
                out[f.name] = None
                continue
            shapes = {tuple(v.shape[1:]) for v in values}
            if len(shapes) > 1:
                raise ValueError(
                    f"{f.name} has different shapes across guidance branches {sorted(shapes)}; "
                    "pad the branches to the same length (e.g. text to the same token count)"
                )
            out[f.name] = torch.cat(values, dim=0)
        return BranchInputs(**out)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Conditioning:
    """Everything one render unit is conditioned on.

    latent_size: (T, H, W) of the latents (video frames (F-1)/4+1, height/8, width/8).
    cond: positive prompt (LLaVA states of the prompt with the real identity image) and the real identity latents.
    uncond: negative prompt, needed when cfg_scale > 1. As the release builds it: LLaVA states of the negative
        prompt with a white image, zero audio, and, for plain CFG, the *real* identity latents (the release
        repeats `ref_latents` for both halves); with identity guidance, the VAE latents of a white image instead.
    Avatar (`options.avatar`): `uncond` is the first phase's negative branch (negative prompt, zero audio, the same
        reference); the second phase's is built from `cond` (`model_core.sampling.avatar.avatar_branches`).
    cond_blank_identity: needed for identity guidance (ip_cfg_scale > 0): the positive prompt's LLaVA states
        with the *real* image (the same text states as `cond`) and the VAE latents of a white identity image.
        Only the identity latents differ from `cond`, so the guidance term isolates the identity.
    audio_strength: scale of the audio cross-attention (the release's examples use 0.8).
    """

    latent_size: tuple[int, int, int]
    cond: BranchInputs
    uncond: BranchInputs | None = None
    cond_blank_identity: BranchInputs | None = None
    audio_strength: float = 1.0

    def branches(self, options: SamplingOptions) -> list[BranchInputs]:
        """The branches in model-batch order: [cond], [uncond, cond] or [uncond, blank-identity cond, cond]."""
        if not options.uses_cfg:
            return [self.cond]
        if self.uncond is None:
            raise ValueError(
                f"cfg_scale {options.cfg_scale} > 1 needs Conditioning.uncond (the negative prompt)"
            )
        if not options.uses_identity_cfg:
            return [self.uncond, self.cond]
        if self.cond_blank_identity is None:
            raise ValueError(
                f"ip_cfg_scale {options.ip_cfg_scale} > 0 needs Conditioning.cond_blank_identity "
                "(the positive prompt with the blank identity image)"
            )
        return [self.uncond, self.cond_blank_identity, self.cond]
