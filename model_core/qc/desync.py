"""DeSync: the audio-video offset Synchformer predicts, in seconds, as HunyuanVideo-Foley reports it.

Recipe of Tencent-Hunyuan/HunyuanVideo-Foley@df7b005b (`hunyuanvideo_foley/models/synchformer/
compute_desync_score.py` with `data_transforms.py`): the video at 25 fps with its short side scaled to 256 and a
centre crop of 224 (the tiny model: the same ratio of its own size), frames to [0, 1] and normalised with 0.5;
the audio mono at 16 kHz. One window is a 5 s crop starting at `start` (the release's `v_start_i_sec`, default 0,
offset 0); inside it `GenerateMultipleSegments` takes 14 segments of 16 frames with stride 8 from frame 2 (the
centred 4.8 s) and the matching 10240-sample segments with stride 5120 from sample 1280. The classifier gives 21
logits; the offset is the grid value (-2.0 ... 2.0 s, step 0.2) of the most probable class, and the window's
DeSync is its absolute value. The release scores one window per video; more `starts` average the windows'
DeSync.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model_core.audio.foley.synchformer import SEGMENT, STRIDE
from model_core.audio.foley.synchformer_audio import (
    AUDIO_SEGMENT,
    AUDIO_STRIDE,
    SAMPLE_RATE,
    normalized_spectrogram,
)
from model_core.audio.foley.synchformer_sync import SyncClassifier, offset_grid

__all__ = [
    "CROP_SECONDS",
    "SYNC_FPS",
    "DeSync",
    "WindowOffset",
    "desync_seconds",
    "measure_desync",
    "sync_frames",
]

SYNC_FPS = 25
CROP_SECONDS = 5.0  # `TemporalCropAndOffset(crop_len_sec=5)`
_CROP_FRAMES = int(CROP_SECONDS * SYNC_FPS)
_RESIZE_RATIO = 256 / 224  # the release re-encodes to a short side of 256, then centre-crops 224


@dataclass(frozen=True)
class WindowOffset:
    start: float  # seconds into the video
    offset: float  # seconds; positive: the audio runs ahead of the picture
    probability: float  # of the predicted class


@dataclass(frozen=True)
class DeSync:
    seconds: float  # mean |offset| over the windows
    windows: list[WindowOffset]


def sync_frames(frames: np.ndarray | Tensor, size: int) -> Tensor:
    """uint8 `[T, H, W, 3]` -> `[T, 3, size, size]`: short side to size * 256 / 224 (bicubic), centre crop,
    [0, 1], normalised with mean and std 0.5."""
    x = torch.as_tensor(np.asarray(frames)).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    short = round(size * _RESIZE_RATIO)
    scale = short / min(h, w)
    new = (max(short, round(h * scale)), max(short, round(w * scale)))
    x = F.interpolate(x, size=new, mode="bicubic", antialias=True, align_corners=False).clamp(0, 255)
    top, left = round((new[0] - size) / 2), round((new[1] - size) / 2)
    x = x[..., top : top + size, left : left + size] / 255.0
    return (x - 0.5) / 0.5


def _frame_index(count: int, fps: float) -> np.ndarray:
    """Source frame of each of `count` frames at 25 fps: the nearest in time (ffmpeg's fps filter rounding)."""
    return np.floor(np.arange(count) * fps / SYNC_FPS + 0.5).astype(int)


def measure_desync(
    model: SyncClassifier,
    frames: np.ndarray,
    audio: np.ndarray,
    *,
    fps: float,
    sample_rate: int = SAMPLE_RATE,
    starts: Sequence[float] = (0.0,),
) -> DeSync:
    """DeSync of a video: uint8 frames `[T, H, W, 3]` at `fps` and mono `audio` at 16 kHz."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(
            f"DeSync reads audio at {SAMPLE_RATE} Hz, got {sample_rate}; decode it at {SAMPLE_RATE}"
        )
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got shape {tuple(frames.shape)}")
    if not starts:
        raise ValueError("starts is empty: give at least one window start (the release uses 0.0)")
    config = model.config
    n25 = int(len(frames) / fps * SYNC_FPS)
    seconds = min(n25 / SYNC_FPS, len(audio) / SAMPLE_RATE)
    source = _frame_index(n25, fps)
    lead_v = (_CROP_FRAMES - (config.segments * STRIDE + STRIDE)) // 2  # 2: the 4.8 s centred in the 5 s crop
    lead_a = int(lead_v / SYNC_FPS * SAMPLE_RATE)
    videos, specs = [], []
    for start in starts:
        if start < 0 or start + CROP_SECONDS > seconds + 1e-9:
            raise ValueError(
                f"a DeSync window is {CROP_SECONDS:g} s from its start: start {start:g} s does not fit the "
                f"{seconds:.2f} s of video and audio"
            )
        v0 = int(start * SYNC_FPS) + lead_v
        a0 = int(int(start * SYNC_FPS) / SYNC_FPS * SAMPLE_RATE) + lead_a
        picks = [source[v0 + s * STRIDE : v0 + s * STRIDE + SEGMENT] for s in range(config.segments)]
        clip = sync_frames(frames[np.concatenate(picks)], config.video.image_size)
        videos.append(clip.reshape(config.segments, SEGMENT, *clip.shape[1:]))
        wave = torch.as_tensor(np.asarray(audio, dtype=np.float32))
        segs = torch.stack(
            [
                wave[a0 + s * AUDIO_STRIDE : a0 + s * AUDIO_STRIDE + AUDIO_SEGMENT]
                for s in range(config.segments)
            ]
        )
        specs.append(normalized_spectrogram(segs[None])[0])
    device = next(model.parameters()).device
    video = torch.stack(videos).to(device)
    spec = torch.stack(specs).to(device)
    # the release runs the classifier under fp16 autocast on a GPU
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
        logits = model(video, spec).float()
    probs = logits.softmax(-1)
    best = probs.argmax(-1)
    grid = offset_grid(config)
    windows = [
        WindowOffset(float(start), round(float(grid[i]), 4), float(probs[w, i]))
        for w, (start, i) in enumerate(zip(starts, best.tolist(), strict=True))
    ]
    return DeSync(sum(abs(w.offset) for w in windows) / len(windows), windows)


def desync_seconds(
    frames: np.ndarray,
    audio: np.ndarray,
    model: SyncClassifier,
    *,
    fps: float,
    sample_rate: int = SAMPLE_RATE,
    starts: Sequence[float] = (0.0,),
) -> float:
    """DeSync in seconds (the mean over `starts` of |predicted offset|); see `measure_desync`."""
    return measure_desync(model, frames, audio, fps=fps, sample_rate=sample_rate, starts=starts).seconds
