"""HunyuanCustom's audio branch: Whisper features -> audio tokens -> per-latent-frame cross-attention.

* `AudioProjNet` (`audio_proj`, the release's AudioProjNet2): each video frame's Whisper window
  `[window, layers, dim]` is flattened and mapped to `tokens_per_frame` tokens of the hidden size.
* `align_audio_to_latent_frames`: a latent frame covers `frames_per_latent` video frames, except the first,
  which covers one (causal VAE). Frame 0 is repeated `frames_per_latent - 1` extra times at the front so every
  latent frame gets the tokens of exactly `frames_per_latent` video frames.
* `AudioCrossAttention` (`audio_models.k`, the release's PerceiverAttentionCA): per latent frame, the video
  tokens (queries) attend to that frame's audio tokens; one head of `cross_dim`, no biases.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AudioCrossAttention", "AudioProjNet", "align_audio_to_latent_frames", "expected_audio_frames"]


class AudioProjNet(nn.Module):
    """`[B, F, window, layers, dim]` Whisper features -> `[B, F, tokens_per_frame, hidden]` audio tokens."""

    def __init__(
        self, in_features: int, proj_hidden: int, tokens_per_frame: int, hidden_size: int, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.tokens_per_frame = tokens_per_frame
        self.hidden_size = hidden_size
        self.proj1 = nn.Linear(in_features, proj_hidden)
        self.proj2 = nn.Linear(proj_hidden, proj_hidden)
        self.proj3 = nn.Linear(proj_hidden, tokens_per_frame * hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, audio: Tensor) -> Tensor:
        x = audio.flatten(2)  # [B, F, window*layers*dim]
        x = F.relu(self.proj2(F.relu(self.proj1(x))))
        x = self.proj3(x).unflatten(-1, (self.tokens_per_frame, self.hidden_size))
        return self.norm(x)


def expected_audio_frames(latent_frames: int, frames_per_latent: int) -> int:
    """Video frames behind `latent_frames` latent frames of the causal VAE: `(T - 1) * r + 1`."""
    return (latent_frames - 1) * frames_per_latent + 1


def align_audio_to_latent_frames(audio_tokens: Tensor, latent_frames: int, frames_per_latent: int) -> Tensor:
    """`[B, F, m, C]` per-video-frame tokens -> `[B, T, r*m, C]` per-latent-frame tokens (frame 0 padded r-1 times)."""
    batch, frames, m, dim = audio_tokens.shape
    expected = expected_audio_frames(latent_frames, frames_per_latent)
    if frames != expected:
        raise ValueError(
            f"audio has {frames} video frames; {latent_frames} latent frames need "
            f"(T-1)*{frames_per_latent}+1 = {expected}"
        )
    pad = audio_tokens[:, :1].expand(batch, frames_per_latent - 1, m, dim)
    padded = torch.cat([pad, audio_tokens], dim=1)  # [B, T*r, m, C]
    return padded.reshape(batch, latent_frames, frames_per_latent * m, dim)


class AudioCrossAttention(nn.Module):
    """Video tokens of one latent frame attend to its audio tokens: one head, `dim_head**-0.25` on q and on k."""

    def __init__(self, hidden_size: int, cross_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.cross_dim = cross_dim
        self.norm1 = nn.LayerNorm(hidden_size, eps=eps)  # audio tokens
        self.norm2 = nn.LayerNorm(hidden_size, eps=eps)  # video tokens
        self.to_q = nn.Linear(hidden_size, cross_dim, bias=False)
        self.to_kv = nn.Linear(hidden_size, 2 * cross_dim, bias=False)
        self.to_out = nn.Linear(cross_dim, hidden_size, bias=False)

    def forward(self, audio: Tensor, video: Tensor) -> Tensor:
        """`audio [N, A, C]`, `video [N, S, C]` (N = batch * latent frames) -> `[N, S, C]`."""
        q = self.to_q(self.norm2(video))
        k, v = self.to_kv(self.norm1(audio)).chunk(2, dim=-1)
        scale = self.cross_dim**-0.25  # on both q and k: keeps fp16/bf16 logits in range
        weight = (q * scale) @ (k * scale).transpose(-2, -1)
        weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
        return self.to_out(weight @ v)
