"""CLIP-B-T (text-video alignment) and temporal consistency with CLIP ViT-B (``transformers.CLIPModel``).

- CLIP-B-T, as HunyuanCustom §5.1 reports it: the cosine similarity of CLIP ViT-B/32's embedding of the
  prompt and of each sampled frame, averaged over the frames (a plain cosine in [-1, 1], not CLIPScore's
  ``2.5 * max(cos, 0)``); HunyuanCustom's own average is 0.306.
- Temporal consistency, VBench's consistency rule on CLIP ViT-B image embeddings (its background-consistency
  dimension uses CLIP, subject consistency DINO): for every frame ``i > 0``,
  ``(max(0, cos(f_i, f_{i-1})) + max(0, cos(f_i, f_0))) / 2``, averaged over the frames. Identical frames give
  1.0; HunyuanCustom's own average is 0.958.

:class:`ClipScorer` wraps a loaded ``CLIPModel`` and its tokenizer; the image preprocessing is CLIP's
(shorter side to the tower's input size, centre crop, OpenAI's mean and std; see ``frames.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from model_core.qc.frames import CLIP_MEAN, CLIP_STD, preprocess

__all__ = ["ClipScorer", "clip_text_score", "consistency"]


def _tensor(out: Any) -> torch.Tensor:
    """transformers 5 returns a model output from ``get_*_features``; its ``pooler_output`` is the projection."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipScorer:
    """Unit-norm CLIP embeddings of frames and texts.

    Args:
        model: a ``transformers.CLIPModel`` (vision and text towers with their projections).
        tokenizer: its tokenizer (prompts are cut at the text tower's 77 positions).
        batch_size: frames per forward.
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 32) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.image_size = int(model.config.vision_config.image_size)
        self.max_text = int(model.config.text_config.max_position_embeddings)

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32
    ) -> ClipScorer:
        """Load a CLIP folder (``config.json``, weights, tokenizer) from disk only."""
        from transformers import AutoTokenizer, CLIPModel

        model = CLIPModel.from_pretrained(folder, local_files_only=True, dtype=dtype)
        # transformers wraps .to with functools.wraps, whose stub hides the bound self
        model = model.to(device)  # type: ignore[arg-type]
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        return cls(model, tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def pixel_values(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [0, 1] -> the vision tower's input."""
        return preprocess(pixels, self.image_size, CLIP_MEAN, CLIP_STD)

    @torch.no_grad()
    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings ``[N, D]`` of frames ``[N, 3, H, W]`` in [0, 1], in batches."""
        dtype = next(self.model.parameters()).dtype
        out = []
        for start in range(0, pixels.shape[0], self.batch_size):
            x = self.pixel_values(pixels[start : start + self.batch_size]).to(self.device, dtype)
            out.append(_tensor(self.model.get_image_features(pixel_values=x)).float())
        return F.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm embeddings ``[T, D]`` of texts."""
        tokens = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_text, return_tensors="pt"
        ).to(self.device)
        feats = self.model.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        )
        return F.normalize(_tensor(feats).float(), dim=-1)


def clip_text_score(image_embeddings: torch.Tensor, text_embedding: torch.Tensor) -> float:
    """CLIP-B-T: the mean cosine of each frame's embedding ``[N, D]`` with the prompt's ``[D]`` (or ``[1, D]``)."""
    return float((image_embeddings @ text_embedding.reshape(-1)).mean())


def consistency(embeddings: torch.Tensor) -> float:
    """VBench's consistency of unit-norm frame embeddings ``[N, D]``: the mean over frames ``i > 0`` of
    ``(max(0, cos(f_i, f_{i-1})) + max(0, cos(f_i, f_0))) / 2``; 1.0 for a single frame."""
    if embeddings.shape[0] < 2:
        return 1.0
    prev = (embeddings[1:] * embeddings[:-1]).sum(-1).clamp(min=0)
    first = (embeddings[1:] @ embeddings[0]).clamp(min=0)
    return float(((prev + first) / 2).mean())
