"""Edit-video conditioning: a source video and a mask video become the 32-channel `bg_latents` of the
editing checkpoint (VAE(masked video) ++ VAE(mask as 3 channels), both scaled VAE samples).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from model_core.io import probe_video, read_video_frames
from model_core.vision.image import resize_bilinear, to_unit_range
from model_core.vision.latents import (
    OFFICIAL_TILING,
    VAE_SCALING_FACTOR,
    Tiling,
    VideoEncoder,
    encode_sample,
)
from model_core.vision.morphology import expand_mask

MASK_THRESHOLD = 127.5
# the VAE compresses 8x in space and the DiT patchifies 2x2, so pixel sizes must divide by 16
SIZE_MULTIPLE = 16


class EditVideoError(ValueError):
    """The edit video or its mask does not fit the job (size, frame count) or each other."""


@dataclass(frozen=True)
class EditVideo:
    """A decoded edit video and its processed mask (True = region to regenerate)."""

    frames: np.ndarray  # [F, H, W, 3] uint8 RGB
    mask: torch.Tensor  # [F, H, W] bool, thresholded and expanded

    @property
    def n_frames(self) -> int:
        """Frames of the video (4k+1)."""
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def rgb_to_gray(frames: np.ndarray) -> np.ndarray:
    """Gray levels of RGB uint8 mask frames [..., 3] as the release computes them, uint8 [...].

    The release reads RGB frames (decord) and converts them with `cv2.cvtColor(mask, cv2.COLOR_BGR2GRAY)`,
    so OpenCV's BT.601 14-bit fixed-point weights land on swapped channels:
    (R * 1868 + G * 9617 + B * 4899 + 8192) >> 14. Gray and black-and-white masks are unaffected.
    """
    if frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise EditVideoError(
            f"mask frames must be RGB uint8 [..., 3], got dtype {frames.dtype} shape {tuple(frames.shape)}"
        )
    f = frames.astype(np.int32)
    # Note: R and B swapped relative to BT.601 on RGB; the release applies BGR2GRAY to RGB frames
    return ((f[..., 0] * 1868 + f[..., 1] * 9617 + f[..., 2] * 4899 + 8192) >> 14).astype(np.uint8)


def binarize_mask(mask_frames: np.ndarray, threshold: float = MASK_THRESHOLD) -> torch.Tensor:
    """Mask-video frames RGB uint8 [F, H, W, 3] -> bool [F, H, W]: gray (`rgb_to_gray`) > threshold.

    The release expands the gray mask before thresholding it; a flat dilation or erosion is a running max or
    min, which commutes with a threshold, so thresholding first and expanding the binary mask is the same.
    """
    return torch.from_numpy(rgb_to_gray(mask_frames) > threshold)


def edit_pixels(frames: np.ndarray, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two VAE inputs, each float32 [1, 3, F, H, W] in [-1, 1]:
    the masked video (frame * (mask == 0): the region to regenerate becomes black) and the mask itself as a
    3-channel 0/255 video."""
    if mask.shape != frames.shape[:3]:
        raise EditVideoError(
            f"mask shape {tuple(mask.shape)} must equal the frames' [F, H, W] {frames.shape[:3]}"
        )
    keep = (~mask).numpy()[..., None]
    masked = (frames * keep).astype(np.uint8)
    mask_rgb = np.repeat(mask.numpy()[..., None].astype(np.uint8) * 255, 3, axis=-1)
    # [F, 3, H, W] -> [1, 3, F, H, W]
    return to_unit_range(masked).transpose(0, 1)[None], to_unit_range(mask_rgb).transpose(0, 1)[None]


def load_edit_video(
    video_path: str | os.PathLike[str],
    mask_path: str | os.PathLike[str],
    expand_scale: int = 5,
    expected_frames: int | None = None,
    expected_size: tuple[int, int] | None = None,
    conform: bool = False,
) -> EditVideo:
    """Read a source video and its mask video through ffmpeg at their own size, check them, and build the mask.

    Size and frame count come from the video, and the mask video must match them. With `conform=False` (the
    release's behaviour) they must also equal the job's `expected_frames` and `expected_size` (height, width)
    when given. With `conform=True` both videos are resized (bilinear, aspect not kept) to `expected_size` and
    cut to their first `expected_frames` frames; a video shorter than the job is still an error. The result
    must be 4k+1 frames (the VAE's causal time compression) and multiples of 16 pixels. The mask is
    thresholded at 127.5 and dilated (expand_scale > 0) or eroded (< 0) by an |expand_scale| elliptic
    kernel, 3 iterations.
    """
    info = probe_video(video_path)
    mask_info = probe_video(mask_path)
    if (info.height, info.width) != (mask_info.height, mask_info.width):
        raise EditVideoError(
            f"mask video is {mask_info.height}x{mask_info.width} but the source video is "
            f"{info.height}x{info.width}; export the mask at the video's size"
        )
    size = (info.height, info.width)
    if expected_size is not None and tuple(expected_size) != size:
        if not conform:
            raise EditVideoError(
                f"the job asks for {expected_size[0]}x{expected_size[1]} but the edit video is "
                f"{info.height}x{info.width}; set the job's size to the video's, resize the video, or conform"
            )
        size = (int(expected_size[0]), int(expected_size[1]))
    if size[0] % SIZE_MULTIPLE or size[1] % SIZE_MULTIPLE:
        raise EditVideoError(
            f"edit video size {size[0]}x{size[1]} must be a multiple of {SIZE_MULTIPLE} on both sides"
        )
    frames = read_video_frames(video_path)
    mask_frames = read_video_frames(mask_path)
    n = frames.shape[0]
    if mask_frames.shape[0] != n:
        raise EditVideoError(f"mask video has {mask_frames.shape[0]} frames but the source video has {n}")
    if expected_frames is not None and expected_frames != n:
        if not conform or expected_frames > n:
            raise EditVideoError(
                f"the job asks for {expected_frames} frames but the edit video has {n}; "
                "set the job's frame count to the video's or trim the video"
            )
        frames, mask_frames, n = frames[:expected_frames], mask_frames[:expected_frames], expected_frames
    if (n - 1) % 4:
        raise EditVideoError(f"edit video has {n} frames; it must have 4k+1 (e.g. {4 * ((n - 1) // 4) + 1})")
    if size != (info.height, info.width):
        frames = resize_bilinear(frames, *size)
        mask_frames = resize_bilinear(mask_frames, *size)  # resized grey levels, thresholded below
    mask = expand_mask(binarize_mask(mask_frames), expand_scale)
    return EditVideo(frames=frames, mask=mask)


def edit_video_condition(
    vae: VideoEncoder,
    edit: EditVideo,
    generator: torch.Generator | None = None,
    scaling_factor: float = VAE_SCALING_FACTOR,
    tiling: Tiling = OFFICIAL_TILING,
) -> torch.Tensor:
    """`bg_latents` [1, 2C, T, H/8, W/8]: scaled VAE samples of the masked video and of the mask, concatenated
    on channels (masked video first), both tiled as the release (`model_core.vision.latents`)."""
    masked, mask_video = edit_pixels(edit.frames, edit.mask)
    video_latents = encode_sample(vae, masked, generator, scaling_factor, tiling)
    mask_latents = encode_sample(vae, mask_video, generator, scaling_factor, tiling)
    return torch.cat([video_latents, mask_latents], dim=1)
