"""CLIP-L text encoder: the pooled prompt embedding that feeds the DiT's `vector_in`."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

CLIP_MAX_LENGTH = 77


class ClipPooledEncoder:
    """`CLIPTextModel` pooler_output [B, hidden] of the plain prompt (no template), 77 tokens, truncated.

    Args:
        model: a `CLIPTextModel`.
        tokenizer: its tokenizer.
        max_length: tokenizer max length (77 for CLIP-L).
    """

    def __init__(self, model: nn.Module, tokenizer: object, max_length: int = CLIP_MAX_LENGTH) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        dtype: torch.dtype = torch.float16,
        device: torch.device | str = "cpu",
    ) -> ClipPooledEncoder:
        """Load a released `openai/clip-vit-large-patch14` folder (text tower only) from local files."""
        from transformers import AutoTokenizer, CLIPTextModel

        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = CLIPTextModel.from_pretrained(path, local_files_only=True, dtype=dtype)
        # transformers wraps .to with functools.wraps, whose stub hides the bound self
        model = model.to(device)  # type: ignore[arg-type]
        return cls(model, tokenizer)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Pooled embeddings [B, hidden]: the final-layer state at each prompt's end-of-text token."""
        batch = self.tokenizer(  # type: ignore[operator]
            list(prompts),
            max_length=self.max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )
        device = next(self.model.parameters()).device
        out = self.model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        )
        return out.pooler_output
