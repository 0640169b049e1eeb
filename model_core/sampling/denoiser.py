"""One DiT evaluation on this rank (the model's own forward, split over the SP group), DeepCache store and reuse."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass
class _FrameCache:
    """Avatar's DeepCache under the sliding window, per latent frame of the whole video (as the release keeps it):
    the input of the last single block of every frame's tokens, and the identity and text tokens of the window
    that last covered the frame. A cached step's window, which covers other frames than the full step's windows,
    is put together from it. Held whole on every rank (gathered under SP)."""

    ref: Tensor  # [B, T_total, R, C]
    img: Tensor  # [B, T_total, HW, C]
    txt: Tensor  # [B, T_total, L, C]
    template: DiTState  # the layout of a window's state (grid, RoPE, valid lengths, shard)


def _last_rows(state: DiTState, batch: int) -> DiTState:
    """The last `batch` samples of a cached state (the conditional branch is last in the model batch)."""
    if state.img.shape[0] == batch:
        return state
    return dataclasses.replace(
        state,
        img=state.img[-batch:],
        txt=state.txt[-batch:],
        vec=state.vec[-batch:],
        txt_valid_len=state.txt_valid_len[-batch:],
        audio=None if state.audio is None else state.audio[-batch:],
        audio_mask=None if state.audio_mask is None else state.audio_mask[-batch:],
    )


class Denoiser:
    """Velocity of the DiT for a batch of branches, on this rank's share of the sequence.

    Holds the DeepCache state between steps, so use one Denoiser per render unit. With `frames` (Avatar's
    sliding window: the window's latent-frame indices in a video of `total_frames`) the cache is kept per frame.
    A cached step may run fewer samples than its full step (the unconditional branch skipped): it takes the
    cache's last rows.
    """

    def __init__(self, model: HunyuanDiT, sp: SPGroup) -> None:
        if model.config.depth_single < 1:
            raise ValueError("the sampler needs at least one single block (DeepCache reruns the last one)")
        sp.check_heads(model.config.num_heads)
        self.model = model
        self.sp = sp
        self._cache: DiTState | None = None  # this rank's input of the last single block (DeepCache)
        self._frames: _FrameCache | None = None

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
        frames: Sequence[int] | None = None,
        total_frames: int | None = None,
    ) -> Tensor:
        """`x [B, C, T, H, W]` and `t [B]` -> velocity `[B, C, T, H, W]` (the full latents on every rank)."""
        model, sp = self.model, self.sp
        last = model.config.depth_single - 1
        if kind is StepKind.REUSE:
            vec = model.embed_vec(
                t, inputs.text_pooled, guidance, motion_exp=inputs.motion_exp,
                motion_pose=inputs.motion_pose, fps=inputs.fps,
            )  # fmt: skip
            cached = self._cached_state(frames, x.shape[0])
            state = dataclasses.replace(cached, vec=vec)
            return model.final(model.run_single_blocks(state, last, last + 1))

        state = model.embed(
            x, t, inputs.text_states, inputs.text_mask, inputs.text_pooled, guidance=guidance,
            ref_latents=inputs.ref_latents, audio_states=inputs.audio_states, audio_strength=audio_strength,
            video_cond=inputs.video_cond, face_mask=inputs.face_mask, motion_exp=inputs.motion_exp,
            motion_pose=inputs.motion_pose, fps=inputs.fps, sp=sp,
        )  # fmt: skip
        state = model.run_single_blocks(model.run_double_blocks(state), 0, last)
        if frames is None:
            self._cache = state if kind is StepKind.STORE else None
        elif kind is StepKind.STORE:
            if total_frames is None:
                raise ValueError(
                    "a windowed DeepCache store needs total_frames (the whole video's latent frames)"
                )
            self._store_frames(state, frames, total_frames)
        return model.final(model.run_single_blocks(state, last, last + 1))

    def _cached_state(self, frames: Sequence[int] | None, batch: int) -> DiTState:
        if frames is None:
            if self._cache is None:
                raise RuntimeError("a DeepCache reuse step needs a preceding STORE step")
            return _last_rows(self._cache, batch)
        cache = self._frames
        if cache is None:
            raise RuntimeError("a DeepCache reuse step needs a preceding STORE step")
        index = torch.tensor(list(frames), device=cache.img.device)
        b, c = cache.img.shape[0], cache.img.shape[-1]
        # the identity and text tokens of the window that last covered the window's first frame
        img = torch.cat([cache.ref[:, frames[0]], cache.img[:, index].reshape(b, -1, c)], dim=1)
        state = dataclasses.replace(cache.template, img=img, txt=cache.txt[:, frames[0]], shard=None)
        template = cache.template
        if template.shard is not None:
            state = dataclasses.replace(state, img=template.shard.shard(img, dim=1), shard=template.shard)
        return _last_rows(state, batch)

    def _store_frames(self, state: DiTState, frames: Sequence[int], total_frames: int) -> None:
        grid = state.grid
        img = state.img if state.shard is None else state.shard.gather(state.img, state.sp, dim=1)
        img = img[:, : grid.image_tokens]
        batch, _, channels = img.shape
        per_frame = grid.height * grid.width
        cache = self._frames
        shape_ok = cache is not None and cache.img.shape[:3] == (batch, total_frames, per_frame)
        if cache is None or not shape_ok or cache.txt.shape[2] != state.txt.shape[1]:
            new = img.new_zeros
            cache = _FrameCache(
                ref=new(batch, total_frames, grid.ref_tokens, channels),
                img=new(batch, total_frames, per_frame, channels),
                txt=new(batch, total_frames, state.txt.shape[1], channels),
                template=state,
            )
            self._frames = cache
        index = torch.tensor(list(frames), device=img.device)
        cache.img[:, index] = img[:, grid.ref_tokens :].reshape(batch, len(frames), per_frame, channels)
        cache.ref[:, index] = img[:, None, : grid.ref_tokens]
        cache.txt[:, index] = state.txt[:, None]
        cache.template = state
