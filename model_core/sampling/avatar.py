"""HunyuanVideo-Avatar's sampling rules: the two-phase CFG schedule, the sliding window over long audio, the
face mask and the video length a voice needs.

As Tencent-Hunyuan/HunyuanVideo-Avatar@fd59436a does it (hymm_sp/diffusion/pipelines/pipeline_hunyuan_video_audio.py,
hymm_sp/sample_inference_audio.py, hymm_sp/data_kits/audio_preprocessor.py):

* CFG, steps 0-9: w = (1 - i/N)(cfg - 2) + 2, the negative branch is the negative prompt with zero audio, and the
  face mask is scaled by 0.6 in both branches. Steps 10..N-1: w = (1 - i/N)(6.5 - 3.5) + 3.5, the negative branch
  keeps the positive prompt and drops only the audio, face mask x 1.
* Long audio: the video is sampled as windows of 33 latent frames (129 video frames, what the model was trained
  on) that wrap around the end of the video; each step moves the windows' start back by 10 frames, and frames
  that two windows cover get the mean of their predictions. A voice of n frames (25 fps) takes
  (n' // 128 + 1) * 32 + 1 latent frames, n' being n plus the release's 5 frames of zero padding; up to 129
  frames it is one window of 33.
* Face mask: the largest detected face's box enlarged 3x around its centre, 1 inside, 0 outside, at the
  image's size, then bilinearly resized to the latent size (the DiT nearest-resizes it to its token grid).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model_core.sampling.conditioning import BranchInputs, Conditioning
from model_core.sampling.options import SamplingOptions
from model_core.sampling.windows import (
    AVATAR_WINDOW,
    AVATAR_WINDOW_SHIFT,
    avatar_audio_frames,
    avatar_latent_frames,
    avatar_windows,
    window_audio_indices,
)
from model_core.vision.image import resize_bilinear

__all__ = [
    "AVATAR_FACE_AREA",
    "AVATAR_PHASE_STEPS",
    "AVATAR_WINDOW",
    "AVATAR_WINDOW_SHIFT",
    "avatar_audio_frames",
    "avatar_branches",
    "avatar_cfg_scale",
    "avatar_face_mask",
    "avatar_latent_frames",
    "avatar_phase",
    "avatar_reference_pixels",
    "avatar_windows",
    "cover_crop",
    "pad_avatar_audio",
    "window_audio_indices",
]

AVATAR_PHASE_STEPS = 10  # steps of the first CFG phase
AVATAR_EARLY_FACE_SCALE = 0.6  # face-mask scale of the first phase (both branches)
AVATAR_LATE_CFG = (6.5, 3.5)  # the second phase's CFG scale goes from 6.5 (step 0) towards 3.5 (step N)
AVATAR_FACE_AREA = 3.0  # the detected face box is enlarged this many times (width and height)


def avatar_phase(step: int) -> int:
    """0 for the first CFG phase (steps 0-9), 1 for the second."""
    return 0 if step < AVATAR_PHASE_STEPS else 1


def avatar_cfg_scale(step: int, num_steps: int, cfg_scale: float) -> float:
    """The CFG scale of `step`: (1 - i/N)(cfg - 2) + 2 in the first phase, (1 - i/N)(6.5 - 3.5) + 3.5 after."""
    if not 0 <= step < num_steps:
        raise ValueError(f"step {step} is outside 0..{num_steps - 1}")
    if avatar_phase(step) == 0:
        return (1 - step / num_steps) * (cfg_scale - 2) + 2
    high, low = AVATAR_LATE_CFG
    return (1 - step / num_steps) * (high - low) + low


def _scaled_mask(inputs: BranchInputs, scale: float) -> BranchInputs:
    if scale == 1.0:
        return inputs
    mask = inputs.face_mask
    if mask is None:  # no mask is the whole frame: the scale still applies
        mask = inputs.text_pooled.new_ones(inputs.batch, 1, 1, 1, 1)
    return dataclasses.replace(inputs, face_mask=mask * scale)


def avatar_branches(conditioning: Conditioning, options: SamplingOptions, step: int) -> list[BranchInputs]:
    """The model batch of `step`: [cond] without CFG, else [uncond, cond] of the step's phase."""
    cond = conditioning.cond
    if not options.uses_cfg:
        return [cond]
    if avatar_phase(step) == 0:
        if conditioning.uncond is None:
            raise ValueError(
                f"cfg_scale {options.cfg_scale} > 1 needs Conditioning.uncond (the negative prompt, zero audio)"
            )
        return [
            _scaled_mask(conditioning.uncond, AVATAR_EARLY_FACE_SCALE),
            _scaled_mask(cond, AVATAR_EARLY_FACE_SCALE),
        ]
    audio = cond.audio_states
    silent = dataclasses.replace(cond, audio_states=None if audio is None else torch.zeros_like(audio))
    return [silent, cond]


def pad_avatar_audio(features: Tensor, latent_frames: int) -> Tensor:
    """`[B, n, ...]` Whisper features per video frame, zero-padded to `avatar_audio_frames(latent_frames)`."""
    want = avatar_audio_frames(latent_frames)
    have = features.shape[1]
    if have > want:
        raise ValueError(
            f"{have} audio frames are longer than the {want} that {latent_frames} latent frames take; "
            "sample avatar_latent_frames(audio frames) latent frames"
        )
    pad = features.new_zeros(features.shape[0], want - have, *features.shape[2:])
    return torch.cat([features, pad], dim=1)


def avatar_face_mask(
    box: tuple[float, float, float, float] | None,
    image_size: tuple[int, int],
    latent_size: tuple[int, int],
    *,
    area: float = AVATAR_FACE_AREA,
) -> Tensor:
    """`[1, 1, 1, h, w]` float face mask of a reference image of `image_size` (H, W) for latents `(h, w)`.

    `box` is the face's (x1, y1, x2, y2) in image pixels, None for no face (the release then uses the whole
    image). Its width and height are multiplied by `area` around the box's centre (integer pixel centre, halves
    floored as the release does), clipped to the image.
    """
    height, width = image_size
    mask = torch.zeros(height, width)
    if box is None:
        mask.fill_(1.0)
    else:
        x1, y1, x2, y2 = (float(v) for v in box)
        ww, hh = (x2 - x1) * area, (y2 - y1) * area
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        left, top = max(cx - ww // 2, 0), max(cy - hh // 2, 0)
        right, bottom = min(cx + ww // 2, width), min(cy + hh // 2, height)
        mask[int(top) : int(bottom), int(left) : int(right)] = 1.0
    resized = F.interpolate(mask[None, None], size=latent_size, mode="bilinear")
    return resized.unsqueeze(2)  # [1, 1, 1, h, w]


def cover_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """RGB uint8 `image` scaled (bilinear) to cover height x width, keeping its aspect, and centre-cropped."""
    h, w = image.shape[:2]
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    resized = resize_bilinear(image, new_h, new_w)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return resized[top : top + height, left : left + width]


def avatar_reference_pixels(image: np.ndarray, frames: int = 4 * (AVATAR_WINDOW - 1) + 1) -> Tensor:
    """The presenter image (RGB uint8, already at the video size) repeated over `frames` video frames (one window,
    129) as the VAE input `[1, 3, F, H, W]` in [-1, 1]: encoded, it is the `ref_latents` of every window."""
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0
    return pixels[None, :, None].expand(1, 3, frames, *pixels.shape[1:]).contiguous()
