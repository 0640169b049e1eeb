"""Ulysses all-to-all: trade a sequence shard with all heads for the full sequence with a slice of the heads.

Layout everywhere: [B, L, H, D].
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from einops import rearrange
from torch import Tensor

from model_core.parallel.group import SPGroup


def seq_to_heads(x: Tensor, sp: SPGroup) -> Tensor:
    """[B, L/P, H, D] on each rank -> [B, L, H/P, D]: the full sequence, this rank's head slice."""
    if not sp.enabled:
        return x
    sp.check_heads(x.shape[2])
    # [P(head groups), B, L/P, H/P, D]: chunk j goes to rank j
    send = rearrange(x, "B L (P h) D -> P B L h D", P=sp.degree).contiguous()
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=sp.group)
    # chunk j now holds sequence shard j of my head slice
    return rearrange(recv, "P B L h D -> B (P L) h D")


def heads_to_seq(x: Tensor, sp: SPGroup) -> Tensor:
    """[B, L, H/P, D] on each rank -> [B, L/P, H, D]: this rank's sequence shard, all heads."""
    if not sp.enabled:
        return x
    if x.shape[1] % sp.degree != 0:
        raise ValueError(f"sequence length {x.shape[1]} is not a multiple of the SP degree {sp.degree}")
    send = rearrange(x, "B (P L) h D -> P B L h D", P=sp.degree).contiguous()
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=sp.group)
    # chunk j now holds head group j of my sequence shard
    return rearrange(recv, "P B L h D -> B L (P h) D")


def slice_heads(x: Tensor, sp: SPGroup) -> Tensor:
    """This rank's head slice of a replicated [B, L, H, D] tensor (text tokens)."""
    if not sp.enabled:
        return x
    sp.check_heads(x.shape[2])
    h = x.shape[2] // sp.degree
    return x[:, :, sp.rank * h : (sp.rank + 1) * h]


def gather_heads(x: Tensor, sp: SPGroup) -> Tensor:
    """Inverse of `slice_heads`: [B, L, H/P, D] -> [B, L, H, D] on every rank."""
    if not sp.enabled:
        return x
    parts = [torch.empty_like(x) for _ in range(sp.degree)]
    dist.all_gather(parts, x.contiguous(), group=sp.group)
    return torch.cat(parts, dim=2)
