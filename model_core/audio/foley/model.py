"""HunyuanVideo-Foley's MMDiT: the velocity of DAC-VAE latents given video frames, sync features and text.

Streams (one token a row, `[B, L, C]`):

* audio: the noisy latents `[B, 128, L]` (50 per second) through `audio_embedder` (Conv1d k1);
* visual: SigLIP2 frame features `[B, T8, 768]` (8 fps) through `visual_proj` (SwiGLU);
* text: CLAP `last_hidden_state` `[B, <=77, 768]` through `cond_in`;
* sync: Synchformer features `[B, S*8, 768]` plus `sync_pos_emb`, through `sync_in`, resized to L
  (nearest-exact) and added to the audio tokens once, in front of triple block 0.

`vec = time_in(t)`. Each triple block modulates both streams 9 ways from vec: joint self-attention over
(visual, audio) with the interleaved audio-visual RoPE, cross-attention of (visual q, audio q) to the text
(each with its own 1-D RoPE from 0), then per-stream MLPs. The single blocks see audio only, with a per-token
vec (resized sync features + vec), a (H D K) qkv split, Conv1d k3 out-projection and a SwiGLU ConvMLP. The final
layer is `linear(LayerNorm(x))`: as in the release, its adaLN modulation is computed there but never applied
(docs/FIDELITY.md), so this code does not compute it; `final_layer.adaLN_modulation.1` stays in the state dict so
that the released files load strictly.

Reimplemented from the facts of Tencent-Hunyuan/HunyuanVideo-Foley (`hunyuanvideo_foley/models/hifi_foley.py`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from model_core.audio.foley.config import FoleyConfig
from model_core.audio.foley.layers import (
    ConditionProjection,
    ConvMLP,
    FoleyRMSNorm,
    SwiGLU,
    TimestepEmbedder,
    apply_rope,
    modulated_norm,
    rope_1d,
    wide,
)

__all__ = [
    "TRAINING_ONLY_MARKERS",
    "FoleyDiT",
    "SingleStreamBlock",
    "TripleStreamBlock",
    "deinterleave_audio_visual",
    "interleave_audio_visual",
    "split_training_only",
]

TRIPLE_NORM_EPS = 1e-6
SINGLE_NORM_EPS = 1e-5  # the single blocks' LayerNorms keep torch's default
FINAL_NORM_EPS = 1e-6
RMS_EPS = torch.finfo(torch.float32).eps  # the single blocks' q/k RMSNorm
# Top-level names of the training-only REPA heads (an SSL encoder and its projector over the audio tokens,
# `use_repa_with_audiossl`, `depth_single_ssl_encoder`): inference never builds them, so their keys are dropped
# by name, and any other key the model lacks is still an error.
TRAINING_ONLY_MARKERS = ("repa", "ssl")


def _resize_tokens(x: Tensor, length: int) -> Tensor:
    """Resize `[B, N, ...]` along N to `length` with `nearest-exact` (not legacy `nearest`)."""
    if x.shape[1] == length:
        return x
    flat = x.flatten(2).transpose(1, 2)
    out = F.interpolate(flat, size=length, mode="nearest-exact")
    return out.transpose(1, 2).unflatten(2, x.shape[2:])


def interleave_audio_visual(audio: Tensor, visual: Tensor) -> Tensor:
    """`[B, L, H, D]` audio and `[B, N, H, D]` visual -> `[B, 2L, H, D]`: visual resized to L, audio first."""
    visual = _resize_tokens(visual, audio.shape[1])
    return torch.stack((audio, visual), dim=2).flatten(1, 2)


def deinterleave_audio_visual(x: Tensor, visual_len: int) -> tuple[Tensor, Tensor]:
    """Inverse of `interleave_audio_visual`: (audio `[B, L, H, D]`, visual resized back to `visual_len`)."""
    pairs = x.unflatten(1, (-1, 2))
    return pairs[:, :, 0], _resize_tokens(pairs[:, :, 1], visual_len)


def _sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Attention over `[B, L, H, D]` tensors, no mask -> `[B, L, H*D]`."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).flatten(2)


class Modulation(nn.Module):
    """`linear(SiLU(vec))` chunked into `factor` pieces (shift, scale, gate, shift, scale, gate, ...)."""

    def __init__(self, hidden_size: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.act = nn.SiLU()
        self.linear = nn.Linear(hidden_size, factor * hidden_size)

    def forward(self, vec: Tensor) -> tuple[Tensor, ...]:
        """vec `[B, C]` (one per sample: pieces are `[B, 1, C]`) or `[B, L, C]` (per token)."""
        out = self.linear(self.act(vec))
        if out.ndim == 2:
            out = out[:, None]
        return out.chunk(self.factor, dim=-1)


class MLP(nn.Module):
    """`fc1` - GELU (tanh) - `fc2`."""

    def __init__(self, hidden_size: int, mlp_hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(mlp_hidden, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TripleStreamBlock(nn.Module):
    """Audio + visual streams: joint self-attention, cross-attention to the text, MLPs (`TwoStreamCABlock`)."""

    def __init__(self, config: FoleyConfig) -> None:
        super().__init__()
        c, hd = config.hidden_size, config.head_dim
        self.num_heads = config.num_heads
        self.rope_theta = config.rope_theta
        self.audio_mod = Modulation(c, 9)
        self.audio_self_attn_qkv = nn.Linear(c, 3 * c)
        self.audio_self_q_norm = FoleyRMSNorm(hd)
        self.audio_self_k_norm = FoleyRMSNorm(hd)
        self.audio_self_proj = nn.Linear(c, c)
        self.v_cond_mod = Modulation(c, 9)
        self.v_cond_attn_qkv = nn.Linear(c, 3 * c)
        self.v_cond_attn_q_norm = FoleyRMSNorm(hd)
        self.v_cond_attn_k_norm = FoleyRMSNorm(hd)
        self.v_cond_self_proj = nn.Linear(c, c)
        self.audio_cross_q = nn.Linear(c, c)
        self.v_cond_cross_q = nn.Linear(c, c)
        self.text_cross_kv = nn.Linear(c, 2 * c)
        self.audio_cross_q_norm = FoleyRMSNorm(hd)
        self.v_cond_cross_q_norm = FoleyRMSNorm(hd)
        self.text_cross_k_norm = FoleyRMSNorm(hd)
        self.audio_cross_proj = nn.Linear(c, c)
        self.v_cond_cross_proj = nn.Linear(c, c)
        self.audio_mlp = MLP(c, config.mlp_hidden)
        self.v_cond_mlp = MLP(c, config.mlp_hidden)

    def _rope(self, length: int, x: Tensor) -> tuple[Tensor, Tensor]:
        return rope_1d(length, x.shape[-1], self.rope_theta, device=x.device)

    def forward(
        self, audio: Tensor, visual: Tensor, text: Tensor, vec: Tensor, av_rope: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """audio `[B, L, C]`, visual `[B, N, C]`, text `[B, M, C]`, vec `[B, C]`; av_rope over 2L positions."""
        a_shift1, a_scale1, a_gate1, a_shift2, a_scale2, a_gate2, a_shift3, a_scale3, a_gate3 = (
            self.audio_mod(vec)
        )
        v_shift1, v_scale1, v_gate1, v_shift2, v_scale2, v_gate2, v_shift3, v_scale3, v_gate3 = (
            self.v_cond_mod(vec)
        )
        heads = self.num_heads

        # 1. joint self-attention over (visual, audio) with the interleaved audio-visual RoPE
        a_qkv = self.audio_self_attn_qkv(modulated_norm(audio, a_shift1, a_scale1, TRIPLE_NORM_EPS))
        a_q, a_k, a_v = rearrange(a_qkv, "B L (K H D) -> K B L H D", K=3, H=heads)
        a_q = self.audio_self_q_norm(a_q).to(a_v.dtype)
        a_k = self.audio_self_k_norm(a_k).to(a_v.dtype)
        v_qkv = self.v_cond_attn_qkv(modulated_norm(visual, v_shift1, v_scale1, TRIPLE_NORM_EPS))
        v_q, v_k, v_v = rearrange(v_qkv, "B L (K H D) -> K B L H D", K=3, H=heads)
        v_q = self.v_cond_attn_q_norm(v_q).to(v_v.dtype)
        v_k = self.v_cond_attn_k_norm(v_k).to(v_v.dtype)
        n_visual = visual.shape[1]
        a_q, v_q = deinterleave_audio_visual(
            apply_rope(interleave_audio_visual(a_q, v_q), *av_rope), n_visual
        )
        a_k, v_k = deinterleave_audio_visual(
            apply_rope(interleave_audio_visual(a_k, v_k), *av_rope), n_visual
        )
        attn = _sdpa(torch.cat((v_q, a_q), 1), torch.cat((v_k, a_k), 1), torch.cat((v_v, a_v), 1))
        v_attn, a_attn = attn.split((n_visual, audio.shape[1]), dim=1)
        audio = audio + a_gate1 * self.audio_self_proj(a_attn)
        visual = visual + v_gate1 * self.v_cond_self_proj(v_attn)

        # 2. cross-attention of (visual q, audio q) to the text; each gets its own 1-D RoPE from position 0
        a_q = rearrange(
            self.audio_cross_q(modulated_norm(audio, a_shift2, a_scale2, TRIPLE_NORM_EPS)),
            "B L (H D) -> B L H D",
            H=heads,
        )
        a_q = self.audio_cross_q_norm(a_q)
        v_q = rearrange(
            self.v_cond_cross_q(modulated_norm(visual, v_shift2, v_scale2, TRIPLE_NORM_EPS)),
            "B L (H D) -> B L H D",
            H=heads,
        )
        v_q = self.v_cond_cross_q_norm(v_q)
        t_k, t_v = rearrange(self.text_cross_kv(text), "B L (K H D) -> K B L H D", K=2, H=heads)
        t_k = self.text_cross_k_norm(t_k).to(t_v.dtype)
        a_q = apply_rope(a_q, *self._rope(a_q.shape[1], a_q))
        v_q = apply_rope(v_q, *self._rope(v_q.shape[1], v_q))
        t_k = apply_rope(t_k, *self._rope(t_k.shape[1], t_k))
        cross = _sdpa(torch.cat((v_q, a_q), 1), t_k, t_v)
        v_cross, a_cross = cross.split((n_visual, audio.shape[1]), dim=1)
        audio = audio + a_gate2 * self.audio_cross_proj(a_cross)
        visual = visual + v_gate2 * self.v_cond_cross_proj(v_cross)

        # 3. per-stream MLPs
        audio = audio + a_gate3 * self.audio_mlp(modulated_norm(audio, a_shift3, a_scale3, TRIPLE_NORM_EPS))
        visual = visual + v_gate3 * self.v_cond_mlp(
            modulated_norm(visual, v_shift3, v_scale3, TRIPLE_NORM_EPS)
        )
        return audio, visual


class SingleStreamBlock(nn.Module):
    """Audio only, per-token modulation: attention with a Conv1d k3 out-projection, then a SwiGLU ConvMLP k3."""

    def __init__(self, config: FoleyConfig) -> None:
        super().__init__()
        c, hd = config.hidden_size, config.head_dim
        self.num_heads = config.num_heads
        self.modulation = Modulation(c, 6)
        self.linear_qkv = nn.Linear(c, 3 * c)
        self.linear1 = nn.Conv1d(c, c, kernel_size=3, padding=1)
        self.linear2 = ConvMLP(c, config.conv_mlp_hidden, kernel_size=3)
        # the release's torch RMSNorm with eps=None: float32's machine epsilon (in fp32 and bf16), not 1e-6
        self.q_norm = nn.RMSNorm(hd, eps=RMS_EPS)
        self.k_norm = nn.RMSNorm(hd, eps=RMS_EPS)

    def forward(self, x: Tensor, vec: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        """x `[B, L, C]`, vec `[B, L, C]` (per token), rope over L positions."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(vec)
        qkv = self.linear_qkv(modulated_norm(x, shift1, scale1, SINGLE_NORM_EPS))
        # (H D K): q, k and v of one channel are adjacent, unlike the triple blocks' (K H D)
        q, k, v = rearrange(qkv, "B L (H D K) -> K B L H D", K=3, H=self.num_heads)
        q = apply_rope(self.q_norm(q), *rope)
        k = apply_rope(self.k_norm(k), *rope)
        out = _sdpa(q, k, v)
        x = x + gate1 * self.linear1(out.transpose(1, 2)).transpose(1, 2)
        return x + gate2 * self.linear2(modulated_norm(x, shift2, scale2, SINGLE_NORM_EPS))


