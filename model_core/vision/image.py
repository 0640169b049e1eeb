"""Image arithmetic shared by the identity, LLaVA and edit-video paths: aspect-keeping resize with a white
centre pad, and the two pixel normalisations (CLIP mean/std for the LLaVA vision tower, [-1, 1] for the VAE).

Images are RGB uint8 numpy arrays [H, W, 3] at the edges; tensors inside.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# openai/clip-vit-large-patch14-336 preprocessing, which the LLaVA vision tower was trained with.
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.4082107)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
WHITE = 255


def _check_rgb(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image must be RGB uint8 [H, W, 3], got dtype {image.dtype} shape {tuple(image.shape)}; "
            "decode it with model_core.io.read_image"
        )


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of RGB uint8 [..., H, W, 3] (one image or a stack of frames), half-pixel centres and no
    antialiasing (OpenCV INTER_LINEAR's sampling), rounded back to uint8."""
    if image.ndim < 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected RGB uint8 [..., H, W, 3], got dtype {image.dtype} shape {tuple(image.shape)}"
        )
    if (height, width) == image.shape[-3:-1]:
        return image.copy()
    lead = image.shape[:-3]
    x = (
        torch.from_numpy(np.ascontiguousarray(image))
        .reshape(-1, *image.shape[-3:])
        .permute(0, 3, 1, 2)
        .float()
    )
    y = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
    out = y.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()
    return out.reshape(*lead, height, width, 3)


def pad_to_size(image: np.ndarray, height: int, width: int, fill: int = WHITE) -> np.ndarray:
    """Resize `image` to fit inside height x width keeping its aspect ratio, then centre it on a `fill` canvas.

    The side that limits the scale is set exactly to the target; the other is `int(other * target / limiting)`,
    truncated, as the release does. Odd padding puts the extra pixel on the bottom/right.
    """
    _check_rgb(image)
    if height <= 0 or width <= 0:
        raise ValueError(f"target size must be positive, got {height}x{width}")
    h, w = image.shape[:2]
    if width / w > height / h:  # height limits
        new_h = height
        new_w = min(width, int(w / h * new_h))
    else:  # width limits
        new_w = width
        new_h = min(height, int(h / w * new_w))
    resized = resize_bilinear(image, max(new_h, 1), max(new_w, 1))
    canvas = np.full((height, width, 3), fill, dtype=np.uint8)
    top = (height - resized.shape[0]) // 2
    left = (width - resized.shape[1]) // 2
    canvas[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
    return canvas


def to_clip_pixels(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 [H, W, 3] -> float32 [3, H, W] normalised with the CLIP mean and std."""
    _check_rgb(image)
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (x - mean) / std


def to_unit_range(pixels: np.ndarray) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float32 [..., 3, H, W] in [-1, 1] (x / 127.5 - 1), the VAE's input range."""
    if pixels.dtype != np.uint8 or pixels.shape[-1] != 3:
        raise ValueError(
            f"pixels must be uint8 [..., H, W, 3], got dtype {pixels.dtype} shape {pixels.shape}"
        )
    x = torch.from_numpy(np.ascontiguousarray(pixels)).float() / 127.5 - 1.0
    return x.movedim(-1, -3)


def llava_pixels(image: np.ndarray, size: int = 336) -> torch.Tensor:
    """The LLaVA vision-tower input of one identity image: white pad to square, size x size, CLIP mean/std.
    Returns float32 [3, size, size]."""
    return to_clip_pixels(pad_to_size(image, size, size))


def white_image(height: int, width: int) -> np.ndarray:
    """An all-white RGB uint8 image, the unconditional identity input."""
    return np.full((height, width, 3), WHITE, dtype=np.uint8)
