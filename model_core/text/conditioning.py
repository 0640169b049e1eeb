"""What the text encoders hand to the DiT: exactly the text inputs of its forward."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TextConditioning:
    """The DiT's text inputs for a batch.

    states: [B, L, text_states_dim] LLaVA hidden states (hidden_states[-3], template cropped).
    mask:   [B, L] int64, 1 for tokens the DiT should treat as valid.
    pooled: [B, text_states_dim_2] CLIP-L pooled text embedding (feeds vector_in).
    """

    states: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def __post_init__(self) -> None:
        if self.states.ndim != 3 or tuple(self.mask.shape) != tuple(self.states.shape[:2]):
            raise ValueError(
                f"states must be [B, L, D] and mask [B, L]; got {tuple(self.states.shape)} and "
                f"{tuple(self.mask.shape)}"
            )
        b = self.states.shape[0]
        if self.pooled.ndim != 2 or self.pooled.shape[0] != b:
            raise ValueError(f"pooled must be [B={b}, D2], got {tuple(self.pooled.shape)}")

    def dit_kwargs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for the DiT forward: text_states, text_mask, text_pooled."""
        return {"text_states": self.states, "text_mask": self.mask, "text_pooled": self.pooled}

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> TextConditioning:
        """Move states and pooled to `device`/`dtype`; the mask keeps its integer dtype."""
        return TextConditioning(
            states=self.states.to(device=device, dtype=dtype),
            mask=self.mask.to(device=device),
            pooled=self.pooled.to(device=device, dtype=dtype),
        )

    @staticmethod
    def cat(items: Sequence[TextConditioning]) -> TextConditioning:
        """Stack along the batch, e.g. `cat([uncond, cond])` for the CFG batch [neg, pos]."""
        lengths = {c.states.shape[1] for c in items}
        if len(lengths) != 1:
            raise ValueError(f"cannot batch text conditionings of different lengths {sorted(lengths)}")
        return TextConditioning(
            states=torch.cat([c.states for c in items]),
            mask=torch.cat([c.mask for c in items]),
            pooled=torch.cat([c.pooled for c in items]),
        )
