"""Synchformer's audio branch (`afeat_extractor`): an AST over log-mel segments, aggregated over frequency.

Preprocessing, as Tencent-Hunyuan/HunyuanVideo-Foley@df7b005b reads audio for the sync classifier
(`hunyuanvideo_foley/models/synchformer/compute_desync_score.py::get_test_transforms`, `data_transforms.py`):

- mono at 16 kHz; segments of 10240 samples (16 video frames at 25 fps = 0.64 s) with stride 5120 (half a
  segment), aligned with the 16-frame video segments of stride 8;
- a power mel spectrogram (torchaudio `MelSpectrogram` defaults: periodic Hann window of 400 samples centred in a
  1024-point FFT, hop 160, centred frames with reflect padding, 128 HTK mel bands from 0 to 8 kHz, no band
  normalisation): 65 frames per segment;
- `log(mel + 1e-6)`, padded with zeros (after the log) to 66 frames, then `(x - (-4.2677393)) / (2 * 4.5689974)`
  (AudioSet statistics, halved std as `AudioNormalizeAST` does).

Model (`ast_model.py`): transformers' AST (`ASTModel`: 16x16 patches with stride 10 on 128 mels x 66 frames gives
12 x 6 patches, plus CLS and distillation tokens: 74 positions), its last hidden state without the two extra
tokens laid out as (frequency 12, time 6), then per time step a pre-norm `nn.TransformerEncoderLayer` with its own
CLS over the 12 frequency tokens (`freq_attn_agg`): 6 tokens x 768 per segment.

The released file names the AST weights as transformers 4.x did (`encoder.layer.N.attention.attention.query`);
newer transformers call them `layers.N.attention.q_proj`. `ASTFeatures` speaks the released names in
`state_dict()` and `load_state_dict()` (`released_ast_key` / `transformers_ast_key`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn
from transformers import ASTConfig, ASTModel

from model_core.audio.foley.synchformer import _SpatialAggregator

__all__ = [
    "AUDIO_SEGMENT",
    "AUDIO_STRIDE",
    "SAMPLE_RATE",
    "SPEC_FRAMES",
    "ASTFeatures",
    "AudioBranchConfig",
    "audio_segments",
    "log_mel",
    "mel_filterbank",
    "normalized_spectrogram",
    "released_ast_key",
    "transformers_ast_key",
]

SAMPLE_RATE = 16_000
AUDIO_SEGMENT = 10_240  # 16 frames at 25 fps, in samples at 16 kHz
AUDIO_STRIDE = AUDIO_SEGMENT // 2  # the video's stride of 8 frames
N_FFT = 1024
WIN_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_MELS = 128
SPEC_FRAMES = 66  # `max_spec_t`: 65 frames per segment, zero-padded by one
LOG_EPS = 1e-6
AST_MEAN = -4.2677393
AST_STD = 4.5689974


@dataclass(frozen=True)
class AudioBranchConfig:
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    patch_size: int = 16
    stride: int = 10  # AST's frequency and time stride: overlapping patches

    def ast_config(self) -> ASTConfig:
        return ASTConfig(
            hidden_size=self.dim,
            num_hidden_layers=self.depth,
            num_attention_heads=self.num_heads,
            intermediate_size=self.mlp_dim,
            patch_size=self.patch_size,
            frequency_stride=self.stride,
            time_stride=self.stride,
            num_mel_bins=N_MELS,
            max_length=SPEC_FRAMES,
        )

    @property
    def grid(self) -> tuple[int, int]:
        """(frequency, time) patches of one segment: (12, 6) released."""
        f = (N_MELS - self.patch_size) // self.stride + 1
        t = (SPEC_FRAMES - self.patch_size) // self.stride + 1
        return f, t


def audio_segments(audio: Tensor) -> Tensor:
    """`[B, N]` 16 kHz samples -> `[B, S, 10240]`, S = (N - 10240) // 5120 + 1 segments."""
    n = audio.shape[-1]
    if n < AUDIO_SEGMENT:
        raise ValueError(
            f"Synchformer's audio branch needs at least {AUDIO_SEGMENT} samples (0.64 s), got {n}"
        )
    return audio.unfold(-1, AUDIO_SEGMENT, AUDIO_STRIDE)


