"""DINO-Sim: the subject's similarity to its reference image with DINOv2 features (``transformers.Dinov2Model``).

Recipe here: the cosine similarity of the CLS embedding (the model's ``pooler_output``: the final LayerNorm's
CLS token) of the reference image and of each sampled frame, averaged over the frames. Images are
preprocessed as DINOv2's ``BitImageProcessor`` does (shorter side 256, centre crop 224, ImageNet mean and std).
HunyuanCustom §5.1 segments the human subject in both images first; adrender has no segmenter and uses boxes:

- a human subject (a face in the reference image): the head-and-shoulders box of the largest face
  (:func:`head_and_shoulders`) in the reference and in each frame with a face;
- a product or other subject (no face): the reference's foreground box (:func:`foreground_box`: its non-white
  pixels, product shots being white-backed) against the whole frame.

Boxes keep background that a segmentation mask removes, so the numbers are not on the paper's scale (0.593 for
HunyuanCustom); compare them within this recipe.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model_core.qc.frames import IMAGENET_MEAN, IMAGENET_STD, preprocess

__all__ = [
    "DinoScorer",
    "crop_box",
    "crop_embeddings",
    "dino_similarity",
    "foreground_box",
    "head_and_shoulders",
]

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1 / y1 exclusive

CROP = 224  # BitImageProcessor crop_size of the released DINOv2 models
RESIZE = 256  # its shortest_edge


class DinoScorer:
    """Unit-norm DINOv2 CLS embeddings of images.

    Args:
        model: a ``transformers.Dinov2Model``.
        batch_size: images per forward.

    The released models (``image_size`` 518) take 224-pixel crops; a tiny test model with a smaller
    ``image_size`` takes crops of its own size (resize in the same 256:224 ratio).
    """

    def __init__(self, model: Any, *, batch_size: int = 32) -> None:
        self.model = model.eval()
        self.batch_size = batch_size
        self.crop = min(CROP, int(model.config.image_size))
        self.resize = round(self.crop * RESIZE / CROP)

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32
    ) -> DinoScorer:
        """Load a DINOv2 folder (``config.json`` + weights) from disk only."""
        from transformers import Dinov2Model

        model = Dinov2Model.from_pretrained(folder, local_files_only=True, dtype=dtype)
        # transformers wraps .to with functools.wraps, whose stub hides the bound self
        return cls(model.to(device))  # type: ignore[arg-type]

    def pixel_values(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [0, 1] -> the model's input."""
        return preprocess(pixels, self.crop, IMAGENET_MEAN, IMAGENET_STD, resize_to=self.resize)

    @torch.no_grad()
    def embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unit-norm CLS embeddings ``[N, D]`` of images ``[N, 3, H, W]`` in [0, 1]."""
        param = next(self.model.parameters())
        out = []
        for start in range(0, pixels.shape[0], self.batch_size):
            x = self.pixel_values(pixels[start : start + self.batch_size]).to(param.device, param.dtype)
            out.append(self.model(pixel_values=x).pooler_output.float())
        return F.normalize(torch.cat(out), dim=-1)


def head_and_shoulders(face: tuple[float, float, float, float], height: int, width: int) -> Box:
    """The head-and-shoulders box of a face box ``x1, y1, x2, y2`` in an image of ``height x width``: three face
    widths wide, from half a face height above the face to one and a half below it (hair to shoulders), clipped."""
    x1, y1, x2, y2 = face
    w, h, cx = x2 - x1, y2 - y1, (x1 + x2) / 2
    box = (round(cx - 1.5 * w), round(y1 - 0.5 * h), round(cx + 1.5 * w), round(y2 + 1.5 * h))
    return _clip(box, height, width)


def foreground_box(image: np.ndarray, white: int = 245) -> Box:
    """The box of the pixels of an RGB uint8 image ``H x W x 3`` that are not white (any channel below ``white``);
    the whole image when every pixel is white."""
    h, w = image.shape[:2]
    mask = np.any(image < white, axis=-1)
    rows, cols = np.flatnonzero(np.any(mask, axis=1)), np.flatnonzero(np.any(mask, axis=0))
    if rows.size == 0:
        return (0, 0, w, h)
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def _clip(box: Box, height: int, width: int) -> Box:
    x0, y0, x1, y1 = box
    x0, y0 = min(max(0, x0), width - 1), min(max(0, y0), height - 1)
    return (x0, y0, max(x0 + 1, min(width, x1)), max(y0 + 1, min(height, y1)))


def crop_box(pixels: torch.Tensor, box: Box) -> torch.Tensor:
    """``pixels [3, H, W]`` cut to ``box``."""
    x0, y0, x1, y1 = box
    return pixels[:, y0:y1, x0:x1]


def crop_embeddings(scorer: DinoScorer, crops: Sequence[torch.Tensor]) -> torch.Tensor:
    """Unit-norm embeddings ``[N, D]`` of crops ``[3, h, w]`` of different sizes (each resized and centre-cropped
    on its own, then run in batches)."""
    if not crops:
        raise ValueError("no crops to embed")
    param = next(scorer.model.parameters())
    inputs = torch.cat([scorer.pixel_values(c[None].float()) for c in crops])
    out = []
    with torch.no_grad():
        for start in range(0, inputs.shape[0], scorer.batch_size):
            x = inputs[start : start + scorer.batch_size].to(param.device, param.dtype)
            out.append(scorer.model(pixel_values=x).pooler_output.float())
    return F.normalize(torch.cat(out), dim=-1)


def dino_similarity(reference: torch.Tensor, frames: torch.Tensor) -> float:
    """DINO-Sim: the mean cosine of unit-norm frame embeddings ``[N, D]`` with the reference's ``[D]``."""
    return float((frames @ reference.reshape(-1)).mean())
