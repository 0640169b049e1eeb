"""Frames for the QC models: uint8 video frames to normalised float batches, and frame sampling by rate.

Frames arrive as uint8 RGB ``[N, H, W, 3]`` (numpy or torch), as ``components.runtime.media`` decodes them.
The models' own preprocessors (transformers' ``CLIPImageProcessor``, ``BitImageProcessor``) work on PIL images;
this module does the same steps in torch on a whole batch: resize the shorter side, centre crop, scale to
[0, 1], normalise. Note: torch's antialiased bicubic resize differs from PIL's by a few 1e-3 per pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "as_batch",
    "preprocess",
    "sample_by_rate",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's pixel statistics
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # DINOv2's preprocessor
IMAGENET_STD = (0.229, 0.224, 0.225)


def as_batch(frames: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 RGB frames ``[N, H, W, 3]`` (or a list of ``[H, W, 3]``) -> float ``[N, 3, H, W]`` in [0, 1]."""
    if isinstance(frames, (list, tuple)):
        frames = np.stack(frames)
    if isinstance(frames, np.ndarray) and not frames.flags.writeable:
        frames = (
            frames.copy()
        )  # frames decoded from a buffer are read-only; torch wants to own writable memory
    x = torch.as_tensor(frames)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be RGB [N, H, W, 3], got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 (0..255), got {x.dtype}")
    return x.permute(0, 3, 1, 2).float() / 255.0


def preprocess(
    pixels: torch.Tensor,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    resize_to: int | None = None,
) -> torch.Tensor:
    """``[N, 3, H, W]`` in [0, 1] -> resized (shorter side ``resize_to``, default ``size``), centre-cropped to
    ``size`` x ``size``, normalised with ``mean`` / ``std``."""
    short = resize_to or size
    h, w = pixels.shape[-2:]
    scale = short / min(h, w)
    nh, nw = max(short, int(h * scale)), max(short, int(w * scale))  # truncated, as transformers sizes it
    x = F.interpolate(pixels, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top : top + size, left : left + size].clamp(0.0, 1.0)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def sample_by_rate(num_frames: int, fps: float, target_fps: float) -> list[int]:
    """Indices of frames taken at about ``target_fps`` from a video at ``fps`` (every ``round(fps/target)``-th,
    at least every frame), as VBench samples frames for the dynamic degree."""
    if num_frames <= 0:
        return []
    step = max(1, round(fps / target_fps))
    return list(range(0, num_frames, step))
