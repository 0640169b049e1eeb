"""The DiT forward split over a sequence-parallel group (Ulysses), step by step.

Every rank embeds the full inputs (cheap), then keeps only its shard of the image tokens (identity + video,
padded at the end to a multiple of the degree) and the matching RoPE rows. The blocks run unchanged on the
shard: their joint attention is wrapped by `UlyssesJointAttention`, text stays replicated. Audio
cross-attention is per latent frame, so each rank handles its own tokens frame by frame without a gather.
The final layer runs on the shard and only its small output (patch features) is gathered.

With degree 1 the same code runs without any collective, so one code path serves every world size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from einops import rearrange
from torch import Tensor

from model_core.dit.transformer import DiTState, HunyuanDiT
from model_core.parallel.attention import UlyssesJointAttention
from model_core.parallel.group import SPGroup
from model_core.parallel.split import SequenceShard


@contextmanager
def ulysses_attention(model: HunyuanDiT, sp: SPGroup) -> Iterator[HunyuanDiT]:
    """Within the block, `model.joint_attention` is wrapped for `sp` (restored on exit; no-op at degree 1)."""
    if not sp.enabled:
        yield model
        return
    sp.check_heads(model.config.num_heads)
    inner = model.joint_attention
    model.joint_attention = UlyssesJointAttention(inner, sp)
    try:
        yield model
    finally:
        model.joint_attention = inner


def shard_state(state: DiTState, sp: SPGroup) -> tuple[DiTState, SequenceShard]:
    """This rank's part of a full `DiTState`: its image tokens, positions and RoPE rows; the rest as is.

    `img_valid_len` becomes the valid length of the full image sequence, so attention masks the split padding.
    """
    shard = SequenceShard.for_group(state.img.shape[1], sp)
    if not sp.enabled:
        return state, shard
    local = dataclasses.replace(
        state,
        img=shard.shard(state.img, dim=1),
        positions=shard.shard(state.positions, dim=0),
        rope_cos=shard.shard(state.rope_cos, dim=0),
        rope_sin=shard.shard(state.rope_sin, dim=0),
        img_valid_len=shard.total_len if shard.padded_len != shard.total_len else None,
    )
    return local, shard


def add_audio_local(model: HunyuanDiT, state: DiTState, shard: SequenceShard, k: int) -> Tensor:
    """`audio_models[k]` on this rank's video tokens, one latent frame at a time; identity and padding untouched.

    Exact: the cross-attention of a video token depends only on that token and its frame's audio tokens.
    """
    grid, audio = state.grid, state.audio
    assert audio is not None
    img = state.img
    per_frame = grid.height * grid.width
    lo = max(shard.start, grid.ref_tokens)
    hi = min(shard.stop, grid.image_tokens)
    if lo >= hi:
        return img
    parts = [img[:, : lo - shard.start]]
    pos = lo
    while pos < hi:
        frame = (pos - grid.ref_tokens) // per_frame
        end = min(hi, grid.ref_tokens + (frame + 1) * per_frame)
        tokens = img[:, pos - shard.start : end - shard.start]  # [B, n, C], all in latent frame `frame`
        delta = model.audio_models[k](audio[:, frame], tokens)
        parts.append(tokens + delta * state.audio_strength)
        pos = end
    parts.append(img[:, hi - shard.start :])
    return torch.cat(parts, dim=1)


def run_double_blocks(model: HunyuanDiT, state: DiTState, shard: SequenceShard) -> DiTState:
    """All double blocks on the shard, the audio cross-attention after the listed ones."""
    audio_cfg = model.config.audio
    insert_after = audio_cfg.insert_after if (audio_cfg is not None and state.audio is not None) else ()
    blocks_state = dataclasses.replace(state, audio=None)  # audio is added here, shard-aware
    for index in range(model.config.depth_double):
        blocks_state = model.run_double_blocks(blocks_state, index, index + 1)
        if index in insert_after:
            img = add_audio_local(model, dataclasses.replace(blocks_state, audio=state.audio), shard,
                                  insert_after.index(index))  # fmt: skip
            blocks_state = dataclasses.replace(blocks_state, img=img)
    return dataclasses.replace(blocks_state, audio=state.audio)


def final_gathered(model: HunyuanDiT, state: DiTState, shard: SequenceShard, sp: SPGroup) -> Tensor:
    """Final layer on the shard, gather its patch features, drop identity tokens, unpatchify: [B, C, T, H, W]."""
    grid = state.grid
    out = model.final_layer(state.img, state.vec)  # [B, L_local, pt*ph*pw*C]
    out = shard.gather(out, sp, dim=1)[:, grid.ref_tokens : grid.image_tokens]
    pt, ph, pw = model.config.patch_size
    # the channel is the outer index of each token's features, as in HunyuanDiT.final
    return rearrange(
        out,
        "B (T H W) (C pt ph pw) -> B C (T pt) (H ph) (W pw)",
        T=grid.frames, H=grid.height, W=grid.width, pt=pt, ph=ph, pw=pw,
    )  # fmt: skip
