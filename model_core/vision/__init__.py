"""Image and video preprocessing for conditioning: identity images, LLaVA pixels, edit video + mask."""

from model_core.vision.edit_video import (
    EditVideo,
    EditVideoError,
    binarize_mask,
    edit_pixels,
    edit_video_condition,
    load_edit_video,
    rgb_to_gray,
)
from model_core.vision.identity import identity_latents, identity_pixels, white_identity_latents
from model_core.vision.image import (
    CLIP_MEAN,
    CLIP_STD,
    llava_pixels,
    pad_to_size,
    resize_bilinear,
    to_clip_pixels,
    to_unit_range,
    white_image,
)
from model_core.vision.latents import (
    OFFICIAL_TILING,
    VAE_SCALING_FACTOR,
    LatentDistribution,
    Tiling,
    VideoEncoder,
    encode_sample,
    official_tiling,
    resolve_tiling,
)
from model_core.vision.morphology import ellipse_kernel, expand_mask

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "OFFICIAL_TILING",
    "VAE_SCALING_FACTOR",
    "EditVideo",
    "EditVideoError",
    "LatentDistribution",
    "Tiling",
    "VideoEncoder",
    "binarize_mask",
    "edit_pixels",
    "edit_video_condition",
    "ellipse_kernel",
    "encode_sample",
    "expand_mask",
    "identity_latents",
    "identity_pixels",
    "llava_pixels",
    "load_edit_video",
    "official_tiling",
    "pad_to_size",
    "resize_bilinear",
    "resolve_tiling",
    "rgb_to_gray",
    "to_clip_pixels",
    "to_unit_range",
    "white_identity_latents",
    "white_image",
]
