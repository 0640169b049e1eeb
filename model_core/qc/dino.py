"""DINO-Sim: the subject's similarity to its reference image with DINOv2 features (``transformers.Dinov2Model``).

Recipe here: the cosine similarity of the CLS embedding (the model's ``pooler_output``: the final LayerNorm's
CLS token) of the reference image and of each sampled frame, averaged over the frames. Images are
preprocessed as DINOv2's ``BitImageProcessor`` does (shorter side 256, centre crop 224, ImageNet mean and std).
HunyuanCustom §5.1 segments the human subject in both images first; adrender has no segmenter, so its number
compares whole frames with the whole reference image (``region="full-frame"``), or the subject's box when the
caller crops one. Its scale is therefore not the paper's (0.593 for HunyuanCustom).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from model_core.qc.frames import IMAGENET_MEAN, IMAGENET_STD, preprocess

__all__ = ["DinoScorer", "dino_similarity"]

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


def dino_similarity(reference: torch.Tensor, frames: torch.Tensor) -> float:
    """DINO-Sim: the mean cosine of unit-norm frame embeddings ``[N, D]`` with the reference's ``[D]``."""
    return float((frames @ reference.reshape(-1)).mean())
