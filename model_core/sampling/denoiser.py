"""One DiT evaluation on this rank: sequence-parallel split, DeepCache store and reuse, final gather."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

from model_core.dit.transformer import DiTState, HunyuanDiT
from model_core.parallel.dit import final_gathered, run_double_blocks, shard_state, ulysses_attention
from model_core.parallel.group import SPGroup
from model_core.parallel.split import SequenceShard
from model_core.sampling.conditioning import BranchInputs


class StepKind(str, Enum):
    """FULL: the whole model. STORE: the whole model, keeping the input of the last single block.
    REUSE: DeepCache's cached step, only the last single block (new vec) and the final layer."""

    FULL = "full"
    STORE = "store"
    REUSE = "reuse"


@dataclass
class _Cache:
    state: DiTState
    shard: SequenceShard


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
        self._cache: _Cache | None = None

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
        with ulysses_attention(model, sp):
            if kind is StepKind.REUSE:
                if self._cache is None:
                    raise RuntimeError("a DeepCache reuse step needs a preceding STORE step")
                vec = model.embed_vec(t, inputs.text_pooled, guidance)
                state = dataclasses.replace(self._cache.state, vec=vec)
                state = model.run_single_blocks(state, last, last + 1)
                return final_gathered(model, state, self._cache.shard, sp)

            full = model.embed(
                x, t, inputs.text_states, inputs.text_mask, inputs.text_pooled, guidance=guidance,
                ref_latents=inputs.ref_latents, audio_states=inputs.audio_states, audio_strength=audio_strength,
                video_cond=inputs.video_cond,
            )  # fmt: skip
            state, shard = shard_state(full, sp)
            state = run_double_blocks(model, state, shard)
            state = model.run_single_blocks(state, 0, last)
            self._cache = _Cache(state, shard) if kind is StepKind.STORE else None
            state = model.run_single_blocks(state, last, last + 1)
            return final_gathered(model, state, shard, sp)