class FinalLayer(nn.Module):
    """`linear(LayerNorm(x))`; `adaLN_modulation` is kept for the checkpoint and not applied, as released."""

    def __init__(self, hidden_size: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(wide(x), x.shape[-1:], eps=FINAL_NORM_EPS).to(x.dtype)
        return self.linear(y)


class FoleyDiT(nn.Module):
    """The HunyuanVideo-Foley MMDiT (`HunyuanVideoFoley`), with the released checkpoints' names."""

    def __init__(self, config: FoleyConfig) -> None:
        super().__init__()
        self.config = config
        c = config.hidden_size
        self.sync_pos_emb = nn.Parameter(torch.zeros(1, 1, config.sync_tokens_per_segment, config.sync_dim))
        # the unconditional visual features of CFG (learned)
        self.empty_clip_feat = nn.Parameter(torch.zeros(1, config.clip_dim))
        self.empty_sync_feat = nn.Parameter(torch.zeros(1, config.sync_dim))
        self.audio_embedder = _AudioEmbedder(config.latent_dim, c)
        self.visual_proj = SwiGLU(config.clip_dim, c, c)
        self.cond_in = ConditionProjection(config.text_dim, c)
        self.time_in = TimestepEmbedder(c, config.freq_dim)
        self.sync_in = nn.Sequential(
            nn.Linear(config.sync_dim, c), nn.SiLU(), ConvMLP(c, config.conv_mlp_hidden, kernel_size=1)
        )
        self.triple_blocks = nn.ModuleList(TripleStreamBlock(config) for _ in range(config.depth_triple))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(config) for _ in range(config.depth_single))
        self.final_layer = FinalLayer(c, config.latent_dim)

    def empty_visual(self, batch: int, clip_len: int, sync_len: int) -> tuple[Tensor, Tensor]:
        """The unconditional (SigLIP2 `[B, clip_len, D]`, Synchformer `[B, sync_len, D]`) features."""
        clip = self.empty_clip_feat[None].expand(batch, clip_len, -1)
        sync = self.empty_sync_feat[None].expand(batch, sync_len, -1)
        return clip, sync

    def sync_tokens(self, sync_feat: Tensor, length: int) -> Tensor:
        """Synchformer features `[B, S*8, D]` -> `[B, length, C]`: pos-embedded, `sync_in`, resized nearest-exact."""
        b, n, d = sync_feat.shape
        per = self.config.sync_tokens_per_segment
        if n % per:
            raise ValueError(f"sync features have {n} tokens, not a multiple of {per} per segment")
        feat = (sync_feat.view(b, n // per, per, d) + self.sync_pos_emb.to(sync_feat.dtype)).view(b, n, d)
        return _resize_tokens(self.sync_in(feat), length)

    def forward(self, x: Tensor, t: Tensor, clip_feat: Tensor, text: Tensor, sync_feat: Tensor) -> Tensor:
        """Velocity `[B, latent_dim, L]` of latents x `[B, latent_dim, L]` at timesteps t `[B]` (0..1000).

        clip_feat `[B, N, clip_dim]` (SigLIP2, 8 fps), text `[B, M, text_dim]` (CLAP, all tokens attended: the
        release applies no text mask), sync_feat `[B, S*8, sync_dim]` (Synchformer).
        """
        dtype = self.audio_embedder.proj.weight.dtype
        length = x.shape[-1]
        vec = self.time_in(t)
        sync = self.sync_tokens(sync_feat.to(dtype), length)
        text = self.cond_in(text.to(dtype))
        audio = self.audio_embedder(x.to(dtype))
        visual = self.visual_proj(clip_feat.to(dtype))

        hd = self.config.head_dim
        theta = self.config.rope_theta
        av_rope = rope_1d(2 * length, hd, theta, device=x.device)
        audio = audio + sync  # once, in front of triple block 0
        for triple in self.triple_blocks:
            audio, visual = triple(audio, visual, text, vec, av_rope)

        token_vec = sync + vec[:, None]
        rope = rope_1d(length, hd, theta, device=x.device)
        for single in self.single_blocks:
            audio = single(audio, token_vec, rope)
        return self.final_layer(audio).transpose(1, 2)


class _AudioEmbedder(nn.Module):
    """`proj`: Conv1d k1 over the latent channels, `[B, 128, L]` -> `[B, L, C]`."""

    def __init__(self, latent_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv1d(latent_dim, hidden_size, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).transpose(1, 2)


def split_training_only(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """(the state dict without the training-only REPA keys, the sorted names of the keys dropped).

    A key is training-only when its top-level module name contains one of `TRAINING_ONLY_MARKERS`; no inference
    module's name does. Everything else goes to a strict load, so a real mismatch still fails.
    """
    kept: dict[str, Tensor] = {}
    dropped: list[str] = []
    for key, value in state_dict.items():
        top = key.split(".", 1)[0].lower()
        if any(marker in top for marker in TRAINING_ONLY_MARKERS):
            dropped.append(key)
        else:
            kept[key] = value
    return kept, sorted(dropped)