def mel_filterbank(
    n_freqs: int = N_FFT // 2 + 1, n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE
) -> Tensor:
    """`[n_freqs, n_mels]` triangular HTK mel filters from 0 Hz to Nyquist, unnormalised (torchaudio's defaults)."""
    freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    top = 2595.0 * math.log10(1.0 + (sample_rate / 2) / 700.0)
    mels = torch.linspace(0.0, top, n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    width = hz.diff()  # [n_mels + 1]
    rel = hz[None, :] - freqs[:, None]  # [n_freqs, n_mels + 2]
    down = -rel[:, :-2] / width[:-1]
    up = rel[:, 2:] / width[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


def log_mel(segments: Tensor) -> Tensor:
    """`[..., 10240]` samples -> `[..., 128, 65]` log power mel spectrogram."""
    lead = segments.shape[:-1]
    x = segments.reshape(-1, segments.shape[-1]).float()
    window = torch.hann_window(WIN_LENGTH, periodic=True, device=x.device)
    spec = torch.stft(
        x, N_FFT, HOP_LENGTH, WIN_LENGTH, window, center=True, pad_mode="reflect", return_complex=True
    )
    power = spec.abs() ** 2  # [BS, 513, 65]
    mel = mel_filterbank().to(x.device).T @ power
    return torch.log(mel + LOG_EPS).reshape(*lead, N_MELS, -1)


def normalized_spectrogram(segments: Tensor) -> Tensor:
    """`[B, S, 10240]` samples -> `[B, S, 66, 128]` (time, mel), the AST input as the release normalises it."""
    spec = log_mel(segments)
    pad = SPEC_FRAMES - spec.shape[-1]
    spec = nn.functional.pad(spec, (0, pad)) if pad > 0 else spec[..., :SPEC_FRAMES]  # zeros after the log
    spec = (spec - AST_MEAN) / (2 * AST_STD)
    return spec.transpose(-1, -2)


_RENAMES = (  # per layer N of `ast.`: (released name, transformers 5.x name)
    ("encoder.layer.{}.attention.attention.query.", "layers.{}.attention.q_proj."),
    ("encoder.layer.{}.attention.attention.key.", "layers.{}.attention.k_proj."),
    ("encoder.layer.{}.attention.attention.value.", "layers.{}.attention.v_proj."),
    ("encoder.layer.{}.attention.output.dense.", "layers.{}.attention.o_proj."),
    ("encoder.layer.{}.intermediate.dense.", "layers.{}.mlp.fc1."),
    ("encoder.layer.{}.output.dense.", "layers.{}.mlp.fc2."),
    ("encoder.layer.{}.layernorm_", "layers.{}.layernorm_"),
)


def _translate(key: str, pairs: tuple[tuple[str, str], ...]) -> str:
    for source, target in pairs:
        head, tail = source.split("{}")
        match = re.match(re.escape(head) + r"(\d+)" + re.escape(tail), key)
        if match:
            return target.format(match.group(1)) + key[match.end() :]
    return key


def transformers_ast_key(key: str) -> str:
    """A released AST key (relative to the `ASTModel`) under transformers' current name."""
    return _translate(key, _RENAMES)


def released_ast_key(key: str) -> str:
    """A transformers AST key (relative to the `ASTModel`) under the released name."""
    return _translate(key, tuple((b, a) for a, b in _RENAMES))


def _rename(state: dict[str, Any], prefix: str, to_key: Any) -> None:
    for key in [k for k in state if k.startswith(prefix)]:
        new = prefix + to_key(key[len(prefix) :])
        if new != key:
            state[new] = state.pop(key)


class ASTFeatures(nn.Module):
    """The audio feature extractor (`afeat_extractor`): `[B, 66, 128]` normalised spectrograms -> `[B, 6, D]`."""

    def __init__(self, config: AudioBranchConfig) -> None:
        super().__init__()
        self.config = config
        self.ast = ASTModel(config.ast_config())
        self.ast.register_state_dict_post_hook(self._to_released)
        self.ast.register_load_state_dict_pre_hook(self._from_released)
        self.freq_attn_agg = _SpatialAggregator(config.dim, config.num_heads, config.mlp_dim)

    @staticmethod
    def _to_released(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
        _rename(state, prefix, released_ast_key)

    @staticmethod
    def _from_released(module: nn.Module, state: dict[str, Any], prefix: str, *_: Any) -> None:
        _rename(state, prefix, transformers_ast_key)

    def forward(self, spec: Tensor) -> Tensor:
        f, t = self.config.grid
        hidden = self.ast(input_values=spec).last_hidden_state[:, 2:]  # CLS and distillation tokens dropped
        # patches are frequency-major (f, t): aggregate the f tokens of each time step
        per_step = rearrange(hidden, "b (f t) d -> (b t) f d", f=f, t=t)
        return rearrange(self.freq_attn_agg.aggregate(per_step), "(b t) d -> b t d", t=t)
