"""The text token refiner (`txt_in`, the release's SingleTokenRefiner).

Unlike the main attention, the refiner reads mask *positions*: the context vector is the masked mean of the text
states, and its self-attention lets token i see token j only if both are valid, with key 0 always visible so a
padded row never becomes all-masked (a padded row attends to key 0 alone). This is text-only attention over a few
hundred tokens, replicated on every rank, so it calls SDPA directly instead of the joint attention: one 4-D call
with the boolean mask (the fused kernels take it; without padding there is no mask at all).
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from model_core.dit.layers import MLP, TextProjection, TimestepEmbedder

__all__ = ["SingleTokenRefiner", "refiner_attention_mask"]


def refiner_attention_mask(text_mask: Tensor) -> Tensor:
    """`[B, 1, L, L]` bool: query i may see key j iff both are valid; column 0 is always visible."""
    valid = text_mask.bool()
    mask = valid[:, None, :, None] & valid[:, None, None, :]
    mask[:, :, :, 0] = True
    return mask


class RefinerBlock(nn.Module):
    """Pre-norm self-attention and SiLU MLP, each gated by adaLN (gates only, no shift/scale, no q/k norm)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.self_attn_qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.self_attn_proj = nn.Linear(hidden_size, hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.mlp = MLP(hidden_size, mlp_hidden, nn.SiLU())
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, c: Tensor, attn_mask: Tensor | None) -> Tensor:
        gate_msa, gate_mlp = self.adaLN_modulation(c)[:, None, :].chunk(2, dim=-1)
        qkv = self.self_attn_qkv(self.norm1(x))
        q, k, v = rearrange(qkv, "B L (K H D) -> K B H L D", K=3, H=self.num_heads)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        x = x + gate_msa * self.self_attn_proj(rearrange(attn, "B H L D -> B L (H D)"))
        return x + gate_mlp * self.mlp(self.norm2(x))


class IndividualTokenRefiner(nn.Module):
    """A stack of `RefinerBlock`s (`blocks.N`)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_hidden: int, depth: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(RefinerBlock(hidden_size, num_heads, mlp_hidden) for _ in range(depth))

    def forward(self, x: Tensor, c: Tensor, text_mask: Tensor) -> Tensor:
        # no padding: no mask, which leaves CUDA free to pick its flash kernel (a mask rules it out)
        attn_mask = None if bool(text_mask.bool().all()) else refiner_attention_mask(text_mask)
        for block in self.blocks:
            x = block(x, c, attn_mask)
        return x


class SingleTokenRefiner(nn.Module):
    """`txt_in`: text states `[B, L, text_dim]` -> refined text tokens `[B, L, hidden]`."""

    def __init__(self, in_dim: int, hidden_size: int, num_heads: int, mlp_hidden: int, depth: int) -> None:
        super().__init__()
        self.input_embedder = nn.Linear(in_dim, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.c_embedder = TextProjection(in_dim, hidden_size)
        self.individual_token_refiner = IndividualTokenRefiner(hidden_size, num_heads, mlp_hidden, depth)

    def forward(self, text_states: Tensor, t: Tensor, text_mask: Tensor) -> Tensor:
        mask = text_mask.float()[:, :, None]
        pooled = (text_states.float() * mask).sum(dim=1) / mask.sum(dim=1)  # masked mean by position
        c = self.t_embedder(t) + self.c_embedder(pooled.to(text_states.dtype))
        x = self.input_embedder(text_states)
        return self.individual_token_refiner(x, c, text_mask)
