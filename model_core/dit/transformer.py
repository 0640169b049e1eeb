"""`HunyuanDiT`: the HunyuanVideo / HunyuanCustom MM-DiT, assembled from its blocks.

The forward is four steps that sampling can call one by one:

1. `embed(...) -> DiTState`: vec, image tokens (identity tokens first), refined text tokens, RoPE per image token.
2. `run_double_blocks(state)`: the double-stream blocks, with the audio cross-attention after the listed ones.
3. `run_single_blocks(state, start, stop)`: any sub-range of the single-stream blocks (DeepCache reruns only the
   last one from a cached input).
4. `final(state)`: drop the identity tokens, final layer, unpatchify.

All attention goes through `self.joint_attention` (see `model_core.dit.attention`); replace it to change the
kernel. Sequence parallelism is a forward argument, not a patch: `embed(..., sp=group)` keeps this rank's shard
of the image tokens (identity + video, padded at the end to a multiple of the degree) with its RoPE rows, the
blocks wrap the joint attention in Ulysses all-to-alls for that group, the audio cross-attention runs on the
shard frame by frame (it is per latent frame, so no gather), and `final` gathers only the final layer's patch
features. With no group (or degree 1) the same code runs without a collective.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from model_core.configs import DiTConfig
from model_core.dit.attention import (
    AttentionBackend,
    AttentionBackendUnavailable,
    JointAttention,
    SdpaJointAttention,
    check_backend_available,
    make_joint_attention,
)
from model_core.dit.audio import (
    AudioCrossAttention,
    AudioProjNet,
    align_audio_to_latent_frames,
    expected_audio_frames,
)
from model_core.dit.blocks import DoubleStreamBlock, FinalLayer, SingleStreamBlock
from model_core.dit.layers import MLPEmbedder, PatchEmbed, TimestepEmbedder
from model_core.dit.refiner import SingleTokenRefiner
from model_core.dit.rope import rope_cos_sin, token_positions
from model_core.parallel.group import SPGroup
from model_core.parallel.split import SequenceShard

__all__ = [
    "AUTO_ATTENTION",
    "DiTState",
    "HunyuanDiT",
    "TokenGrid",
    "auto_attention_backend",
    "face_mask_tokens",
]

# `set_attention_backend(AUTO_ATTENTION, device)`: flash-attn varlen where it can run, else torch SDPA.
AUTO_ATTENTION = "auto"


@dataclass(frozen=True)
class TokenGrid:
    """The image-token layout: `num_refs` identity images of `height x width` tokens, then the video grid."""

    frames: int
    height: int
    width: int
    num_refs: int = 0

    @property
    def ref_tokens(self) -> int:
        """Identity-image tokens (first in the sequence)."""
        return self.num_refs * self.height * self.width

    @property
    def video_tokens(self) -> int:
        """Video tokens: frames x height x width."""
        return self.frames * self.height * self.width

    @property
    def image_tokens(self) -> int:
        """All image tokens: identity then video."""
        return self.ref_tokens + self.video_tokens


_NO_SP = SPGroup.single()


@dataclass(frozen=True)
class DiTState:
    """Everything the blocks need between steps. Replace fields with `dataclasses.replace`.

    img: `[B, N_img, C]` image tokens, identity tokens first. txt: `[B, L, C]` text tokens. vec: `[B, C]`.
    positions: `[N_img, 3]` int64 (t, h, w) per image token; rope_cos / rope_sin: `[N_img, head_dim]` float32.
    txt_valid_len: valid leading text tokens per sample. audio: `[B, T, A, C]` per-latent-frame audio tokens.
    img_valid_len: valid leading image tokens when the image part was padded (sequence parallelism), else None.
    sp / shard: the sequence-parallel group and this rank's place in the image tokens; `shard` is None when the
    state holds the whole sequence. Under SP, img, positions, rope_cos / rope_sin and audio_mask hold the shard.
    audio_mask: `[B, N_img, 1]` factor on the audio cross-attention output per image token (Avatar's face mask),
    or None for 1.
    """

    img: Tensor
    txt: Tensor
    vec: Tensor
    positions: Tensor
    rope_cos: Tensor
    rope_sin: Tensor
    txt_valid_len: tuple[int, ...]
    grid: TokenGrid
    audio: Tensor | None = None
    audio_strength: float = 1.0
    img_valid_len: int | None = None
    sp: SPGroup = _NO_SP
    shard: SequenceShard | None = None
    audio_mask: Tensor | None = None


def auto_attention_backend(device: torch.device | str, dtype: torch.dtype) -> AttentionBackend:
    """flash-attn's varlen kernel when it is installed and can run (CUDA, fp16/bf16), else torch SDPA."""
    if dtype in (torch.float16, torch.bfloat16):
        try:
            return check_backend_available(AttentionBackend.FLASH_VARLEN, device)
        except AttentionBackendUnavailable:
            pass
    return AttentionBackend.SDPA


def face_mask_tokens(face_mask: Tensor, grid: TokenGrid) -> Tensor:
    """`[B, 1, T', H', W']` face mask -> `[B, N_img, 1]` per image token: nearest-resized to the video token grid,
    zero for the identity tokens (the release's `models_audio.py` resizes the mask the same way)."""
    resized = F.interpolate(face_mask.float(), size=(grid.frames, grid.height, grid.width), mode="nearest")
    video = resized.flatten(2).transpose(1, 2)  # [B, T*H*W, 1]
    refs = video.new_zeros(video.shape[0], grid.ref_tokens, 1)
    return torch.cat([refs, video], dim=1)


def _shape_error(name: str, expected: str, got: Tensor | None, fix: str = "") -> ValueError:
    shape = None if got is None else tuple(got.shape)
    return ValueError(f"{name} must be {expected}, got {shape}" + (f"; {fix}" if fix else ""))


class HunyuanDiT(nn.Module):
    """The MM-DiT of HunyuanVideo (T2V), HunyuanCustom (identity image, audio, editing) and HunyuanVideo-Avatar.

    Parameter names match the released checkpoints, so `load_state_dict(strict=True)` takes their state dicts.

    Args:
        config: a `DiTConfig` (e.g. `PRESETS["hunyuancustom-720p"]`).
        attention: the joint attention; default torch SDPA. See `set_attention_backend`.
    """

    def __init__(self, config: DiTConfig, *, attention: JointAttention | None = None) -> None:
        super().__init__()
        self.config = config
        self.joint_attention: JointAttention = attention if attention is not None else SdpaJointAttention()
        hidden, heads, mlp_hidden = config.hidden_size, config.num_heads, config.mlp_hidden
        self.img_in = PatchEmbed(config.patch_size, config.in_channels, hidden)
        if config.avatar is not None:
            self.ref_in = PatchEmbed(config.patch_size, config.in_channels, hidden)
        self.txt_in = SingleTokenRefiner(
            config.text_states_dim, hidden, heads, mlp_hidden, config.refiner_depth
        )
        self.time_in = TimestepEmbedder(hidden)
        self.vector_in = MLPEmbedder(config.text_pooled_dim, hidden)
        self.guidance_in = TimestepEmbedder(hidden) if config.guidance_embed else None
        if config.video_condition:
            self.bg_in = PatchEmbed(config.patch_size, 2 * config.in_channels, hidden)
            self.bg_proj = nn.Linear(hidden, hidden)
        if config.audio is not None and config.avatar is None:
            a = config.audio
            self.audio_proj = AudioProjNet(
                a.in_features, a.proj_hidden, a.tokens_per_frame, hidden, a.norm_eps
            )
            self.audio_models = nn.ModuleList(
                AudioCrossAttention(hidden, a.cross_dim, a.norm_eps) for _ in a.insert_after
            )
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(hidden, heads, mlp_hidden) for _ in range(config.depth_double)
        )
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(hidden, heads, mlp_hidden) for _ in range(config.depth_single)
        )
        out_features = (
            config.patch_size[0] * config.patch_size[1] * config.patch_size[2] * config.out_channels
        )
        self.final_layer = FinalLayer(hidden, out_features)
        if config.avatar is not None:
            # registered last, in the release's order, so the state dict lists its keys as the checkpoint does
            avatar_audio = config.audio
            assert avatar_audio is not None  # DiTConfig checks it
            self.audio_proj = AudioProjNet(
                avatar_audio.in_features,
                avatar_audio.proj_hidden,
                avatar_audio.tokens_per_frame,
                hidden,
                avatar_audio.norm_eps,
            )
            motion_dim = hidden // config.avatar.motion_values
            self.motion_exp = TimestepEmbedder(motion_dim)
            self.motion_pose = TimestepEmbedder(motion_dim)
            self.fps_proj = TimestepEmbedder(hidden)
            self.before_proj = nn.Linear(hidden, hidden)
            adapters = [
                AudioCrossAttention(hidden, avatar_audio.cross_dim, avatar_audio.norm_eps)
                for _ in avatar_audio.insert_after
            ]
            for adapter in adapters:
                nn.init.zeros_(adapter.to_out.weight)  # the release starts the adapters at zero
            self.audio_adapter_blocks = nn.ModuleList(adapters)

    def set_attention_backend(self, backend: AttentionBackend | str, device: torch.device | str) -> None:
        """Use `backend` for every block; raises `AttentionBackendUnavailable` (naming the fix) if it cannot run.

        `"auto"` (`AUTO_ATTENTION`) picks flash-attn's varlen kernel when it is installed and `device` is CUDA
        with fp16/bf16 weights, and torch SDPA otherwise (`auto_attention_backend`).
        """
        if backend == AUTO_ATTENTION:
            backend = auto_attention_backend(device, self._dtype)
        self.joint_attention = make_joint_attention(backend, device)

    def compile_blocks(self, **options: Any) -> None:
        """Regional compilation: `torch.compile` every double and single block in place (`nn.Module.compile`).

        The blocks of one kind share their code, so the compiler traces one graph per kind, whatever the depth:
        compile time is that of two blocks, not of the 60-block model. Module names and the state dict do not
        change (checkpoints load as before). `options` go to `torch.compile`, e.g. `mode="max-autotune"`, or
        `backend="eager"` to trace without generating kernels.
        """
        for block in [*self.double_blocks, *self.single_blocks]:
            block.compile(**options)

    # 1. embed ----------------------------------------------------------------------------------------------
    def embed_vec(
        self,
        t: Tensor,
        text_pooled: Tensor,
        guidance: Tensor | None = None,
        *,
        motion_exp: Tensor | None = None,
        motion_pose: Tensor | None = None,
        fps: Tensor | None = None,
    ) -> Tensor:
        """vec `[B, C]` = time_in(t) + vector_in(pooled) (+ guidance_in(guidance)); guidance already times 1000.

        Avatar: time_in(t) + motion_exp + motion_pose + fps_proj(fps) + vector_in(pooled), in the release's order.
        """
        avatar = (motion_exp, motion_pose, fps)
        if self.config.avatar is not None:
            if any(v is None for v in avatar):
                raise ValueError(
                    "an Avatar preset needs motion_exp [B, m], motion_pose [B, m] and fps [B] "
                    "(the release infers with expression 30, head pose 25 and the video's fps)"
                )
            assert motion_exp is not None and motion_pose is not None and fps is not None
            vec = self.time_in(t)
            vec = vec + self._motion(self.motion_exp, motion_exp, "motion_exp")
            vec = vec + self._motion(self.motion_pose, motion_pose, "motion_pose")
            vec = vec + self.fps_proj(fps)
            return vec + self.vector_in(text_pooled.to(self._dtype))
        if any(v is not None for v in avatar):
            raise ValueError("motion_exp, motion_pose and fps are Avatar inputs: this preset takes none")
        vec = self.time_in(t) + self.vector_in(text_pooled.to(self._dtype))
        if self.guidance_in is not None:
            if guidance is None:
                raise ValueError(
                    "this preset has guidance_in: pass guidance [B] (the embedded scale times 1000)"
                )
            vec = vec + self.guidance_in(guidance)
        elif guidance is not None:
            raise ValueError("this preset has no guidance_in (no embedded guidance): pass guidance=None")
        return vec

    def _motion(self, embedder: nn.Module, values: Tensor, name: str) -> Tensor:
        """`[B, m]` motion values, each through the sinusoid embedder (`[B*m, C/m]`), concatenated to `[B, C]`."""
        assert self.config.avatar is not None
        m = self.config.avatar.motion_values
        if values.ndim != 2 or values.shape[1] != m:
            raise _shape_error(name, f"[B, {m}] motion values", values)
        return embedder(values.flatten()).reshape(values.shape[0], -1)

    def embed(
        self,
        x: Tensor,
        t: Tensor,
        text_states: Tensor,
        text_mask: Tensor,
        text_pooled: Tensor,
        *,
        guidance: Tensor | None = None,
        ref_latents: Tensor | None = None,
        audio_states: Tensor | None = None,
        audio_strength: float = 1.0,
        video_cond: Tensor | None = None,
        face_mask: Tensor | None = None,
        motion_exp: Tensor | None = None,
        motion_pose: Tensor | None = None,
        fps: Tensor | None = None,
        sp: SPGroup | None = None,
    ) -> DiTState:
        """Step 1 of `forward`: check the inputs and build the `DiTState` (arguments as in `forward`).

        With a sequence-parallel `sp`, every rank embeds the full inputs (cheap) and keeps its shard.
        """
        grid = self._check_inputs(
            x,
            t,
            text_states,
            text_mask,
            text_pooled,
            guidance,
            ref_latents,
            audio_states,
            video_cond,
            face_mask,
        )
        dtype = self._dtype
        vec = self.embed_vec(
            t, text_pooled, guidance, motion_exp=motion_exp, motion_pose=motion_pose, fps=fps
        )

        # image tokens; the video condition goes to video tokens only, never to identity tokens
        img = self.img_in(x.to(dtype))
        if video_cond is not None:
            img = img + self.bg_proj(self.bg_in(video_cond.to(dtype)))
        if self.config.avatar is not None:
            # Avatar: the reference latents (the image repeated over the frames) are added to every video token,
            # and the tokens of their first frame are prepended as identity tokens
            assert ref_latents is not None
            ref = ref_latents.to(dtype)
            img = img + self.before_proj(self.ref_in(ref))
            img = torch.cat([self.img_in(ref[:, :, : self.config.patch_size[0]]), img], dim=1)
        elif ref_latents is not None:
            img = torch.cat([self.img_in(ref_latents.to(dtype)), img], dim=1)

        txt = self.txt_in(text_states.to(dtype), t, text_mask)
        txt_valid_len = tuple(int(n) for n in text_mask.sum(dim=1).tolist())

        positions = token_positions(
            grid.frames,
            grid.height,
            grid.width,
            num_refs=grid.num_refs,
            ref_w_shift=self.config.avatar is None,  # Avatar's 'timecat': t = -1, w unshifted
            device=x.device,
        )
        rope_cos, rope_sin = rope_cos_sin(positions, self.config.rope_axes_dim, self.config.rope_theta)

        audio = None
        if audio_states is not None:
            assert self.config.audio is not None
            tokens = self.audio_proj(audio_states.to(dtype))  # [B, F, m, C]
            audio = align_audio_to_latent_frames(tokens, grid.frames, self.config.audio.frames_per_latent)
        audio_mask = None
        if face_mask is not None:
            audio_mask = face_mask_tokens(face_mask, grid).to(dtype)
        state = DiTState(
            img, txt, vec, positions, rope_cos, rope_sin, txt_valid_len, grid, audio, audio_strength,
            audio_mask=audio_mask,
        )  # fmt: skip
        return self.split(state, sp)

    def split(self, state: DiTState, sp: SPGroup | None) -> DiTState:
        """This rank's part of a whole-sequence state: its image tokens, positions, RoPE rows and audio mask.

        `img_valid_len` becomes the valid length of the full image sequence, so attention masks the split padding.
        No group, or degree 1: the state as is.
        """
        if sp is None or not sp.enabled:
            return state
        if state.shard is not None:
            raise ValueError("the state is already split over a sequence-parallel group")
        sp.check_heads(self.config.num_heads)
        shard = SequenceShard.for_group(state.img.shape[1], sp)
        mask = state.audio_mask
        return dataclasses.replace(
            state,
            img=shard.shard(state.img, dim=1),
            positions=shard.shard(state.positions, dim=0),
            rope_cos=shard.shard(state.rope_cos, dim=0),
            rope_sin=shard.shard(state.rope_sin, dim=0),
            audio_mask=None if mask is None else shard.shard(mask, dim=1),
            img_valid_len=shard.total_len if shard.padded_len != shard.total_len else None,
            sp=sp,
            shard=shard,
        )

    def attention_for(self, state: DiTState) -> JointAttention:
        """The joint attention of the blocks: `self.joint_attention`, inside Ulysses all-to-alls under SP."""
        if not state.sp.enabled:
            return self.joint_attention
        # imported here: model_core.parallel.attention builds on this package's attention contract
        from model_core.parallel.attention import UlyssesJointAttention

        return UlyssesJointAttention(self.joint_attention, state.sp)

    # 2. double blocks --------------------------------------------------------------------------------------
    def run_double_blocks(self, state: DiTState, start: int = 0, stop: int | None = None) -> DiTState:
        """Double blocks `start..stop-1`, each followed by its audio cross-attention where the config lists one."""
        img, txt = state.img, state.txt
        insert_after = self.config.audio.insert_after if self.config.audio is not None else ()
        attention = self.attention_for(state)
        for index in range(start, len(self.double_blocks) if stop is None else stop):
            img, txt = self.double_blocks[index](
                img,
                txt,
                state.vec,
                state.rope_cos,
                state.rope_sin,
                attention,
                state.txt_valid_len,
                state.img_valid_len,
            )
            if state.audio is not None and index in insert_after:
                img = self._add_audio(img, state, insert_after.index(index))
        return dataclasses.replace(state, img=img, txt=txt)

    @property
    def audio_adapters(self) -> nn.ModuleList:
        """The per-frame audio cross-attentions: `audio_models` (HunyuanCustom) or `audio_adapter_blocks` (Avatar)."""
        name = "audio_adapter_blocks" if self.config.avatar is not None else "audio_models"
        return cast(nn.ModuleList, getattr(self, name))

    def _add_audio(self, img: Tensor, state: DiTState, k: int) -> Tensor:
        """`img` plus the k-th audio cross-attention of its video tokens (this rank's shard under SP).

        The cross-attention of a video token depends only on that token and its latent frame's audio tokens, so
        whole frames of the shard run as one batch and a frame cut by a shard boundary runs in its part.
        Identity and padding tokens are unchanged; the output is scaled by `audio_strength` and `audio_mask`.
        """
        grid, audio = state.grid, state.audio
        assert audio is not None
        adapter = self.audio_adapters[k]
        start = state.shard.start if state.shard is not None else 0
        per_frame = grid.height * grid.width
        lo = max(start, grid.ref_tokens)
        hi = min(start + img.shape[1], grid.image_tokens)
        if lo >= hi:
            return img
        batch = img.shape[0]
        parts = [img[:, : lo - start]]
        pos = lo
        while pos < hi:
            frame, offset = divmod(pos - grid.ref_tokens, per_frame)
            whole = (hi - pos) // per_frame if offset == 0 else 0
            if whole:  # whole latent frames: [B, n*HW, C] -> [B*n, HW, C]
                end = pos + whole * per_frame
                tokens = img[:, pos - start : end - start]
                delta = adapter(
                    audio[:, frame : frame + whole].flatten(0, 1),
                    tokens.reshape(batch * whole, per_frame, -1),
                ).reshape(batch, whole * per_frame, -1)
            else:  # part of one frame, cut by a shard boundary
                end = min(hi, grid.ref_tokens + (frame + 1) * per_frame)
                tokens = img[:, pos - start : end - start]
                delta = adapter(audio[:, frame], tokens)
            if state.audio_mask is not None:
                delta = delta * state.audio_mask[:, pos - start : end - start]
            parts.append(tokens + delta * state.audio_strength)
            pos = end
        parts.append(img[:, hi - start :])
        return torch.cat(parts, dim=1)

    # 3. single blocks --------------------------------------------------------------------------------------
    def run_single_blocks(self, state: DiTState, start: int = 0, stop: int | None = None) -> DiTState:
        """Single blocks `start..stop-1` over the joint sequence; the returned state holds their output."""
        num_img = state.img.shape[1]
        x = torch.cat([state.img, state.txt], dim=1)
        attention = self.attention_for(state)
        for index in range(start, len(self.single_blocks) if stop is None else stop):
            x = self.single_blocks[index](
                x,
                state.vec,
                num_img,
                state.rope_cos,
                state.rope_sin,
                attention,
                state.txt_valid_len,
                state.img_valid_len,
            )
        return dataclasses.replace(state, img=x[:, :num_img], txt=x[:, num_img:])

    # 4. final layer ----------------------------------------------------------------------------------------
    def final(self, state: DiTState) -> Tensor:
        """Drop identity tokens, apply the final layer and unpatchify to `[B, out_channels, T, H, W]`.

        Under SP the final layer runs on this rank's shard and only its patch features are gathered: every rank
        returns the whole output.
        """
        grid = state.grid
        if state.shard is None:
            if state.img.shape[1] < grid.image_tokens:
                raise ValueError(
                    f"the state holds {state.img.shape[1]} image tokens; its grid {grid} needs {grid.image_tokens}"
                )
            out = self.final_layer(state.img[:, grid.ref_tokens : grid.image_tokens], state.vec)
        else:
            out = self.final_layer(state.img, state.vec)  # [B, L_local, pt*ph*pw*C]
            out = state.shard.gather(out, state.sp, dim=1)[:, grid.ref_tokens : grid.image_tokens]
        pt, ph, pw = self.config.patch_size
        # the channel is the outer index of each token's features: c*pt*ph*pw + ...
        return rearrange(
            out,
            "B (T H W) (C pt ph pw) -> B C (T pt) (H ph) (W pw)",
            T=grid.frames,
            H=grid.height,
            W=grid.width,
            pt=pt,
            ph=ph,
            pw=pw,
        )

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        text_states: Tensor,
        text_mask: Tensor,
        text_pooled: Tensor,
        *,
        guidance: Tensor | None = None,
        ref_latents: Tensor | None = None,
        audio_states: Tensor | None = None,
        audio_strength: float = 1.0,
        video_cond: Tensor | None = None,
        face_mask: Tensor | None = None,
        motion_exp: Tensor | None = None,
        motion_pose: Tensor | None = None,
        fps: Tensor | None = None,
        sp: SPGroup | None = None,
    ) -> Tensor:
        """Predict the flow-matching velocity.

        Args:
            x: `[B, in_channels, T, H, W]` noisy latents; H and W divisible by the patch (2).
            t: `[B]` float timesteps in [0, 1000].
            text_states: `[B, L, text_states_dim]` LLaVA hidden states; text_mask: `[B, L]` (1 = real token,
                real tokens first; the attention uses only the count, the refiner the positions).
            text_pooled: `[B, text_pooled_dim]` CLIP-L pooled output.
            guidance: `[B]` embedded guidance already multiplied by 1000; required iff the preset has guidance_in.
            ref_latents: `[B, in_channels, K, H, W]` latents of K identity images (HunyuanCustom); subject k sits
                at RoPE t = -k, w shifted by the token width. Avatar: `[B, in_channels, T, H, W]` like x, the
                reference image repeated over the video and VAE-encoded; required.
            audio_states: `[B, F, window, layers, dim]` Whisper features per video frame, F = (T-1)*4+1
                (audio presets); None skips the audio branch.
            audio_strength: scale of the audio cross-attention output (0 disables it).
            video_cond: `[B, 2*in_channels, T, H, W]` masked-video and mask latents (editing preset).
            face_mask: Avatar: `[B, 1, T', H', W']` face mask (any size: pixels or latents), nearest-resized to
                the token grid; it multiplies the audio adapters' output. None: the whole frame.
            motion_exp, motion_pose: Avatar: `[B, 4]` expression and head-pose motion values (release: 30, 25).
            fps: Avatar: `[B]` frames per second of the video (release: 25).
            sp: a sequence-parallel group: every rank of it passes the same inputs, holds its shard of the image
                tokens through the blocks, and gets the whole output. None: one process.

        Returns:
            `[B, out_channels, T, H, W]`: identity tokens are dropped.
        """
        state = self.embed(
            x,
            t,
            text_states,
            text_mask,
            text_pooled,
            guidance=guidance,
            ref_latents=ref_latents,
            audio_states=audio_states,
            audio_strength=audio_strength,
            video_cond=video_cond,
            face_mask=face_mask,
            motion_exp=motion_exp,
            motion_pose=motion_pose,
            fps=fps,
            sp=sp,
        )
        state = self.run_double_blocks(state)
        state = self.run_single_blocks(state)
        return self.final(state)

    # input checks ------------------------------------------------------------------------------------------
    @property
    def _dtype(self) -> torch.dtype:
        return self.img_in.proj.weight.dtype

    def _check_inputs(
        self,
        x: Tensor,
        t: Tensor,
        text_states: Tensor,
        text_mask: Tensor,
        text_pooled: Tensor,
        guidance: Tensor | None,
        ref_latents: Tensor | None,
        audio_states: Tensor | None,
        video_cond: Tensor | None,
        face_mask: Tensor | None = None,
    ) -> TokenGrid:
        cfg = self.config
        pt, ph, pw = cfg.patch_size
        c = cfg.in_channels
        if x.ndim != 5 or x.shape[1] != c:
            raise _shape_error("x", f"[B, {c}, T, H, W] latents", x)
        batch, _, frames, height, width = x.shape
        if frames % pt or height % ph or width % pw or 0 in (frames, height, width):
            raise _shape_error(
                "x", f"[B, {c}, T, H, W] with T, H, W positive multiples of the patch {cfg.patch_size}", x
            )
        if t.shape != (batch,):
            raise _shape_error("t", f"[B] = [{batch}] float timesteps", t)
        if (
            text_states.ndim != 3
            or text_states.shape[0] != batch
            or text_states.shape[2] != cfg.text_states_dim
        ):
            raise _shape_error("text_states", f"[B, L, {cfg.text_states_dim}] with B = {batch}", text_states)
        length = text_states.shape[1]
        if text_mask.shape != (batch, length):
            raise _shape_error("text_mask", f"[B, L] = [{batch}, {length}] like text_states", text_mask)
        if bool((text_mask.sum(dim=1) == 0).any()):
            raise ValueError("text_mask has a sample with no real token; every sample needs at least one")
        if text_pooled.shape != (batch, cfg.text_pooled_dim):
            raise _shape_error(
                "text_pooled", f"[B, {cfg.text_pooled_dim}] = [{batch}, {cfg.text_pooled_dim}]", text_pooled
            )
        if guidance is not None and guidance.shape != (batch,):
            raise _shape_error("guidance", f"[B] = [{batch}] (scale times 1000)", guidance)
        grid = TokenGrid(frames // pt, height // ph, width // pw)

        if cfg.avatar is not None:
            if ref_latents is None or ref_latents.shape != x.shape:
                raise _shape_error(
                    "ref_latents",
                    f"[B, {c}, T, H, W] = {list(x.shape)} like x (Avatar: the reference image over the frames)",
                    ref_latents,
                )
            grid = dataclasses.replace(grid, num_refs=1)
            if face_mask is not None and (face_mask.ndim != 5 or face_mask.shape[:2] != (batch, 1)):
                raise _shape_error("face_mask", f"[B, 1, T, H, W] with B = {batch}", face_mask)
        elif face_mask is not None:
            raise ValueError("this preset takes no face mask: pass face_mask=None or an Avatar preset")
        elif ref_latents is not None:
            if not cfg.identity_image:
                raise ValueError(
                    "this preset takes no identity image: pass ref_latents=None or a hunyuancustom preset"
                )
            if (
                ref_latents.ndim != 5
                or ref_latents.shape[:2] != (batch, c)
                or ref_latents.shape[3:] != (height, width)
            ):
                raise _shape_error(
                    "ref_latents", f"[B, {c}, K, H, W] = [{batch}, {c}, K, {height}, {width}]", ref_latents
                )
            num_refs = ref_latents.shape[2]
            if num_refs % pt or num_refs == 0:
                raise _shape_error(
                    "ref_latents", f"K >= 1 identity images (multiple of patch t {pt})", ref_latents
                )
            grid = dataclasses.replace(grid, num_refs=num_refs // pt)

        if video_cond is not None:
            if not cfg.video_condition:
                raise ValueError(
                    "this preset takes no video condition: pass video_cond=None or the editing preset"
                )
            if video_cond.shape != (batch, 2 * c, frames, height, width):
                raise _shape_error(
                    "video_cond",
                    f"[B, {2 * c}, T, H, W] = [{batch}, {2 * c}, {frames}, {height}, {width}] like x",
                    video_cond,
                )

        if audio_states is not None:
            a = cfg.audio
            if a is None:
                raise ValueError(
                    "this preset has no audio branch: pass audio_states=None or the audio preset"
                )
            n_audio = expected_audio_frames(grid.frames, a.frames_per_latent)
            expected = (batch, n_audio, a.window, a.whisper_layers, a.whisper_dim)
            if audio_states.shape != expected:
                raise _shape_error(
                    "audio_states",
                    f"[B, F, window, layers, dim] = {list(expected)}",
                    audio_states,
                    f"F = (T-1)*{a.frames_per_latent}+1 video frames for T = {grid.frames} latent frames",
                )
        return grid
