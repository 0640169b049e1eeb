"""Even split of a token sequence across ranks, padded at the end to a multiple of the degree."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from model_core.parallel.group import SPGroup


@dataclass(frozen=True)
class SequenceShard:
    """Where this rank's tokens sit in a sequence of `total_len` tokens split over `degree` ranks.

    The sequence is zero-padded at its end to `padded_len` (a multiple of the degree); the padding is
    masked out of attention (`total_len` is the valid length) and dropped by `gather`.
    """

    total_len: int
    degree: int
    rank: int

    @property
    def padded_len(self) -> int:
        """`total_len` rounded up to a multiple of the degree."""
        return -(-self.total_len // self.degree) * self.degree

    @property
    def local_len(self) -> int:
        """Tokens per rank (padding included); the same on every rank."""
        return self.padded_len // self.degree

    @property
    def start(self) -> int:
        """Index of this rank's first token in the padded sequence."""
        return self.rank * self.local_len

    @property
    def stop(self) -> int:
        """One past this rank's last token in the padded sequence."""
        return self.start + self.local_len

    @property
    def local_valid_len(self) -> int:
        """Tokens of this rank's shard that are not padding."""
        return max(0, min(self.stop, self.total_len) - self.start)

    def pad(self, x: Tensor, dim: int = 1) -> Tensor:
        """Zero-pad the full sequence along `dim` to `padded_len`."""
        if x.shape[dim] != self.total_len:
            raise ValueError(f"expected {self.total_len} tokens along dim {dim}, got shape {tuple(x.shape)}")
        extra = self.padded_len - self.total_len
        if extra == 0:
            return x
        dim = dim % x.ndim
        pad = [0, 0] * (x.ndim - 1 - dim) + [0, extra]
        return F.pad(x, pad)

    def shard(self, x: Tensor, dim: int = 1) -> Tensor:
        """This rank's slice of the full sequence `x` (padded first)."""
        return self.pad(x, dim).narrow(dim, self.start, self.local_len).contiguous()

    def gather(self, x: Tensor, sp: SPGroup, dim: int = 1) -> Tensor:
        """All ranks' shards concatenated along `dim`, padding removed: the full sequence on every rank."""
        if x.shape[dim] != self.local_len:
            raise ValueError(
                f"expected a shard of {self.local_len} tokens along dim {dim}, got {tuple(x.shape)}"
            )
        if not sp.enabled:
            return x.narrow(dim, 0, self.total_len)
        parts = [torch.empty_like(x) for _ in range(sp.degree)]
        dist.all_gather(parts, x.contiguous(), group=sp.group)
        return torch.cat(parts, dim=dim).narrow(dim, 0, self.total_len)

    @classmethod
    def for_group(cls, total_len: int, sp: SPGroup) -> SequenceShard:
        """This rank's shard of a `total_len`-token sequence split over `sp`."""
        return cls(total_len=total_len, degree=sp.degree, rank=sp.rank)
