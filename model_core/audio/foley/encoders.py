"""Foley's conditioning: frame sampling, SigLIP2 image features, Synchformer preprocessing, CLAP text states.

Frame sampling follows the release's reader: walking the decoded frames in time order, a frame at time `t`
(seconds) is emitted once for every tick of the target rate it has reached (`while t >= next: emit; next += 1 /
fps`, the tick accumulated by repeated addition), and reading stops after 15 s. SigLIP2 sees 8 fps at 512 x 512,
Synchformer 25 fps at 224 (shorter side bicubic, centre crop); both normalise with mean/std 0.5. The audio lasts
as long as the 25 fps frames: `L = int(n / 25 * 50)` latents (Python floats: 201 frames give 401, not 402).

CLAP: `[negative, prompt]` are tokenized together with padding, and the text model's `last_hidden_state` (not the
projection) is cut to 77 tokens; row 0 is the unconditional branch. The transformers models are passed in; this
module never downloads. Facts from Tencent-Hunyuan/HunyuanVideo-Foley (`utils/feature_utils.py`,
`utils/model_utils.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_core.configs import naflex_siglip2_refusal

__all__ = [
    "DEFAULT_NEGATIVE_PROMPT",
    "MAX_SECONDS",
    "SIGLIP_FPS",
    "SYNC_FPS",
    "ClapTextEncoder",
    "SiglipImageEncoder",
    "latent_length",
    "preprocess_siglip",
    "preprocess_synchformer",
    "sample_frames",
]

SIGLIP_FPS = 8
SYNC_FPS = 25
MAX_SECONDS = 15.0
DEFAULT_NEGATIVE_PROMPT = "noisy, harsh"
TEXT_LENGTH = 77


def sample_frames(frame_times: Sequence[float], fps: float, max_seconds: float = MAX_SECONDS) -> list[int]:
    """Indices of the decoded frames (times in seconds, in order) that the release's reader emits at `fps`.

    A frame may be emitted several times (a source slower than `fps`) or not at all (faster); frames at negative
    times are skipped and reading stops at the first frame after `max_seconds`.
    """
    picked: list[int] = []
    next_time = 0.0
    delta = 1 / fps
    for index, t in enumerate(frame_times):
        if t < 0:
            continue
        if t > max_seconds:
            break
        while t >= next_time:
            picked.append(index)
            next_time += delta
    return picked


def latent_length(n_sync_frames: int, latent_rate: int = 50) -> int:
    """DAC latents of a clip of `n_sync_frames` frames at 25 fps: `int(n / 25 * 50)` in float64, as released."""
    return int(n_sync_frames / SYNC_FPS * latent_rate)


def _as_float_frames(frames: Tensor) -> Tensor:
    """uint8 `[T, H, W, 3]` or float `[T, 3, H, W]` in [0, 1] -> float32 `[T, 3, H, W]` in [0, 1]."""
    if frames.dtype == torch.uint8:
        return frames.permute(0, 3, 1, 2).float() / 255.0
    return frames.float()


def preprocess_siglip(frames: Tensor, size: int = 512) -> Tensor:
    """SigLIP2 input `[T, 3, size, size]`: resized (bilinear, antialiased) to a square, normalised with 0.5."""
    x = F.interpolate(_as_float_frames(frames), size=(size, size), mode="bilinear", antialias=True)
    return (x.clamp(0.0, 1.0) - 0.5) / 0.5


def preprocess_synchformer(frames: Tensor, size: int = 224) -> Tensor:
    """Synchformer input `[T, 3, size, size]`: shorter side to `size` (bicubic), centre crop, normalised with 0.5."""
    x = _as_float_frames(frames)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", antialias=True).clamp(0.0, 1.0)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return (x[..., top : top + size, left : left + size] - 0.5) / 0.5


class SiglipImageEncoder(nn.Module):
    """Pooled SigLIP2 image features `[T, D]` (768 for siglip2-base-patch16-512) of preprocessed frames.

    Wraps a transformers SigLIP model or its vision tower; the output is the vision tower's `pooler_output`
    (what `get_image_features` returns). google/siglip2-base-patch16-512 is a fixed-resolution SigLIP2 checkpoint:
    its config.json says `model_type: "siglip"` and transformers builds it as a `SiglipModel`. The NaFlex SigLIP2
    models (`model_type` `siglip2`, variable resolution with patch masks) are another architecture and are refused.
    """

    def __init__(self, model: nn.Module, batch_size: int = 64) -> None:
        super().__init__()
        model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
        refusal = naflex_siglip2_refusal(model_type)
        if refusal is not None:
            raise ValueError(refusal)
        self.vision = getattr(model, "vision_model", model)
        self.batch_size = batch_size

    @torch.no_grad()
    def forward(self, pixel_values: Tensor) -> Tensor:
        outs = []
        for start in range(0, pixel_values.shape[0], self.batch_size):
            chunk = pixel_values[start : start + self.batch_size]
            outs.append(self.vision(pixel_values=chunk).pooler_output)
        return torch.cat(outs)


class ClapTextEncoder(nn.Module):
    """CLAP text states: `encode(prompt, negative)` -> (uncond `[1, L, D]`, cond `[1, L, D]`), L <= 77."""

    def __init__(self, model: nn.Module, tokenizer: Any, max_tokens: int = TEXT_LENGTH) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    @torch.no_grad()
    def encode(self, prompt: str, negative: str = DEFAULT_NEGATIVE_PROMPT) -> tuple[Tensor, Tensor]:
        device = next(self.model.parameters()).device
        batch = self.tokenizer([negative, prompt], padding=True, return_tensors="pt")
        inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        states = self.model(**inputs).last_hidden_state[:, : self.max_tokens]
        return states[:1], states[1:]
