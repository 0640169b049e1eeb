"""One DiT evaluation on this rank (the model's own forward, split over the SP group), DeepCache store and reuse."""

from __future__ import annotations

import dataclasses
from enum import Enum

import torch
from torch import Tensor

from model_core.dit.transformer import DiTState, HunyuanDiT
from model_core.parallel.group import SPGroup
from model_core.sampling.conditioning import BranchInputs


class StepKind(str, Enum):
    """FULL: the whole model. STORE: the whole model, keeping the input of the last single block.
    REUSE: DeepCache's cached step, only the last single block (new vec) and the final layer."""

    FULL = "full"
    STORE = "store"
    REUSE = "reuse"


class Denoiser:
    """Velocity of the DiT for a batch of branches, on this rank's share of the sequence.

    Holds the DeepCache state between steps, so use one Denoiser per render unit.
    """

    def __init__(self, model: HunyuanDiT, sp: SPGroup) -> None:
        if model.config.depth_single < 1:
            raise ValueError("the sampler needs at least one single block (DeepCache reruns the last one)")
        sp.check_heads(model.config.num_heads)
        self.model = model
        self.sp = sp
        self._cache: DiTState | None = None  # this rank's input of the last single block (DeepCache)

    @torch.no_grad()
    def __call__(
        self,
        x: Tensor,
        t: Tensor,
        inputs: BranchInputs,
        *,
        guidance: Tensor | None = None,
        audio_strength: float = 1.0,
        kind: StepKind = StepKind.FULL,
    ) -> Tensor:
        """`x [B, C, T, H, W]` and `t [B]` -> velocity `[B, C, T, H, W]` (the full latents on every rank)."""
        model, sp = self.model, self.sp
        last = model.config.depth_single - 1
        if kind is StepKind.REUSE:
            if self._cache is None:
                raise RuntimeError("a DeepCache reuse step needs a preceding STORE step")
            vec = model.embed_vec(t, inputs.text_pooled, guidance)
            state = dataclasses.replace(self._cache, vec=vec)
            return model.final(model.run_single_blocks(state, last, last + 1))

        state = model.embed(
            x, t, inputs.text_states, inputs.text_mask, inputs.text_pooled, guidance=guidance,
            ref_latents=inputs.ref_latents, audio_states=inputs.audio_states, audio_strength=audio_strength,
            video_cond=inputs.video_cond, sp=sp,
        )  # fmt: skip
        state = model.run_single_blocks(model.run_double_blocks(state), 0, last)
        self._cache = state if kind is StepKind.STORE else None
        return model.final(model.run_single_blocks(state, last, last + 1))
